"""Evaluation metrics of gscnn_ops: mIoU (:class:`ConfusionMatrix`) and boundary F-scores."""

from .boundary_fscore import BoundaryFScore, boundary_radii, scores_from_counts
from .confusion import ConfusionMatrix

__all__ = ["BoundaryFScore", "ConfusionMatrix", "boundary_radii", "scores_from_counts"]
