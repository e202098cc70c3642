"""The DARTS search split: one part of the training set trains weights, the other the architecture."""

from __future__ import annotations

import torch

from pflnas.errors import ConfigError


def search_split(
    num_train: int, portion: float = 0.5, subset: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split training indices ``0..num_train-1`` into (weight indices, architecture indices).

    A permutation drawn from a ``torch.Generator`` seeded with ``seed`` is cut to its first ``subset``
    indices (all when None); the first ``floor(portion * n)`` go to weight training, the rest to the
    architecture step. Both parts are non-empty, disjoint int64 tensors, and the same arguments give the
    same split on every machine, whatever the global RNG state. Bad arguments raise :class:`ConfigError`.
    """
    if num_train < 2:
        raise ConfigError(f"search split needs at least 2 training images, got {num_train}")
    if not 0.0 < portion < 1.0:
        raise ConfigError(f"data portion must be strictly between 0 and 1, got {portion}")
    if subset is not None and not 2 <= subset <= num_train:
        raise ConfigError(
            f"data subset must be between 2 and {num_train} (the training set size), got {subset}"
        )
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_train, generator=generator)
    if subset is not None:
        order = order[:subset]
    cut = int(portion * len(order))
    if not 0 < cut < len(order):
        raise ConfigError(
            f"data portion {portion} of {len(order)} images leaves one side of the search split empty; "
            "use a larger subset or a portion nearer 0.5"
        )
    return order[:cut].clone(), order[cut:].clone()
