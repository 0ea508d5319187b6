"""Canny edges of un-normalised images in plain PyTorch, on any device, for GSCNN's image-gradient
input. Computed off the model's hot path (in the data loader or once per batch before forward),
never inside ``GSCNN.forward``: the release ran OpenCV on the normalised tensor cast to uint8
(negative values wrapped) inside forward, with a device round trip every step.

Matches ``cv2.Canny(image, low, high)`` (3x3 Sobel, L1 gradient, the channel of largest gradient
for colour images, non-maximum suppression with OpenCV's fixed-point direction tests, 8-connected
hysteresis) on uint8 images.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

_SHIFT = 15
_TG22 = 13573  # round(tan(22.5 deg) * 2**15), as OpenCV


def _sobel(x: Tensor):
    """3x3 Sobel derivatives (OpenCV's default aperture), replicated borders; x (N, C, H, W)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    dx = (p[..., :-2, 2:] + 2 * p[..., 1:-1, 2:] + p[..., 2:, 2:]) - (
        p[..., :-2, :-2] + 2 * p[..., 1:-1, :-2] + p[..., 2:, :-2]
    )
    dy = (p[..., 2:, :-2] + 2 * p[..., 2:, 1:-1] + p[..., 2:, 2:]) - (
        p[..., :-2, :-2] + 2 * p[..., :-2, 1:-1] + p[..., :-2, 2:]
    )
    return dx, dy


def canny(
    image: Tensor, low: float = 10.0, high: float = 100.0, max_iterations: int = 10000
) -> Tensor:
    """Canny edge map of ``image`` (N, C, H, W) or (C, H, W) with values in [0, 255] (uint8 or
    float; floats are rounded to integers first, as a uint8 image would hold). Returns float
    (N, 1, H, W) (or (1, H, W)) with 1 at edges, 0 elsewhere. Defaults are GSCNN's thresholds.

    Examples:
        >>> import torch
        >>> from gscnn_ops.filters import canny
        >>> image = torch.zeros(3, 16, 16, dtype=torch.uint8)
        >>> image[:, :, 8:] = 200  # a vertical step
        >>> edges = canny(image)
        >>> edges.shape, sorted(edges.sum(dim=(0, 1)).nonzero().flatten().tolist())
        (torch.Size([1, 16, 16]), [7])
    """
    if image.dim() not in (3, 4):
        raise ValueError(
            f"canny: image must be (N, C, H, W) or (C, H, W), got {tuple(image.shape)}"
        )
    if not 0 <= low <= high:
        raise ValueError(f"canny: need 0 <= low <= high, got low={low}, high={high}")
    squeeze = image.dim() == 3
    x = image.unsqueeze(0) if squeeze else image
    if x.is_floating_point():
        x = x.round().clamp(0, 255)
    # Sobel sums of 0..255 values are integers below 2^24: exact in float32, on every device.
    dx, dy = _sobel(x.to(torch.float32))
    # int32 holds everything below: |d| <= 1020, and the largest NMS product is
    # |dx| * (TG22 + 2^16) < 2^27.
    dx, dy = dx.to(torch.int32), dy.to(torch.int32)
    mag = dx.abs() + dy.abs()
    if mag.shape[1] > 1:  # colour: the channel with the largest gradient (the first on ties)
        best_mag, best_dx, best_dy = mag[:, :1], dx[:, :1], dy[:, :1]
        for c in range(1, mag.shape[1]):  # strict '>': ties keep the earlier channel
            take = mag[:, c : c + 1] > best_mag
            best_mag = torch.where(take, mag[:, c : c + 1], best_mag)
            best_dx = torch.where(take, dx[:, c : c + 1], best_dx)
            best_dy = torch.where(take, dy[:, c : c + 1], best_dy)
        mag, dx, dy = best_mag, best_dx, best_dy
    lo, hi = int(low), int(high)  # OpenCV floors the thresholds for the L1 gradient

    # Non-maximum suppression; outside the image the magnitude counts as 0.
    m = F.pad(mag, (1, 1, 1, 1))
    c = m[..., 1:-1, 1:-1]
    left, right = m[..., 1:-1, :-2], m[..., 1:-1, 2:]
    up, down = m[..., :-2, 1:-1], m[..., 2:, 1:-1]
    up_left, up_right = m[..., :-2, :-2], m[..., :-2, 2:]
    down_left, down_right = m[..., 2:, :-2], m[..., 2:, 2:]
    ax, ay = dx.abs(), dy.abs() << _SHIFT
    tg22x = ax * _TG22
    tg67x = tg22x + (ax << (_SHIFT + 1))
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg67x)
    diagonal = ~horizontal & ~vertical
    same_sign = (dx ^ dy) >= 0  # OpenCV: s = (dx ^ dy) < 0 ? -1 : 1
    diag_max = torch.where(
        same_sign, (c > up_left) & (c > down_right), (c > up_right) & (c > down_left)
    )
    is_max = (
        (horizontal & (c > left) & (c >= right))
        | (vertical & (c > up) & (c >= down))
        | (diagonal & diag_max)
    )
    candidate = is_max & (c > lo)
    edges = candidate & (c > hi)

    # Hysteresis: grow the strong edges through 8-connected candidates until nothing changes.
    cand = candidate.to(torch.float32)
    cur = edges.to(torch.float32)
    for _ in range(max_iterations):
        grown = F.max_pool2d(cur, 3, stride=1, padding=1) * cand
        grown = torch.maximum(grown, cur)
        if torch.equal(grown, cur):
            break
        cur = grown
    out = cur.to(image.dtype if image.is_floating_point() else torch.float32)
    return out.squeeze(0) if squeeze else out
