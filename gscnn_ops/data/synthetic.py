"""An embedded synthetic street-scene dataset: deterministic from a seed, no files needed.

Scenes are drawn in Cityscapes' 19 train ids so that everything downstream (losses, metrics,
colour maps) is exercised as with the real data: sky, buildings, road with a sidewalk, vegetation,
cars, people, and thin structures (poles carrying signs and traffic lights) where boundaries
matter. Each class has its own colour and texture, plus lighting and sensor noise, so that the
task is not trivial. Images are uint8 (3, H, W); labels int64 (H, W) with 255 for "ignore"
(a few pixels of unlabeled clutter).
"""

from typing import Tuple

import torch
from torch import Tensor

from .classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX

# Cityscapes train ids used here.
(
    ROAD,
    SIDEWALK,
    BUILDING,
    WALL,
    FENCE,
    POLE,
    LIGHT,
    SIGN,
    VEGETATION,
    TERRAIN,
    SKY,
    PERSON,
    RIDER,
    CAR,
    TRUCK,
    BUS,
    TRAIN,
    MOTORCYCLE,
    BICYCLE,
) = range(19)
IGNORE = IGNORE_INDEX
NUM_CLASSES = 19

# Texture amplitudes per class (the base colours are Cityscapes' own).
_TEXTURE = {VEGETATION: 40.0, TERRAIN: 25.0, BUILDING: 18.0, ROAD: 10.0, SIDEWALK: 12.0}


def _rand(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform in [lo, hi); lo when the range is empty (tiny images)."""
    return lo if hi <= lo else int(torch.randint(lo, hi, (), generator=g).item())


def render_scene(seed: int, height: int = 128, width: int = 256) -> Tuple[Tensor, Tensor]:
    """One scene: (image uint8 (3, H, W), label int64 (H, W)). Same seed, same scene.

    Examples:
        >>> from gscnn_ops.data import render_scene
        >>> image, label = render_scene(seed=3, height=64, width=128)
        >>> image.shape, image.dtype, label.shape, int(label.max()) < 19
        (torch.Size([3, 64, 128]), torch.uint8, torch.Size([64, 128]), True)
    """
    if height < 16 or width < 16:
        raise ValueError(
            f"render_scene: height and width must be at least 16, got {height}x{width}"
        )
    g = torch.Generator().manual_seed(int(seed))
    H, W = height, width
    yy = torch.arange(H).view(H, 1).expand(H, W)
    xx = torch.arange(W).view(1, W).expand(H, W)
    label = torch.full((H, W), SKY, dtype=torch.long)

    horizon = int(H * _rand(g, 0.35, 0.5))
    # Buildings: a skyline of boxes from above the horizon down to it.
    x = 0
    while x < W:
        bw = _randint(g, W // 10, W // 4)
        top = int(horizon * _rand(g, 0.1, 0.7))
        label[(yy >= top) & (yy < horizon + 2) & (xx >= x) & (xx < x + bw)] = BUILDING
        x += bw + _randint(g, 0, W // 20)
    # Vegetation blobs in front of the buildings.
    for _ in range(_randint(g, 1, 4)):
        cx, cy = _rand(g, 0, W), horizon - _rand(g, 0, horizon * 0.4)
        rx, ry = _rand(g, W * 0.05, W * 0.15), _rand(g, H * 0.05, H * 0.15)
        label[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1] = VEGETATION
    # Ground: road in a trapezoid to a vanishing point, sidewalks and terrain at the sides.
    vx = _rand(g, W * 0.35, W * 0.65)
    depth = (yy - horizon).clamp_min(0).float() / max(1, H - horizon)
    half = 0.05 * W + depth * W * _rand(g, 0.45, 0.7)
    below = yy >= horizon
    label[below] = TERRAIN
    label[below & ((xx - vx).abs() <= half * 1.35)] = SIDEWALK
    label[below & ((xx - vx).abs() <= half)] = ROAD
    # Cars on the road, people on the sidewalk.
    for _ in range(_randint(g, 1, 4)):
        cy = _rand(g, horizon + 4, H - 2)
        d = (cy - horizon) / max(1, H - horizon)
        cw, ch = max(4, d * W * 0.3), max(3, d * H * 0.25)
        cx = vx + _rand(g, -1, 1) * (0.05 * W + d * W * 0.5) * 0.8
        label[(xx >= cx - cw / 2) & (xx < cx + cw / 2) & (yy >= cy - ch) & (yy < cy)] = CAR
    for _ in range(_randint(g, 0, 3)):
        cy = _rand(g, horizon + 4, H - 2)
        d = (cy - horizon) / max(1, H - horizon)
        side = 1 if _rand(g, 0, 1) > 0.5 else -1
        cx = vx + side * (0.05 * W + d * W * 0.6) * 1.2
        pw, ph = max(2, d * W * 0.04), max(4, d * H * 0.35)
        label[(xx >= cx - pw / 2) & (xx < cx + pw / 2) & (yy >= cy - ph) & (yy < cy)] = PERSON
    # Thin structures: poles (1-3 px) carrying a sign or a traffic light.
    for _ in range(_randint(g, 2, 5)):
        px = _randint(g, 0, W - 3)
        pw = _randint(g, 1, 4)
        top = _randint(g, max(1, horizon // 4), horizon)
        bottom = _randint(g, horizon + 2, H)
        label[(xx >= px) & (xx < px + pw) & (yy >= top) & (yy < bottom)] = POLE
        kind = SIGN if _rand(g, 0, 1) > 0.4 else LIGHT
        sw, sh = _randint(g, 3, 8), _randint(g, 3, 8)
        label[(xx >= px - sw // 2) & (xx < px + pw + sw // 2) & (yy >= top) & (yy < top + sh)] = (
            kind
        )
    # A little unlabeled clutter (ignore).
    for _ in range(_randint(g, 0, 3)):
        cx, cy = _randint(g, 0, W), _randint(g, horizon, H)
        label[((xx - cx).abs() < 3) & ((yy - cy).abs() < 3)] = IGNORE

    # Colours, per-class texture, lighting gradient and sensor noise.
    palette = torch.zeros(256, 3)
    palette[:NUM_CLASSES] = torch.tensor(CITYSCAPES_PALETTE, dtype=torch.float32)
    palette[IGNORE] = torch.tensor((40.0, 40.0, 40.0))
    image = palette[label].permute(2, 0, 1).clone()
    texture = torch.randn(1, 1, H // 4 + 1, W // 4 + 1, generator=g)
    texture = torch.nn.functional.interpolate(
        texture, size=(H, W), mode="bilinear", align_corners=False
    )[0, 0]
    amp = torch.zeros(256)
    for k, a in _TEXTURE.items():
        amp[k] = a
    image += (amp[label] * texture).unsqueeze(0)
    image *= 0.8 + 0.4 * (1 - yy.float() / H) * _rand(g, 0.5, 1.0)
    image += torch.randn(3, H, W, generator=g) * 6
    return image.round().clamp(0, 255).to(torch.uint8), label


class SyntheticStreets(torch.utils.data.Dataset):
    """``length`` scenes of ``height`` x ``width``; item i is render_scene(seed * 1_000_003 + i).

    Examples:
        >>> from gscnn_ops.data import SyntheticStreets
        >>> ds = SyntheticStreets(length=3, height=32, width=64)
        >>> len(ds), ds.classes[5], ds[2][1].shape
        (3, 'pole', torch.Size([32, 64]))
    """

    num_classes = NUM_CLASSES
    ignore_index = IGNORE
    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(self, length: int = 64, height: int = 128, width: int = 256, seed: int = 0):
        if length < 1:
            raise ValueError(f"SyntheticStreets: length must be positive, got {length}")
        self.length, self.height, self.width, self.seed = length, height, width, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Tuple[Tensor, Tensor]:
        if not 0 <= i < self.length:
            raise IndexError(f"SyntheticStreets: index {i} out of range [0, {self.length})")
        return render_scene(self.seed * 1_000_003 + i, self.height, self.width)
