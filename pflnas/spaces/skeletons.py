"""The macro skeletons of block-level spaces: typed, validated views of a space's ``skeleton`` mapping.

A block space (``resnet_block``, ``vit_block``, ``pit_block``) is a fixed network in which every block
chooses one operation for its spatial (ResNet) or token-mixing (ViT, PiT) slot. The skeleton fixes
everything else. Its fields describe the ImageNet network of the paper; for small inputs (CIFAR,
under 64 pixels) the stem adapts as documented on each class, so the same space searches on CIFAR-10.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pflnas.errors import ConfigError

SMALL_INPUT = 64  # inputs smaller than this (CIFAR, Fashion-MNIST) use the small-input stem


@dataclass(frozen=True)
class BlockSite:
    """One searchable block: global ``index``, ``stage``, ``stride`` of its spatial op, and ``type``
    (``reduce`` when it downsamples, else ``normal``)."""

    index: int
    stage: int
    stride: int

    @property
    def type(self) -> str:
        return "reduce" if self.stride == 2 else "normal"

    @property
    def name(self) -> str:
        return f"block{self.index}"


@dataclass(frozen=True)
class OpSite:
    """Where a candidate op runs in a network: its context, channels, input grid and stride."""

    stage: int
    stride: int
    channels: int
    height: int
    width: int
    heads: int = 1
    blocks: int = 1  # how many blocks of the network run the op at this site


def _positive_ints(name: str, values: tuple[int, ...]) -> None:
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ConfigError(
            f"skeleton.{name} must be a non-empty list of positive integers, got {list(values)}"
        )


@dataclass(frozen=True)
class ResNetSkeleton:
    """ResNet v1.5 with bottlenecks (torchvision / the paper's ``resnet_pf.py``).

    ImageNet stem: 7x7 stride-2 conv-BN-ReLU (``stem_width`` channels) and a 3x3 stride-2 max-pool. Small
    inputs: a 3x3 stride-1 conv-BN-ReLU and no max-pool (the usual CIFAR adaptation). Stage ``s`` has
    ``depths[s]`` bottlenecks of width ``int(widths[s] * width_mult)`` and output ``expansion`` times that;
    the first block of every stage but the first has stride 2; shortcuts with a shape change are strided
    1x1 conv-BN projections.
    """

    depths: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    expansion: int = 4
    width_mult: float = 1.0
    stem_width: int = 64

    def __post_init__(self) -> None:
        _positive_ints("depths", self.depths)
        _positive_ints("widths", self.widths)
        _positive_ints("expansion", (self.expansion,))
        _positive_ints("stem_width", (self.stem_width,))
        if len(self.depths) != len(self.widths):
            raise ConfigError("skeleton.depths and skeleton.widths must have the same length")
        if not self.width_mult > 0:
            raise ConfigError(f"skeleton.width_mult must be positive, got {self.width_mult}")
        if min(self.stage_widths()) < 1:
            raise ConfigError(f"skeleton.width_mult {self.width_mult} leaves a stage with no channels")

    def stage_widths(self) -> list[int]:
        return [int(w * self.width_mult) for w in self.widths]

    def first_width(self) -> int:
        return self.stage_widths()[0]

    def sites(self) -> list[BlockSite]:
        out = []
        for stage, depth in enumerate(self.depths):
            for j in range(depth):
                out.append(BlockSite(len(out), stage, 2 if stage > 0 and j == 0 else 1))
        return out

    def op_sites(self, image_size: int) -> list[OpSite]:
        size = image_size if image_size < SMALL_INPUT else math.ceil(math.ceil(image_size / 2) / 2)
        out = []
        for stage, (width, depth) in enumerate(zip(self.stage_widths(), self.depths)):
            if stage > 0:
                out.append(OpSite(stage, 2, width, size, size))
                size = math.ceil(size / 2)
                depth -= 1
            out.append(OpSite(stage, 1, width, size, size, blocks=depth))
        return out


@dataclass(frozen=True)
class ViTSkeleton:
    """A plain vision transformer without class token (the paper's ``vit_pf.py``).

    Patch embedding: a ``patch_size`` conv (``small_patch_size`` for small inputs); a learned positional
    embedding per grid position; ``depth`` pre-norm blocks (LayerNorm eps 1e-6) of ``dim`` with ``heads``
    attention heads and an MLP of ``mlp_ratio * dim``; final LayerNorm, average over tokens, linear head.
    """

    patch_size: int = 16
    small_patch_size: int = 4
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        for key in ("patch_size", "small_patch_size", "dim", "depth", "heads"):
            _positive_ints(key, (getattr(self, key),))
        if self.dim % self.heads:
            raise ConfigError(f"skeleton.dim {self.dim} is not divisible by skeleton.heads {self.heads}")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"skeleton.mlp_ratio must be positive, got {self.mlp_ratio}")

    def patch(self, image_size: int) -> int:
        return self.small_patch_size if image_size < SMALL_INPUT else self.patch_size

    def grid(self, image_size: int) -> int:
        p = self.patch(image_size)
        if image_size < p:
            raise ConfigError(f"image size {image_size} is smaller than the patch size {p}")
        return image_size // p

    def first_width(self) -> int:
        return self.dim

    def sites(self) -> list[BlockSite]:
        return [BlockSite(i, 0, 1) for i in range(self.depth)]

    def op_sites(self, image_size: int) -> list[OpSite]:
        g = self.grid(image_size)
        return [OpSite(0, 1, self.dim, g, g, self.heads, blocks=self.depth)]


@dataclass(frozen=True)
class PiTSkeleton:
    """A pooling-based vision transformer without class token (the paper's ``pit_pf.py``).

    Patch embedding: a ``patch_size`` conv with stride ``patch_stride`` (small inputs:
    ``small_patch_size`` / ``small_patch_stride``) to ``base_dim * heads[0]`` channels, a learned
    positional map; stage ``s`` has ``depths[s]`` blocks of dim ``base_dim * heads[s]``; between stages a
    3x3 stride-2 depthwise-grouped conv doubles the dim and halves the grid; final LayerNorm, average,
    linear head.
    """

    patch_size: int = 16
    patch_stride: int = 8
    small_patch_size: int = 4
    small_patch_stride: int = 2
    base_dim: int = 48
    depths: tuple[int, ...] = (2, 6, 4)
    heads: tuple[int, ...] = (3, 6, 12)
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        for key in ("patch_size", "patch_stride", "small_patch_size", "small_patch_stride", "base_dim"):
            _positive_ints(key, (getattr(self, key),))
        _positive_ints("depths", self.depths)
        _positive_ints("heads", self.heads)
        if len(self.depths) != len(self.heads):
            raise ConfigError("skeleton.depths and skeleton.heads must have the same length")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"skeleton.mlp_ratio must be positive, got {self.mlp_ratio}")

    def patch(self, image_size: int) -> tuple[int, int]:
        if image_size < SMALL_INPUT:
            return self.small_patch_size, self.small_patch_stride
        return self.patch_size, self.patch_stride

    def grid(self, image_size: int) -> int:
        p, s = self.patch(image_size)
        if image_size < p:
            raise ConfigError(f"image size {image_size} is smaller than the patch size {p}")
        return (image_size - p) // s + 1

    def dims(self) -> list[int]:
        return [self.base_dim * h for h in self.heads]

    def first_width(self) -> int:
        return self.dims()[0]

    def sites(self) -> list[BlockSite]:
        out = []
        for stage, depth in enumerate(self.depths):
            out += [BlockSite(len(out) + j, stage, 1) for j in range(depth)]
        return out

    def op_sites(self, image_size: int) -> list[OpSite]:
        g = self.grid(image_size)
        out = []
        for stage, (dim, heads, depth) in enumerate(zip(self.dims(), self.heads, self.depths)):
            if stage > 0:
                g = (g - 1) // 2 + 1
            out.append(OpSite(stage, 1, dim, g, g, heads, blocks=depth))
        return out


Skeleton = ResNetSkeleton | ViTSkeleton | PiTSkeleton


def parse_skeleton(cls: type[Any], kind: str, raw: Mapping[str, Any], where: str) -> Skeleton:
    """The ``cls`` skeleton of a ``kind`` space; unknown keys and wrong types raise one-line ConfigErrors."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: 'skeleton' must be a mapping of {kind} settings")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown skeleton key(s) {unknown}; {kind} keys: {', '.join(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        tp = hints[key]
        if typing.get_origin(tp) is tuple:
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where}: skeleton.{key} must be a list, got {value!r}")
            value = tuple(value)
        elif tp is float:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"{where}: skeleton.{key} must be a finite number, got {value!r}")
            value = float(value)
        elif tp is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{where}: skeleton.{key} must be an integer, got {value!r}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except OverflowError:  # e.g. widths * width_mult beyond any integer
        raise ConfigError(f"{where}: skeleton values {dict(raw)} are far too large") from None
