"""Datasets for GSCNN. So far: the embedded synthetic street scenes (no files needed)."""

from .synthetic import NUM_CLASSES, SyntheticStreets, render_scene

__all__ = ["NUM_CLASSES", "SyntheticStreets", "render_scene"]
