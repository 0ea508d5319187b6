"""Evaluation metrics of gscnn_ops."""

from .boundary_fscore import BoundaryFScore, boundary_radii, scores_from_counts

__all__ = ["BoundaryFScore", "boundary_radii", "scores_from_counts"]
