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
# Standard deviation of the per-object colour offset, per channel.
_JITTER = 22.0
# Probability that a car, person, pole or sign takes the colour of what it stands in front of.
_CAMOUFLAGE = 0.2


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
        >>> image.shape, image.dtype, label.shape
        (torch.Size([3, 64, 128]), torch.uint8, torch.Size([64, 128]))
        >>> bool(((label < 19) | (label == 255)).all())  # train ids, 255 = ignore
        True
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
    base = torch.zeros(256, 3)
    base[:NUM_CLASSES] = torch.tensor(CITYSCAPES_PALETTE, dtype=torch.float32)
    base[IGNORE] = torch.tensor((40.0, 40.0, 40.0))
    colour = base[SKY].view(3, 1, 1).repeat(1, H, W)

    def paint(mask: Tensor, cls: int, rgb=None, camouflage: float = 0.0) -> None:
        """Labels ``mask`` as ``cls`` in one colour: the class's own, moved by a per-object
        offset, so that neighbouring objects are sometimes close in colour (weak edges); with
        probability ``camouflage``, the mean colour of what it covers (a boundary with no
        edge for Canny to find: only the shape tells)."""
        if not mask.any():
            return
        if _rand(g, 0, 1) < camouflage:
            rgb = colour[:, mask].mean(1) + 4 * torch.randn(3, generator=g)
        elif rgb is None:
            rgb = base[cls] + _JITTER * torch.randn(3, generator=g)
        label[mask] = cls
        colour[:, mask] = rgb.view(3, 1).expand(3, int(mask.sum()))

    def box(top, bottom, left, right) -> Tensor:
        return (yy >= top) & (yy < bottom) & (xx >= left) & (xx < right)

    horizon = int(H * _rand(g, 0.35, 0.5))
    ground = max(1, H - horizon)
    paint(label == SKY, SKY)
    # Buildings: a skyline of boxes down to the horizon, most with rows of windows (edges
    # inside one class: Canny finds them, the labels have none).
    x = 0
    while x < W:
        bw = _randint(g, W // 10, W // 4)
        top = int(horizon * _rand(g, 0.1, 0.7))
        paint(box(top, horizon + 2, x, x + bw), BUILDING)
        if _rand(g, 0, 1) < 0.7:
            step = max(3, bw // _randint(g, 3, 6))
            win = (((xx - x) % step) < step // 2) & (((yy - top) % step) < step // 2)
            win &= box(top + 1, horizon - 1, x + 1, x + bw - 1)
            paint(win, BUILDING, base[BUILDING] * _rand(g, 0.3, 0.6))
        x += bw + _randint(g, 0, W // 20)
    # Vegetation blobs in front of the buildings.
    for _ in range(_randint(g, 1, 4)):
        cx, cy = _rand(g, 0, W), horizon - _rand(g, 0, horizon * 0.4)
        rx, ry = _rand(g, W * 0.05, W * 0.15), _rand(g, H * 0.05, H * 0.15)
        paint(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1, VEGETATION)
    # Ground: road in a trapezoid to a vanishing point, sidewalks and terrain at the sides;
    # dashed white markings along the road's middle (road, not a boundary).
    vx = _rand(g, W * 0.35, W * 0.65)
    depth = (yy - horizon).clamp_min(0).float() / ground
    half = 0.05 * W + depth * W * _rand(g, 0.45, 0.7)
    below = yy >= horizon
    paint(below, TERRAIN)
    paint(below & ((xx - vx).abs() <= half * 1.35), SIDEWALK)
    road = below & ((xx - vx).abs() <= half)
    paint(road, ROAD)
    dash = (torch.log1p(8 * depth) * 6).floor().long() % 2 == 1
    marking = road & dash & ((xx - vx).abs() <= 0.5 + depth * W * 0.012)
    paint(marking, ROAD, torch.full((3,), _rand(g, 190, 240)))

    def distance(bottom: float) -> float:
        """0 at the horizon (far) to 1 at the image's bottom row (near)."""
        return max(0.02, (bottom - horizon) / ground)

    # Cars on the road, with a shadow beneath (road) and a dark window band (car).
    for _ in range(_randint(g, 1, 4)):
        cy = _rand(g, horizon + 4, H - 2)
        d = distance(cy)
        cw, ch = max(4, d * W * 0.3), max(3, d * H * 0.25)
        cx = vx + _rand(g, -1, 1) * (0.05 * W + d * W * 0.5) * 0.8
        shadow = box(cy, cy + max(1, ch * 0.15), cx - cw / 2 - 1, cx + cw / 2 + 1) & road
        paint(shadow, ROAD, base[ROAD] * 0.45)
        car = box(cy - ch, cy, cx - cw / 2, cx + cw / 2)
        paint(car, CAR, 255 * torch.rand(3, generator=g), _CAMOUFLAGE)
        paint(box(cy - ch * 0.9, cy - ch * 0.6, cx - cw * 0.4, cx + cw * 0.4), CAR, base[CAR] * 0.3)
    for _ in range(_randint(g, 0, 3)):
        cy = _rand(g, horizon + 4, H - 2)
        d = distance(cy)
        side = 1 if _rand(g, 0, 1) > 0.5 else -1
        cx = vx + side * (0.05 * W + d * W * 0.6) * 1.2
        pw, ph = max(2, d * W * 0.04), max(4, d * H * 0.35)
        paint(box(cy - ph, cy, cx - pw / 2, cx + pw / 2), PERSON, camouflage=_CAMOUFLAGE)
    # Thin structures at several distances: poles standing on the ground (1 px wide and short
    # near the horizon, up to about W/50 wide near the bottom) carrying a sign or a light
    # whose size shrinks with the distance too.
    for _ in range(_randint(g, 3, 7)):
        bottom = _rand(g, horizon + 2, H)
        d = distance(bottom)
        pw = max(1, round(d * W / 50 * _rand(g, 0.6, 1.2)))
        px = _randint(g, 0, W - pw)
        top = max(0, round(bottom - d * H * _rand(g, 0.6, 1.0) - 4))
        paint(box(top, bottom, px, px + pw), POLE, camouflage=_CAMOUFLAGE)
        kind = SIGN if _rand(g, 0, 1) > 0.4 else LIGHT
        size = max(2.0, d * W / 18)
        sw, sh = round(size * _rand(g, 0.7, 1.3)), round(size * _rand(g, 0.7, 1.3))
        paint(box(top, top + sh, px - sw // 2, px + pw + sw // 2), kind, camouflage=_CAMOUFLAGE)
    # A little unlabeled clutter (ignore).
    for _ in range(_randint(g, 0, 3)):
        cx, cy = _randint(g, 0, W), _randint(g, horizon, H)
        paint(((xx - cx).abs() < 3) & ((yy - cy).abs() < 3), IGNORE, base[IGNORE])

    # Per-class texture, lighting gradient and sensor noise.
    image = colour
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
