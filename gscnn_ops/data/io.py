"""Reading images and label maps from disk into tensors, and writing PNGs, with Pillow.

Everything the datasets read goes through here so that every failure says which file it was:
a missing path raises :class:`FileNotFoundError` naming it, and a file Pillow cannot decode
(garbage, truncated, a decompression bomb, ...) raises :class:`DataError` naming it with
Pillow's reason. Decoding is forced inside the guarded block (``img.load()``), because Pillow
opens lazily and a truncated file would otherwise only fail later, far from its name.

Images come back as uint8 (3, H, W) RGB and labels as int64 (H, W), the conventions of every
dataset in :mod:`gscnn_ops.data`. EXIF orientation is deliberately *not* applied: masks are
drawn on the stored pixel grid, and rotating only the image would misalign the pair.
"""

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .errors import DataError

PathLike = Union[str, os.PathLike]

# Single-channel modes whose pixel values are class indices. "P" is included because indexed
# PNGs are the usual way to store masks with a colour table: the indices are the labels and the
# colours only help viewers. 16/32-bit modes hold indices above 255 (e.g. Cityscapes' instance
# ids) and are read as they are, so that range checks downstream can name the bad values.
_LABEL_MODES_8BIT = ("L", "P")
_LABEL_MODES_WIDE = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def _decode(path: PathLike, func: str, convert):
    """Open ``path``, fully decode it and return ``convert(img)``; every failure names the path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{func}: no such file '{path}'")
    if not path.is_file():
        raise DataError(f"{func}: '{path}' is not a file")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated data must fail here, with the path at hand
            return convert(img)
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise DataError(f"{func}: '{path}' is too large to decode safely: {e}") from e
    except MemoryError:
        raise
    except Exception as e:  # UnidentifiedImageError, OSError (truncated), SyntaxError (bad PNG)...
        raise DataError(
            f"{func}: cannot decode '{path}' as an image ({type(e).__name__}: {e})"
        ) from e


def read_image(path: PathLike) -> Tensor:
    """An image file as uint8 (3, H, W) RGB: grayscale is expanded to three channels, an alpha
    channel is dropped and palette images are converted to their colours.

    Examples:
        >>> import os, tempfile, torch
        >>> from gscnn_ops.data import read_image, write_png
        >>> path = os.path.join(tempfile.mkdtemp(), "x.png")
        >>> write_png(path, torch.full((3, 4, 5), 7, dtype=torch.uint8))
        >>> image = read_image(path)
        >>> image.shape, image.dtype, int(image[0, 0, 0])
        (torch.Size([3, 4, 5]), torch.uint8, 7)
    """

    def convert(img: Image.Image) -> Tensor:
        if img.mode in _LABEL_MODES_WIDE or img.mode == "F":
            # Pillow would clip (not scale) these to 8 bits: refuse rather than guess a scaling.
            raise DataError(
                f"read_image: '{path}' has {img.mode!r} pixels (16/32-bit); "
                f"expected an 8-bit image, convert it to 8-bit RGB first"
            )
        rgb = np.asarray(img.convert("RGB"))  # (H, W, 3); RGBA/LA drop alpha, P maps colours
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()

    return _decode(path, "read_image", convert)


def read_label(path: PathLike) -> Tensor:
    """A single-channel label map as int64 (H, W) of its stored values.

    Modes L, P (the palette *indices*, not their colours), I and I;16 are read as they are;
    mode 1 (bilevel) reads as 0/1. Colour masks (RGB, RGBA, ...) are refused: a label map must
    hold class indices, and guessing a colour -> class table would silently mislabel pixels.

    Examples:
        >>> import os, tempfile, torch
        >>> from gscnn_ops.data import read_label, write_png
        >>> path = os.path.join(tempfile.mkdtemp(), "mask.png")
        >>> write_png(path, torch.tensor([[0, 1], [255, 2]], dtype=torch.uint8))
        >>> read_label(path)
        tensor([[  0,   1],
                [255,   2]])
    """

    def convert(img: Image.Image) -> Tensor:
        if img.mode in _LABEL_MODES_8BIT:
            values = np.asarray(img)
        elif img.mode == "1":
            values = np.asarray(img).astype(np.uint8)  # bool -> 0/1, the natural class indices
        elif img.mode in _LABEL_MODES_WIDE:
            values = np.asarray(img.convert("I") if img.mode != "I" else img)
        else:
            raise DataError(
                f"read_label: '{path}' is a {img.mode!r} image with {len(img.getbands())} "
                f"channel(s); label maps must be single-channel (mode L or P, or 16-bit) and hold "
                f"class indices, not colours: map each colour to its class index and save the "
                f"result as a grayscale or palette PNG"
            )
        return torch.from_numpy(values.astype(np.int64))

    return _decode(path, "read_label", convert)


def write_png(
    path: PathLike, tensor: Tensor, palette: Optional[Sequence[Sequence[int]]] = None
) -> None:
    """Write a uint8 (H, W) (grayscale, or palette-indexed when ``palette`` gives RGB colours)
    or uint8 (3, H, W) RGB tensor as a PNG at ``path``, creating its parent folders.

    Examples:
        >>> import os, tempfile, torch
        >>> from gscnn_ops.data import write_png
        >>> path = os.path.join(tempfile.mkdtemp(), "seg", "labels.png")  # folders are created
        >>> write_png(path, torch.zeros(4, 4, dtype=torch.uint8), palette=[[0, 0, 0]])
        >>> os.path.isfile(path)
        True
    """
    if not isinstance(tensor, Tensor) or tensor.dtype != torch.uint8:
        got = tensor.dtype if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ValueError(
            f"write_png: tensor must be a uint8 tensor, got {got} "
            f"(convert label maps with .to(torch.uint8) after checking values < 256)"
        )
    if tensor.dim() == 3 and tensor.shape[0] == 3 and palette is None:
        img = Image.fromarray(tensor.detach().cpu().permute(1, 2, 0).contiguous().numpy())
    elif tensor.dim() == 2:
        values = tensor.detach().cpu().contiguous().numpy()
        if palette is None:
            img = Image.fromarray(values)  # uint8 (H, W) -> mode L
        else:
            if len(palette) > 256 or any(len(c) != 3 for c in palette):
                raise ValueError(
                    f"write_png: palette must hold at most 256 RGB triples, got "
                    f"{len(palette)} entries"
                )
            # Mode P stores the values themselves as indices; the palette only colours them.
            img = Image.frombytes("P", (values.shape[1], values.shape[0]), values.tobytes())
            img.putpalette([int(v) for c in palette for v in c])
    else:
        raise ValueError(
            f"write_png: tensor must be (H, W) or (3, H, W) (palette only with "
            f"(H, W)), got shape {tuple(tensor.shape)}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
