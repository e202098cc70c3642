"""Batched, exact augmentation on the device: zero-padded random crop, horizontal flip and cutout."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop each image of a B×C×H×W batch at ``offsets`` from its zero-padded copy, then mirror it.

    Image ``b`` becomes ``padded[b, :, oy:oy+H, ox:ox+W]`` with ``(oy, ox) = offsets[b]`` (each in
    ``0..2*pad``), where ``padded`` is the image with ``pad`` zero pixels on every side (torchvision's
    ``RandomCrop(H, padding=pad)``), flipped left-right where ``flips[b]`` is true. One gather for the whole
    batch, no loop over images; dtype and device are kept.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    width = w + 2 * pad
    cols = torch.arange(w, device=images.device)
    cols = torch.where(flips.view(b, 1), (w - 1 - cols).view(1, w), cols.view(1, w))  # B×W, mirrored if flip
    rows = offsets[:, 0:1] + torch.arange(h, device=images.device)  # B×H
    cols = offsets[:, 1:2] + cols
    flat = (rows.view(b, h, 1) * width + cols.view(b, 1, w)).view(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(padded.reshape(b, c, -1), 2, flat).view(b, c, h, w)


def cutout_squares(x: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """Zero one ``size``×``size`` square of each image of a B×C×H×W batch, in place (DARTS' Cutout).

    Image ``b``'s hole covers rows ``cy - size//2 .. cy - size//2 + size - 1`` and the same for columns,
    with ``(cy, cx) = centres[b]`` (each in ``0..H-1`` / ``0..W-1``), clipped at the borders, on every
    channel. DARTS applies it to the normalized tensor, so the hole takes the mean colour (0 after
    normalization), not black. Vectorized: one mask for the whole batch.
    """
    b, _, h, w = x.shape
    start = centres - size // 2  # B×2
    rows = torch.arange(h, device=x.device).view(1, h) - start[:, 0:1]
    cols = torch.arange(w, device=x.device).view(1, w) - start[:, 1:2]
    in_rows = (rows >= 0) & (rows < size)
    in_cols = (cols >= 0) & (cols < size)
    hole = in_rows.view(b, 1, h, 1) & in_cols.view(b, 1, 1, w)
    return x.masked_fill_(hole, 0.0)
