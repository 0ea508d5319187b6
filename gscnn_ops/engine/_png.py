"""Minimal private image I/O with Pillow for the engine, behind the exact names and signatures of
``gscnn_ops.data.io`` (``read_image``, ``write_png``), which another branch adds: at the merge
this file is replaced by an import from there."""

import os

import numpy as np
import torch
from torch import Tensor


def read_image(path) -> Tensor:
    """The image file at ``path`` as RGB uint8 (3, H, W) (grayscale, palette and RGBA images are
    converted to RGB). A missing file raises FileNotFoundError, an unreadable one ValueError,
    both naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist")
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"image {path!r} could not be read: {e}") from e
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def write_png(path, image: Tensor) -> None:
    """Writes uint8 ``image``, (H, W) grayscale or (3, H, W) RGB, to ``path`` as PNG."""
    from PIL import Image

    if not isinstance(image, Tensor) or image.dtype != torch.uint8 or not (
            image.dim() == 2 or (image.dim() == 3 and image.shape[0] == 3)):
        desc = (f"{image.dtype} {tuple(image.shape)}" if isinstance(image, Tensor)
                else type(image).__name__)
        raise ValueError(f"write_png({os.fspath(path)!r}): need a uint8 (H, W) or (3, H, W) "
                         f"tensor, got {desc}")
    array = image.detach().cpu()
    array = array.numpy() if array.dim() == 2 else array.permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(array).save(os.fspath(path), format="PNG")
