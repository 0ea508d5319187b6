"""The GSCNN model layer: dilated ResNet trunks, the shape stream, fusion and the full network.
``canny`` is re-exported from :mod:`gscnn_ops.filters`, where it lives."""

from ..filters import canny
from .gscnn import ASPP, GSCNN, GSCNNOutput, ShapeStream
from .loss import GSCNNLoss, image_class_weights
from .release import load_release, release_canny
from .resnet import ResNet, load_pretrained
from .wider_resnet import WiderResNet38

__all__ = [
    "ASPP",
    "GSCNN",
    "GSCNNLoss",
    "GSCNNOutput",
    "ResNet",
    "ShapeStream",
    "WiderResNet38",
    "canny",
    "image_class_weights",
    "load_pretrained",
    "load_release",
    "release_canny",
]
