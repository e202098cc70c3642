"""``BatchLoader``: batches of an in-memory uint8 data set, augmented and normalized on the device."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pflnas.data.augment import crop_flip, cutout_squares
from pflnas.errors import ConfigError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose stream depends only on ``(seed, epoch)`` (mixed by numpy's SeedSequence)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def shard_positions(n: int, rank: int, world_size: int, drop_last: bool, even: bool = True) -> torch.Tensor:
    """Positions of an ``n``-long epoch order that ``rank`` takes (``DistributedSampler``'s rule).

    The order is cut to a multiple of ``world_size`` when ``drop_last``, else (when ``even``) padded by
    wrapping around to its start; rank r then takes every ``world_size``-th position from r. With
    ``drop_last=False, even=False`` nothing is padded: the shards are disjoint and may differ by one.
    """
    if drop_last:
        positions = torch.arange(n // world_size * world_size)
    elif even and n % world_size:
        positions = torch.arange(math.ceil(n / world_size) * world_size) % n
    else:
        positions = torch.arange(n)
    return positions[rank::world_size]


@dataclass(frozen=True)
class EpochDraws:
    """One epoch's random draws for one rank, one row per sample in the order the rank yields them:
    ``order`` sample indices, ``offsets`` S×2 crop offsets, ``flips`` S booleans, ``centres`` S×2 cutout
    centres (row, column); draws that are switched off are zeros."""

    order: torch.Tensor
    offsets: torch.Tensor
    flips: torch.Tensor
    centres: torch.Tensor


class BatchLoader:
    """Iterate over ``(x, y)`` batches of ``images[indices]`` / ``labels[indices]``.

    ``images`` is a uint8 N×C×H×W tensor (CPU or already on ``device``), ``labels`` int64 of length N;
    ``indices`` selects the samples (all when None). Each pass yields ``x`` in torch's default dtype
    (float32) normalized as ``(pixel / 255 - mean) / std`` on ``device`` (channels_last if asked) and
    ``y`` int64 on ``device``.

    Contract: the sample order and the augmentation of a pass depend only on ``(seed, epoch)``, never on
    the global RNG, so a run resumed at epoch e reproduces it exactly. The epoch is set with
    :meth:`set_epoch` (as with ``DistributedSampler``); two passes without it are identical. All random
    draws happen on the CPU, so they are the same on every device. With ``augment``, each image is
    cropped back to H×W from a copy zero-padded by ``pad`` pixels and (with ``flip``) mirrored with
    probability 0.5, on the device, for the whole batch at once; with ``cutout`` > 0 one ``cutout``-sided
    square (clipped at the borders) of each normalized image is then zeroed (DARTS' Cutout).

    Sharding (``rank`` of ``world_size`` processes) follows ``DistributedSampler``: every rank draws the
    same epoch order, cut to a multiple of ``world_size`` when ``drop_last``, else padded by wrapping
    around to its start (or, with ``even_shards=False``, left uneven so no sample is seen twice: for
    evaluation whose sums are all-reduced), and rank r takes positions ``r::world_size``. The augmentation
    draws belong to positions of that global order and are sharded with it, so a sample gets the same
    crop, flip and hole whatever ``world_size``: step k of ``world_size`` ranks with ``batch_size`` b sees
    the samples step k of one process with batch ``world_size * b`` sees. ``batch_size`` is per process;
    ``len()`` is this rank's number of batches.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | None,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        pad: int = 4,
        flip: bool = True,
        cutout: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool = True,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 N×C×H×W tensor, got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values each, got {len(mean)} and {len(std)}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        if pad < 0 or seed < 0 or cutout < 0:
            raise ConfigError(
                f"pad, seed and cutout must be >= 0, got pad={pad}, seed={seed}, cutout={cutout}"
            )
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in 0..world_size-1, got rank={rank}, world_size={world_size}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.indices = torch.arange(images.shape[0]) if indices is None else indices.to(torch.int64).cpu()
        self.batch_size = batch_size
        self.augment, self.shuffle, self.drop_last = augment, shuffle, drop_last
        self.seed = seed
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.pad, self.flip, self.cutout = pad, flip, cutout
        self.rank, self.world_size = rank, world_size
        self._positions = shard_positions(len(self.indices), rank, world_size, drop_last, even_shards)
        shape = (1, channels, 1, 1)
        dtype = torch.get_default_dtype()  # float32, or float64 where a test asks for it
        self._mean = torch.tensor(mean, dtype=dtype, device=self.device).view(shape)
        self._std = torch.tensor(std, dtype=dtype, device=self.device).view(shape)
        self._pin = self.device.type == "cuda" and images.device.type == "cpu"
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next passes use."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Samples in one epoch over all ranks (``len(indices)``)."""
        return len(self.indices)

    @property
    def shard_size(self) -> int:
        """Samples this rank yields per epoch (before ``drop_last`` drops a partial batch)."""
        return len(self._positions)

    def __len__(self) -> int:
        n, bs = self.shard_size, self.batch_size
        return n // bs if self.drop_last else math.ceil(n / bs)

    def epoch_draws(self) -> EpochDraws:
        """This epoch's draws for this rank's shard, in the order its samples are yielded.

        The generator draws, in this order, the permutation (when shuffling), the crop offsets and flips
        (when augmenting) and the cutout centres (when ``cutout``), each for every position of the global
        epoch order; the shard then picks its positions from all of them.
        """
        generator = epoch_generator(self.seed, self.epoch)
        n = self.num_samples
        order = self.indices[torch.randperm(n, generator=generator)] if self.shuffle else self.indices
        offsets = torch.zeros(n, 2, dtype=torch.int64)
        flips = torch.zeros(n, dtype=torch.bool)
        centres = torch.zeros(n, 2, dtype=torch.int64)
        if self.augment:
            offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator)
            if self.flip:
                flips = torch.rand(n, generator=generator) < 0.5
        if self.cutout:
            h, w = self.images.shape[2:]
            cy = torch.randint(0, h, (n,), generator=generator)
            centres = torch.stack([cy, torch.randint(0, w, (n,), generator=generator)], dim=1)
        p = self._positions
        return EpochDraws(order[p], offsets[p], flips[p], centres[p])

    def draws(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This epoch's (order, crop offsets, flip mask) for this rank's samples, in yielding order.

        Order is a permutation of ``indices`` (unchanged when not shuffling; sharded and padded as the class
        docstring says); offsets are (oy, ox) in ``0..2*pad`` and flips booleans, both zero when not
        augmenting.
        """
        d = self.epoch_draws()
        return d.order, d.offsets, d.flips

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        d = self.epoch_draws()
        # one copy per epoch of the draws, not one per batch
        order = d.order.to(self.images.device)
        offsets, flips, centres = (t.to(self.device) for t in (d.offsets, d.flips, d.centres))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = slice(start, start + len(idx))
            # index_select: several times faster than advanced indexing on CPU
            x = self._to_device(self.images.index_select(0, idx))
            y = self._to_device(self.labels.index_select(0, idx.to(self.labels.device)))
            if self.augment:
                x = crop_flip(x, offsets[batch], flips[batch], self.pad)
            x = x.to(self._mean.dtype).div_(255).sub_(self._mean).div_(self._std)
            if self.cutout:
                x = cutout_squares(x, centres[batch], self.cutout)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if t.device == self.device:
            return t
        if self._pin:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=self._pin)
