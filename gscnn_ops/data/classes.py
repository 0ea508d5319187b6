"""Class names and colours: Cityscapes' 19 training classes, and a palette for any class count."""

from typing import List, Sequence

import torch
from torch import Tensor

IGNORE_INDEX = 255

CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# Cityscapes' official colours of the 19 train ids (RGB).
CITYSCAPES_PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)


def default_palette(num_classes: int) -> List[List[int]]:
    """Distinct RGB colours for ``num_classes`` classes: Cityscapes' when there are 19, else
    black/white for 2 classes, else colours spread over the hue circle (golden-ratio steps).

    Examples:
        >>> from gscnn_ops.data import default_palette
        >>> default_palette(2)
        [[0, 0, 0], [255, 255, 255]]
        >>> len(default_palette(19)), default_palette(19)[0]  # Cityscapes' colours
        (19, [128, 64, 128])
    """
    if num_classes == len(CITYSCAPES_PALETTE):
        return [list(c) for c in CITYSCAPES_PALETTE]
    if num_classes == 2:
        return [[0, 0, 0], [255, 255, 255]]
    out = []
    for k in range(num_classes):
        h = (k * 0.618033988749895) % 1.0
        v = 0.95 if k % 2 == 0 else 0.7
        i, f = int(h * 6), h * 6 - int(h * 6)
        p, q, t = 0.0, v * (1 - f), v * f
        r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
        out.append([round(255 * r), round(255 * g), round(255 * b)])
    return out


def colorize(
    label: Tensor,
    palette: Sequence[Sequence[int]],
    ignore_index: int = IGNORE_INDEX,
    ignore_colour=(0, 0, 0),
) -> Tensor:
    """(H, W) integer label map -> (3, H, W) uint8 RGB image; ``ignore_index`` (and any value
    outside the palette) gets ``ignore_colour``.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import colorize
        >>> rgb = colorize(torch.tensor([[0, 1, 255]]), [[10, 20, 30], [200, 0, 0]])
        >>> rgb.shape, rgb[:, 0, 1].tolist(), rgb[:, 0, 2].tolist()  # 255: ignore, black
        (torch.Size([3, 1, 3]), [200, 0, 0], [0, 0, 0])
    """
    lut = torch.tensor(list(palette) + [list(ignore_colour)], dtype=torch.uint8)
    idx = label.long().clone()
    idx[(idx < 0) | (idx >= len(palette))] = len(palette)
    return lut[idx].permute(2, 0, 1).contiguous()
