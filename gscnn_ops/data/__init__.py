"""Datasets for GSCNN and the path from their (image, label) pairs to model inputs."""

from .build import DATASETS, build_dataset
from .cityscapes import Cityscapes, labelids_to_trainids
from .classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX, colorize, default_palette
from .errors import DataError
from .folder import FolderDataset, read_classes_file
from .io import read_image, read_label, write_png
from .paired import PairedFiles
from .prepare import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationSamples,
    denormalize,
    normalize,
    prepare,
)
from .synthetic import NUM_CLASSES, SyntheticStreets, render_scene
from .transforms import (
    ColorJitter,
    Compose,
    GaussianBlur,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    RandomScaleCrop,
    TrainTransform,
    resize,
)

__all__ = [
    # datasets
    "DATASETS",
    "Cityscapes",
    "FolderDataset",
    "PairedFiles",
    "SyntheticStreets",
    "build_dataset",
    "render_scene",
    # classes, colours, files
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "DataError",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "colorize",
    "default_palette",
    "labelids_to_trainids",
    "read_classes_file",
    "read_image",
    "read_label",
    "write_png",
    # transforms
    "ColorJitter",
    "Compose",
    "GaussianBlur",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomScale",
    "RandomScaleCrop",
    "TrainTransform",
    "resize",
    # model inputs
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SegmentationSamples",
    "denormalize",
    "normalize",
    "prepare",
]
