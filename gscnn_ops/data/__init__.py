"""Datasets for GSCNN and the path from their (image, label) pairs to model inputs."""

from .build import DATASETS, build_dataset
from .classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX, colorize, default_palette
from .prepare import (IMAGENET_MEAN, IMAGENET_STD, SegmentationSamples, denormalize, normalize,
                      prepare)
from .synthetic import NUM_CLASSES, SyntheticStreets, render_scene

__all__ = ["DATASETS", "build_dataset", "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "IGNORE_INDEX", "IMAGENET_MEAN",
           "IMAGENET_STD", "NUM_CLASSES", "SegmentationSamples", "SyntheticStreets", "colorize",
           "default_palette", "denormalize", "normalize", "prepare", "render_scene"]
