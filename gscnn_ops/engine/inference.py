"""Inference over whole images or sliding windows, the one forward path of evaluation and
prediction.

Why windows: the release evaluated Cityscapes at 1024x2048 in one forward pass, and its users
ran out of memory on 16 GB GPUs (the shape stream runs at full resolution). With ``tile`` set,
:func:`infer` runs the model on windows of that size and averages the logits where windows
overlap, so only one window's activations are alive at a time; the stitched logits live in
float32 buffers on the model's device (K + 1 (+ 3) maps of the image size, small next to the
activations).

Windows do not see the whole image, so tiled results differ a little from whole-image ones
(notably through ASPP's image-pooling branch); overlap reduces the seams.
"""

import contextlib
import math
from numbers import Integral, Real
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.gscnn import GSCNNOutput
from ..models.release import release_canny

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

TileArg = Union[None, int, Sequence[int]]


def tile_size(tile: TileArg) -> Optional[Tuple[int, int]]:
    """``tile`` as (height, width): None stays None, an int n is (n, n)."""
    if tile is None:
        return None
    if isinstance(tile, Integral) and not isinstance(tile, bool):
        tile = (tile, tile)
    try:
        th, tw = (int(t) for t in tile)
    except (TypeError, ValueError):
        raise ValueError(f"infer: tile must be None, an int or (height, width), got {tile!r}")
    if th < 1 or tw < 1:
        raise ValueError(f"infer: tile sizes must be positive, got {tile!r}")
    return th, tw


def window_starts(length: int, tile: int, overlap: float) -> List[int]:
    """Start offsets of windows of size ``tile`` covering ``[0, length)`` along one axis.

    Consecutive windows overlap by at least ``overlap`` of the tile (stride
    ``ceil(tile * (1 - overlap))``); the last window is flush with the end, so no window pads
    the image. A length not larger than the tile gives the single window [0] (the caller then
    runs the whole extent).
    """
    if length <= tile:
        return [0]
    stride = max(1, math.ceil(tile * (1.0 - overlap)))
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _check(model, image: Tensor, canny: Optional[Tensor], overlap, amp_dtype):
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"infer: image must be a normalised (N, 3, H, W) tensor, got {shape}")
    if canny is not None and (
        not isinstance(canny, Tensor)
        or canny.dim() != 4
        or canny.shape[0] != image.shape[0]
        or canny.shape[1] != 1
        or canny.shape[-2:] != image.shape[-2:]
    ):
        shape = tuple(canny.shape) if isinstance(canny, Tensor) else type(canny).__name__
        raise ValueError(
            f"infer: canny must be (N, 1, H, W) = ({image.shape[0]}, 1, "
            f"{image.shape[2]}, {image.shape[3]}), got {shape}"
        )
    if isinstance(overlap, bool) or not isinstance(overlap, Real) or not 0 <= overlap < 1:
        raise ValueError(f"infer: overlap must be a fraction in [0, 1), got {overlap!r}")
    if amp_dtype not in (None, torch.bfloat16, torch.float16):
        raise ValueError(
            f"infer: amp_dtype must be torch.bfloat16, torch.float16 or None, got {amp_dtype!r}"
        )


def _forward(model, image: Tensor, canny: Optional[Tensor], amp_dtype, return_alphas: bool):
    """One forward pass; logits in float32, alphas resized to the window size. A model with the
    release's head gets the Canny map its checkpoints were trained with, that of the normalised
    tensor it sees (so of each window), in place of ``canny``."""
    if getattr(model, "head", None) == "release" and getattr(model, "shape", None) is not None:
        canny = release_canny(image)
    context = (
        contextlib.nullcontext()
        if amp_dtype is None
        else torch.autocast(image.device.type, dtype=amp_dtype)
    )
    with context:
        out = model(image, canny, return_alphas=return_alphas)
    size = image.shape[-2:]
    alphas = [
        F.interpolate(a.float(), size=size, mode="bilinear", align_corners=False)
        if a.shape[-2:] != size
        else a.float()
        for a in out.alphas
    ]
    return GSCNNOutput(
        seg=out.seg.float(), edge=out.edge.float() if out.edge is not None else None, alphas=alphas
    )


@torch.no_grad()
def infer(
    model,
    image: Tensor,
    canny: Optional[Tensor] = None,
    tile: TileArg = None,
    overlap: float = 1 / 3,
    amp_dtype: Optional[torch.dtype] = None,
    return_alphas: bool = False,
) -> GSCNNOutput:
    """Runs ``model`` (a :class:`~gscnn_ops.models.GSCNN`, used in whatever train/eval mode it is
    in: callers put it in eval mode) on a batch.

    Args:
        image: (N, 3, H, W) normalised images; moved to the model's device if elsewhere.
        canny: (N, 1, H, W) Canny edges of the un-normalised images, or None (zeros). Ignored
            for a model with ``head="release"`` (the authors' checkpoints): it gets
            :func:`~gscnn_ops.models.release_canny` of each window, as the release computed it.
        tile: None for one forward pass over the whole image; an int or (th, tw) for sliding
            windows of that size (an image side not larger than the tile is run whole along it).
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        amp_dtype: torch.bfloat16 or torch.float16 to run under autocast on the device's type,
            None for full precision.
        return_alphas: also return the three gate maps of the shape stream.

    Returns a :class:`GSCNNOutput` on the model's device, all in float32: ``seg`` (N, K, H, W)
    and ``edge`` (N, 1, H, W) logits (None for the baseline), overlapping windows averaged;
    ``alphas`` (if asked for and the model has a shape stream) are returned at the full image
    size (H, W) in every mode — resized bilinearly from the shape stream's resolution, then
    stitched like the logits — so tiled and untiled outputs have the same shapes.

    Examples:
        >>> import torch
        >>> from gscnn_ops import GSCNN
        >>> from gscnn_ops.engine import infer
        >>> model = GSCNN(5, "resnet18").eval()
        >>> image = torch.randn(1, 3, 48, 80)
        >>> whole = infer(model, image)
        >>> tiled = infer(model, image, tile=(48, 48), overlap=0.25)  # two overlapping windows
        >>> whole.seg.shape, tiled.seg.shape
        (torch.Size([1, 5, 48, 80]), torch.Size([1, 5, 48, 80]))
    """
    _check(model, image, canny, overlap, amp_dtype)
    device = next(model.parameters()).device
    image = image.to(device, non_blocking=True)
    canny = canny.to(device, non_blocking=True) if canny is not None else None
    n, _, h, w = image.shape
    ts = tile_size(tile)
    if ts is None or (h <= ts[0] and w <= ts[1]):
        return _forward(model, image, canny, amp_dtype, return_alphas)

    th, tw = min(ts[0], h), min(ts[1], w)
    seg = edge = None
    alphas: List[Tensor] = []
    count = torch.zeros(1, 1, h, w, device=device)
    for y in window_starts(h, th, overlap):
        for x in window_starts(w, tw, overlap):
            window = (..., slice(y, y + th), slice(x, x + tw))
            out = _forward(
                model,
                image[window],
                canny[window] if canny is not None else None,
                amp_dtype,
                return_alphas,
            )
            if seg is None:  # buffers sized from the first window's outputs
                seg = torch.zeros(n, out.seg.shape[1], h, w, device=device)
                edge = torch.zeros(n, 1, h, w, device=device) if out.edge is not None else None
                alphas = [torch.zeros(n, 1, h, w, device=device) for _ in out.alphas]
            seg[window] += out.seg
            if edge is not None:
                edge[window] += out.edge
            for acc, a in zip(alphas, out.alphas):
                acc[window] += a
            count[window] += 1
    seg /= count
    if edge is not None:
        edge /= count
    for acc in alphas:
        acc /= count
    return GSCNNOutput(seg=seg, edge=edge, alphas=alphas)
