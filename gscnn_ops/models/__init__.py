"""The GSCNN model layer: dilated ResNet trunks, the shape stream, fusion and the full network."""

from .canny import canny
from .gscnn import ASPP, GSCNN, GSCNNOutput, ShapeStream
from .resnet import ResNet, load_pretrained

__all__ = ["ASPP", "GSCNN", "GSCNNOutput", "ResNet", "ShapeStream", "canny", "load_pretrained"]
