"""Reading one image file of a data set: 8-bit RGB, or one line that names the file and the fix.

torchvision's ``ImageFolder`` loader raises whatever PIL raises for a broken, truncated or
non-image file deep inside a data-loader worker, and its message does not say which file it was.
:func:`load_image` is the loader of every ImageFolder-based datamodule (ImageNet, ``ImageFolder``,
custom ones): a file it cannot read raises :class:`UnreadableImageError` with one line naming the
file and saying to remove or replace it; an image larger than PIL's decompression-bomb limit
(twice ``PIL.Image.MAX_IMAGE_PIXELS``, as PIL counts) is named with its size. 16-bit grey
images are scaled to 8 bits (PIL's own conversion would clip them to white).
"""

from __future__ import annotations

import os
import re
from typing import Any

from PIL import Image, UnidentifiedImageError

from bcos.errors import DataNotFoundError

__all__ = ["UnreadableImageError", "as_rgb", "load_image"]

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


class UnreadableImageError(DataNotFoundError):
    """An image file of a data set that cannot be read (broken, truncated, not an image, too large)."""


def as_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB; 16-bit grey images are scaled down (PIL's convert would clip them to white)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        import numpy as np

        values = np.asarray(image, dtype=np.float64)
        if image.mode != "I" or values.max(initial=0) > 255:
            values = values / 257.0  # 65535 -> 255
        return Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    return image.convert("RGB")


def _reason(error: BaseException) -> str:
    if isinstance(error, UnidentifiedImageError):
        return "not an image file PIL can read"
    if isinstance(error, FileNotFoundError):
        return "the file is gone (deleted while the data set was in use?)"
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "truncated" in text:
        return "the file is truncated (an interrupted download or copy?)"
    return f"{type(error).__name__}: {text}"


def _named(path: str | os.PathLike) -> str:
    # a data split made of links (bcos train --finetune): the file to remove is the link's target
    real = os.path.realpath(path)
    return f"'{path}'" if real == os.path.abspath(path) else f"'{path}' (a link to '{real}')"


def load_image(path: str | os.PathLike) -> Any:
    """The image at ``path`` as 8-bit RGB (a ``PIL.Image``); raises :class:`UnreadableImageError`."""
    try:
        with Image.open(path) as image:
            return as_rgb(image)
    except Image.DecompressionBombError as error:
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise UnreadableImageError(
            f"the image {_named(path)} has {size}, more than PIL's decompression-bomb limit of "
            f"{2 * Image.MAX_IMAGE_PIXELS:,} (twice PIL.Image.MAX_IMAGE_PIXELS); remove the file or "
            "replace it with a downscaled copy"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL raises all three for damaged files
        raise UnreadableImageError(
            f"cannot read the image {_named(path)}: {_reason(error)}; remove the file or replace it with a good copy"
        ) from None
