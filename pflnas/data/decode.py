"""Decoding one image file's bytes into a C×H×W uint8 tensor of a data set's shape."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pflnas.data.specs import DatasetSpec
from pflnas.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File endings taken as images (torchvision's ImageFolder list); other files in a tree are ignored."""


def is_image_file(filename: str) -> bool:
    """Whether a file name is an image to load (hidden files such as macOS ``._x.jpg`` are not)."""
    return not filename.startswith(".") and filename.lower().endswith(IMAGE_EXTENSIONS)


def _check_size(size: tuple[int, int], spec: DatasetSpec, where: str) -> None:
    width, height = size
    if (height, width) != (spec.image_size, spec.image_size):
        raise DataError(
            f"{where}: image is {width}x{height} but {spec.name} needs {spec.image_size}x{spec.image_size}; "
            f"point --data-dir/PFLNAS_DATA at {spec.name} data"
        )


def decode_image_bytes(data: bytes, spec: DatasetSpec, where: str) -> torch.Tensor:
    """Decode ``data`` with PIL, converted to ``spec.pil_mode`` ("RGB" or "L"), to a uint8 tensor of shape
    spec.channels × spec.image_size × spec.image_size.

    An unreadable file, or one of another size, raises :class:`DataError` naming ``where``. (torchvision's
    own decoders are about twice as fast but deprecated since torchvision 0.29; decoding happens once per
    source anyway, see :mod:`pflnas.data.cache`.)
    """
    try:
        with warnings.catch_warnings():  # PIL's bomb warning: the size check below refuses it in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                _check_size(img.size, spec, where)  # from the header, before a single pixel is decoded
                array = np.asarray(img.convert(spec.pil_mode))
    except UnidentifiedImageError:
        raise DataError(
            f"cannot read image {where} (not an image format PIL knows, or damaged); "
            "replace or delete the file"
        ) from None
    except Image.DecompressionBombError as exc:
        size = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(size.group(1)) / 1e6:.0f} megapixels" if size else "far too many pixels"
        raise DataError(f"image {where} has {pixels}, refused before decoding; replace it") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {where} ({exc}); replace or delete the file") from None
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
