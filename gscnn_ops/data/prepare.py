"""From raw (image, label) pairs to model inputs, in the data loader's workers.

Every dataset of :mod:`gscnn_ops.data` yields ``(image, label)``: image uint8 (3, H, W) RGB,
label int64 (H, W) with 255 for "ignore". :class:`SegmentationSamples` turns them into the dicts
the engine consumes::

    {"image": float32 (3, H, W) normalised with the ImageNet mean and std,
     "canny": float32 (1, H, W) in {0, 1}, Canny edges of the *augmented, un-normalised* image,
     "label": int64 (H, W),
     "index": int, the index in the wrapped dataset}

Augmentations draw from a ``torch.Generator`` seeded from (seed, epoch, index) alone, so a sample
is the same whichever worker makes it and however many workers there are: this is what makes a
resumed training run see exactly the data of an uninterrupted one.
"""

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from ..filters import canny
from .errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# transform(image uint8 (3, H, W), label int64 (H, W), generator) -> (image, label)
Transform = Callable[[Tensor, Tensor, torch.Generator], Tuple[Tensor, Tensor]]


def normalize(image: Tensor) -> Tensor:
    """uint8 (or 0..255 float) (..., 3, H, W) -> float32, scaled to [0, 1] and standardised.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import normalize
        >>> x = normalize(torch.full((3, 2, 2), 255, dtype=torch.uint8))
        >>> [round(v, 3) for v in x[:, 0, 0].tolist()]
        [2.249, 2.429, 2.64]
    """
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return (image.float() / 255.0 - mean) / std


def denormalize(image: Tensor) -> Tensor:
    """Inverse of :func:`normalize`, back to uint8.

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import denormalize, normalize
        >>> image = torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8)
        >>> torch.equal(denormalize(normalize(image)), image)
        True
    """
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return ((image.float() * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The generator seed of one sample (a 63-bit mix of the three numbers)."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(index)) % (1 << 64)
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) % (1 << 64)
    return (x ^ (x >> 29)) & ((1 << 63) - 1)


def prepare(image: Tensor, label: Tensor, canny_thresholds=(10.0, 100.0)) -> dict:
    """One (image uint8, label) pair -> the model-input dict (without "index").

    Examples:
        >>> import torch
        >>> from gscnn_ops.data import prepare, render_scene
        >>> image, label = render_scene(0, 32, 64)
        >>> sample = prepare(image, label)
        >>> sorted(sample), sample["image"].shape, sample["canny"].shape
        (['canny', 'image', 'label'], torch.Size([3, 32, 64]), torch.Size([1, 32, 64]))
    """
    edges = canny(image, *canny_thresholds)  # on the raw image, as the model expects
    return {"image": normalize(image), "canny": edges.float(), "label": label.long()}


class SegmentationSamples(torch.utils.data.Dataset):
    """Wraps a dataset of ``(image, label)`` pairs: applies ``transform`` (random, from a
    generator seeded by (seed, epoch, index)), then :func:`prepare`. Call :meth:`set_epoch` at
    the start of every epoch (before the loader's iterator is made) to get new augmentations.

    Examples:
        >>> from gscnn_ops.data import SegmentationSamples, SyntheticStreets, TrainTransform
        >>> base = SyntheticStreets(4, 32, 64)
        >>> samples = SegmentationSamples(base, TrainTransform((24, 24)), seed=0)
        >>> samples.set_epoch(1)
        >>> samples[0]["image"].shape, samples[0]["label"].shape
        (torch.Size([3, 24, 24]), torch.Size([24, 24]))
    """

    def __init__(
        self,
        base,
        transform: Optional[Transform] = None,
        seed: int = 0,
        canny_thresholds=(10.0, 100.0),
    ):
        self.base, self.transform, self.seed = base, transform, int(seed)
        self.canny_thresholds = tuple(canny_thresholds)
        self.epoch = 0
        for name in ("num_classes", "ignore_index", "classes", "palette"):
            if hasattr(base, name):
                setattr(self, name, getattr(base, name))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        image, label = self.base[index]
        if self.transform is not None:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
            image, label = self.transform(image, label, g)
        sample = prepare(image, label, self.canny_thresholds)
        sample["index"] = int(index)
        return sample


def collate(samples: list) -> dict:
    """Batches sample dicts as ``torch.utils.data.default_collate`` does, with a clear error
    (rather than a failed ``torch.stack``) when the samples differ in size."""
    sizes = {tuple(s["label"].shape) for s in samples}
    if len(sizes) > 1:
        where = ", ".join(
            f"index {s.get('index', '?')}: {tuple(s['label'].shape)}" for s in samples
        )
        raise DataError(
            f"collate: the samples of a batch differ in size ({where}); images of "
            f"several sizes need batch size 1 (evaluation: --batch-size 1) or a "
            f"training crop (--augment with --crop-size)"
        )
    return torch.utils.data.default_collate(samples)
