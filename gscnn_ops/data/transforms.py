"""Training augmentations of Gated-SCNN, on uint8 (3, H, W) images and int64 (H, W) labels.

Each transform is a callable ``t(image, label, generator) -> (image, label)`` that draws all
its randomness from ``generator``, so that :class:`~gscnn_ops.data.SegmentationSamples` makes
the same sample from the same (seed, epoch, index) in any worker. Geometric steps move image
and label together (the label with nearest-neighbour sampling on the same pixel grid as the
image's bilinear one, so that they stay aligned); photometric steps touch only the image.
Only torch operations are used, so the transforms run in the loader's workers without OpenCV.
"""

import math
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .classes import IGNORE_INDEX

Size = Union[int, Tuple[int, int]]


# ----------------------------------------------------------------------------- helpers


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item()


def _randint(g: torch.Generator, n: int) -> int:
    """Uniform in [0, n) (n >= 1)."""
    return int(torch.randint(n, (), generator=g).item())


def _check_pair(owner: str, image: Tensor, label: Tensor) -> None:
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(
            f"{owner}: image must be uint8 (3, H, W), got {image.dtype} {tuple(image.shape)}"
        )
    if label.dim() != 2 or label.shape != image.shape[1:]:
        raise ValueError(
            f"{owner}: label must be (H, W) = {tuple(image.shape[1:])} like the "
            f"image, got {tuple(label.shape)}"
        )


def _to_uint8(x: Tensor) -> Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def _pair_of_positive_ints(owner: str, name: str, value: Size) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise ValueError(
            f"{owner}: {name} must be a positive int or a (height, width) pair of "
            f"positive ints, got {value!r}"
        )
    return pair


def _range(owner: str, name: str, value: Sequence[float], low: float = 0.0) -> Tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {name} must be a (low, high) pair, got {value!r}") from None
    if not low < lo <= hi or not math.isfinite(hi):
        raise ValueError(f"{owner}: {name} must satisfy {low} < low <= high < inf, got {value!r}")
    return lo, hi


def _probability(owner: str, name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{owner}: {name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _ignore(owner: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{owner}: ignore_index must be an int, got {value!r}")
    return value


# ----------------------------------------------------------------------------- pieces


class Compose:
    """Apply ``transforms`` in order, all drawing from the same generator.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import Compose, RandomHorizontalFlip, RandomScale
        >>> t = Compose([RandomScale((0.5, 0.5)), RandomHorizontalFlip()])
        >>> image = torch.zeros(3, 8, 8, dtype=torch.uint8)
        >>> image, label = t(image, torch.zeros(8, 8, dtype=torch.long), torch.Generator())
        >>> image.shape, label.shape
        (torch.Size([3, 4, 4]), torch.Size([4, 4]))
    """

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise ValueError(f"Compose: every transform must be callable, got {t!r}")

    def __call__(self, image: Tensor, label: Tensor, generator: torch.Generator):
        for t in self.transforms:
            image, label = t(image, label, generator)
        return image, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms!r})"


def resize(image: Tensor, label: Tensor, size: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """Resize the pair to ``size`` (h, w): the image bilinearly (antialiased when shrinking,
    so that thin structures do not alias into noise), the label by nearest neighbour taken at
    the same half-pixel-centred source positions, so that the two stay aligned.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import resize
        >>> image, label = resize(torch.zeros(3, 10, 20, dtype=torch.uint8),
        ...                       torch.zeros(10, 20, dtype=torch.long), (5, 7))
        >>> image.shape, label.shape
        (torch.Size([3, 5, 7]), torch.Size([5, 7]))
    """
    (H, W), (h, w) = image.shape[1:], size
    if (h, w) == (H, W):
        return image, label
    antialias = h < H or w < W
    out = F.interpolate(
        image[None].float(), size=(h, w), mode="bilinear", align_corners=False, antialias=antialias
    )[0]
    ys, xs = _nearest_source(H, h, 0, h), _nearest_source(W, w, 0, w)
    return _to_uint8(out), label[ys][:, xs]


def _nearest_source(in_len: int, out_len: int, start: int, count: int) -> Tensor:
    """Nearest source pixel of output pixels start .. start + count - 1 of a resize from in_len
    to out_len: floor((i + 0.5) * in_len / out_len), which is where the bilinear
    (align_corners=False) sampling point of pixel i falls, rounded."""
    i = torch.arange(start, start + count, dtype=torch.float64)
    return ((i + 0.5) * (in_len / out_len)).floor().long().clamp_(0, in_len - 1)


def _linear_taps(in_len: int, out_len: int, start: int, count: int):
    """Source pixels and weights of output pixels start .. start + count - 1 of a bilinear
    (align_corners=False) enlargement from in_len to out_len, computed as F.interpolate does
    (float32: scale = in/out, src = max(scale * (i + 0.5) - 0.5, 0))."""
    scale = torch.tensor(float(in_len), dtype=torch.float32) / out_len
    src = (torch.arange(start, start + count, dtype=torch.float32) + 0.5) * scale - 0.5
    src = src.clamp_min(0)
    lo = src.floor().long().clamp_(max=in_len - 1)
    hi = (lo + 1).clamp_(max=in_len - 1)
    w_hi = (src - lo).clamp_(0, 1)
    return lo, hi, 1 - w_hi, w_hi


def resize_window(
    image: Tensor, label: Tensor, size: Tuple[int, int], window: Tuple[int, int, int, int]
) -> Tuple[Tensor, Tensor]:
    """``resize(image, label, size)`` cropped to ``window`` = (top, left, height, width), for an
    enlargement (size >= the image's along both axes): only the window is interpolated, not the
    whole enlarged image (4x the pixels at scale 2). The label is exactly the cropped one of
    :func:`resize`; the image equals it up to float rounding (at most one grey level)."""
    (H, W), (h, w) = image.shape[1:], size
    top, left, ch, cw = window
    y0, y1, wy0, wy1 = _linear_taps(H, h, top, ch)
    x0, x1, wx0, wx1 = _linear_taps(W, w, left, cw)
    x = image.float()
    rows0, rows1 = x[:, y0], x[:, y1]  # (3, ch, W)
    top_row = rows0[:, :, x0] * wx0 + rows0[:, :, x1] * wx1
    bottom_row = rows1[:, :, x0] * wx0 + rows1[:, :, x1] * wx1
    out = top_row * wy0[:, None] + bottom_row * wy1[:, None]
    ys, xs = _nearest_source(H, h, top, ch), _nearest_source(W, w, left, cw)
    return _to_uint8(out), label[ys][:, xs]


class RandomScale:
    """Resize by a factor uniform in ``scale_range`` (see :func:`resize`).

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import RandomScale
        >>> image = torch.zeros(3, 4, 6, dtype=torch.uint8)
        >>> label = torch.zeros(4, 6, dtype=torch.long)
        >>> image, label = RandomScale((2.0, 2.0))(image, label, torch.Generator())
        >>> image.shape
        torch.Size([3, 8, 12])
    """

    def __init__(self, scale_range=(0.5, 2.0)):
        self.scale_range = _range("RandomScale", "scale_range", scale_range)

    def __call__(self, image: Tensor, label: Tensor, generator: torch.Generator):
        _check_pair("RandomScale", image, label)
        s = _uniform(generator, *self.scale_range)
        H, W = image.shape[1:]
        return resize(image, label, (max(1, round(H * s)), max(1, round(W * s))))


class RandomCrop:
    """Crop to ``crop_size`` (int or (h, w)) at a random position. Along an axis where the
    image is smaller it is instead placed at a random offset in the crop, and the rest is
    padded: the image with ``fill`` (0) and the label with ``ignore_index``, so that padding is
    never learnt as a class.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import RandomCrop
        >>> image = torch.zeros(3, 4, 8, dtype=torch.uint8)
        >>> label = torch.zeros(4, 8, dtype=torch.long)
        >>> image, label = RandomCrop((6, 6))(image, label, torch.Generator())
        >>> image.shape, int(label.max())  # too small: padded with the ignore label
        (torch.Size([3, 6, 6]), 255)
    """

    def __init__(self, crop_size: Size, ignore_index: int = IGNORE_INDEX, fill: int = 0):
        self.crop_size = _pair_of_positive_ints("RandomCrop", "crop_size", crop_size)
        self.ignore_index = _ignore("RandomCrop", ignore_index)
        if not isinstance(fill, int) or not 0 <= fill <= 255:
            raise ValueError(f"RandomCrop: fill must be an int in 0..255, got {fill!r}")
        self.fill = fill

    def __call__(self, image: Tensor, label: Tensor, generator: torch.Generator):
        _check_pair("RandomCrop", image, label)
        (H, W), (h, w) = image.shape[1:], self.crop_size
        # One offset per axis: where the crop starts in the image, or (when the image is
        # smaller) where the image starts in the crop.
        dy, dx = _randint(generator, abs(H - h) + 1), _randint(generator, abs(W - w) + 1)
        if H >= h and W >= w:
            return image[:, dy : dy + h, dx : dx + w], label[dy : dy + h, dx : dx + w]
        out_image = image.new_full((3, h, w), self.fill)
        out_label = label.new_full((h, w), self.ignore_index)
        # Source and destination windows per axis: crop when the image is larger, else place.
        sy, ty, ny = (dy, 0, h) if H >= h else (0, dy, H)
        sx, tx, nx = (dx, 0, w) if W >= w else (0, dx, W)
        out_image[:, ty : ty + ny, tx : tx + nx] = image[:, sy : sy + ny, sx : sx + nx]
        out_label[ty : ty + ny, tx : tx + nx] = label[sy : sy + ny, sx : sx + nx]
        return out_image, out_label


class RandomScaleCrop:
    """:class:`RandomScale` then :class:`RandomCrop` with the same random draws and the same
    result (the image up to float rounding), faster: when the image is enlarged and the crop
    lies inside it, only the crop window is interpolated (:func:`resize_window`) instead of the
    whole enlarged image — at scale 2 on 1024x2048 inputs, a 720x720 window instead of 8 Mpx.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import RandomScaleCrop
        >>> t = RandomScaleCrop(scale_range=(0.5, 2.0), crop_size=(16, 16))
        >>> image = torch.zeros(3, 20, 30, dtype=torch.uint8)
        >>> label = torch.zeros(20, 30, dtype=torch.long)
        >>> image, label = t(image, label, torch.Generator().manual_seed(1))
        >>> image.shape, label.shape
        (torch.Size([3, 16, 16]), torch.Size([16, 16]))
    """

    def __init__(
        self,
        scale_range=(0.5, 2.0),
        crop_size: Size = 720,
        ignore_index: int = IGNORE_INDEX,
        fill: int = 0,
    ):
        self.scale = RandomScale(scale_range)
        self.crop = RandomCrop(crop_size, ignore_index, fill)

    def __call__(self, image: Tensor, label: Tensor, generator: torch.Generator):
        _check_pair("RandomScaleCrop", image, label)
        s = _uniform(generator, *self.scale.scale_range)  # the draw of RandomScale
        H, W = image.shape[1:]
        h, w = max(1, round(H * s)), max(1, round(W * s))
        ch, cw = self.crop.crop_size
        if h < H or w < W or h < ch or w < cw:  # shrinking (antialiased) or padding: as is
            image, label = resize(image, label, (h, w))
            return self.crop(image, label, generator)
        dy, dx = _randint(generator, h - ch + 1), _randint(generator, w - cw + 1)  # RandomCrop's
        return resize_window(image, label, (h, w), (dy, dx, ch, cw))


class RandomHorizontalFlip:
    """Mirror image and label left-right with probability ``p``.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import RandomHorizontalFlip
        >>> image = torch.arange(3, dtype=torch.uint8).view(1, 1, 3).expand(3, 1, 3)
        >>> flipped, _ = RandomHorizontalFlip(p=1.0)(image, torch.zeros(1, 3, dtype=torch.long),
        ...                                          torch.Generator())
        >>> flipped[0, 0].tolist()
        [2, 1, 0]
    """

    def __init__(self, p: float = 0.5):
        self.p = _probability("RandomHorizontalFlip", "p", p)

    def __call__(self, image: Tensor, label: Tensor, generator: torch.Generator):
        _check_pair("RandomHorizontalFlip", image, label)
        if _uniform(generator, 0.0, 1.0) < self.p:
            return image.flip(-1), label.flip(-1)
        return image, label


class ColorJitter:
    """Brightness, contrast and saturation, each scaled by a factor uniform in
    [max(0, 1 - x), 1 + x] (x = 0 leaves it alone), applied in that order. Label untouched.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import ColorJitter
        >>> label = torch.randint(0, 3, (8, 8))
        >>> image, out = ColorJitter()(torch.full((3, 8, 8), 100, dtype=torch.uint8), label,
        ...                            torch.Generator().manual_seed(0))
        >>> image.dtype, torch.equal(out, label)  # the label is untouched
        (torch.uint8, True)
    """

    def __init__(self, brightness: float = 0.25, contrast: float = 0.25, saturation: float = 0.25):
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise ValueError(f"ColorJitter: {name} must be a finite number >= 0, got {value!r}")
        self.brightness, self.contrast, self.saturation = (
            float(brightness),
            float(contrast),
            float(saturation),
        )

    @staticmethod
    def _gray(x: Tensor) -> Tensor:
        # ITU-R 601 luma, as PIL's and torchvision's grayscale conversions.
        return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)

    def __call__(self, image: Tensor, label: Tensor, generator: torch.Generator):
        _check_pair("ColorJitter", image, label)
        if self.brightness == self.contrast == self.saturation == 0:
            return image, label
        x = image.float()
        if self.brightness > 0:
            x = x * _uniform(generator, max(0.0, 1 - self.brightness), 1 + self.brightness)
            x = x.clamp(0, 255)
        if self.contrast > 0:
            f = _uniform(generator, max(0.0, 1 - self.contrast), 1 + self.contrast)
            mean = self._gray(x).mean()
            x = (mean + (x - mean) * f).clamp(0, 255)
        if self.saturation > 0:
            f = _uniform(generator, max(0.0, 1 - self.saturation), 1 + self.saturation)
            gray = self._gray(x)
            x = (gray + (x - gray) * f).clamp(0, 255)
        return _to_uint8(x), label


class GaussianBlur:
    """With probability ``p``, blur the image with a Gaussian of sigma uniform in
    ``sigma_range`` (separable kernel of radius ceil(3 sigma), reflect padding so that borders
    do not darken). Label untouched.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import GaussianBlur
        >>> image = torch.zeros(3, 9, 9, dtype=torch.uint8)
        >>> image[:, 4, 4] = 255
        >>> blurred, _ = GaussianBlur(p=1.0, sigma_range=(1.0, 1.0))(
        ...     image, torch.zeros(9, 9, dtype=torch.long), torch.Generator())
        >>> int(blurred[0, 4, 4]) < 255 and int(blurred[0, 4, 5]) > 0
        True
    """

    def __init__(self, p: float = 0.5, sigma_range=(0.1, 2.0)):
        self.p = _probability("GaussianBlur", "p", p)
        self.sigma_range = _range("GaussianBlur", "sigma_range", sigma_range)

    def __call__(self, image: Tensor, label: Tensor, generator: torch.Generator):
        _check_pair("GaussianBlur", image, label)
        if self.p == 0 or _uniform(generator, 0.0, 1.0) >= self.p:
            return image, label
        sigma = _uniform(generator, *self.sigma_range)
        x = image[None].float()  # (1, 3, H, W)
        for dim in (3, 2):  # width, then height
            # Reflect padding needs radius < size: tiny images get a truncated kernel.
            radius = min(math.ceil(3 * sigma), x.shape[dim] - 1)
            if radius <= 0:
                continue
            t = torch.arange(-radius, radius + 1, dtype=torch.float32)
            k = torch.exp(-0.5 * (t / sigma) ** 2)
            k = (k / k.sum()).repeat(3, 1, 1, 1)  # (3, 1, 1, K): one kernel per channel
            if dim == 3:
                x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k, groups=3)
            else:
                x = F.conv2d(
                    F.pad(x, (0, 0, radius, radius), mode="reflect"), k.transpose(2, 3), groups=3
                )
        return _to_uint8(x[0]), label


class TrainTransform(Compose):
    """Gated-SCNN's training augmentation: random scale in ``scale_range``, random crop to
    ``crop_size`` (padding with 0 / ``ignore_index`` where the scaled image is smaller),
    horizontal flip with ``flip_prob``, colour jitter, and Gaussian blur with ``blur_prob``.
    Zero jitter factors and ``blur_prob=0`` switch those steps off.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import TrainTransform, render_scene
        >>> image, label = render_scene(0, 64, 128)
        >>> image, label = TrainTransform((48, 48))(image, label, torch.Generator().manual_seed(0))
        >>> image.shape, label.shape
        (torch.Size([3, 48, 48]), torch.Size([48, 48]))
    """

    def __init__(
        self,
        crop_size: Size,
        scale_range=(0.5, 2.0),
        flip_prob: float = 0.5,
        brightness: float = 0.25,
        contrast: float = 0.25,
        saturation: float = 0.25,
        blur_prob: float = 0.5,
        blur_sigma=(0.1, 2.0),
        ignore_index: int = IGNORE_INDEX,
    ):
        try:
            steps = [
                RandomScaleCrop(scale_range, crop_size, ignore_index),
                RandomHorizontalFlip(flip_prob),  # p = flip_prob
                ColorJitter(brightness, contrast, saturation),
                GaussianBlur(blur_prob, blur_sigma),  # p = blur_prob, sigma_range = blur_sigma
            ]
        except ValueError as e:  # say which call was wrong; the step names which argument
            raise ValueError(f"TrainTransform: {e}") from None
        super().__init__(steps)
        self.crop_size = self.transforms[0].crop.crop_size
        self.ignore_index = ignore_index
