"""Image filters: what GSCNN computes from images outside the network (the Canny map of its
image-gradient input). Used by the data layer (in loader workers) and by the model layer."""

from .canny import canny

__all__ = ["canny"]
