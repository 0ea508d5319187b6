"""Reading files users hand us (checkpoints, pretrained weights) without unpickling arbitrary
objects."""

import os
from typing import Union

import numpy as np
import torch


def load_tensor_file(path: Union[str, os.PathLike], error=ValueError, what: str = "file"):
    """``torch.load(path, weights_only=True)`` on the CPU: nothing is unpickled but tensors,
    numbers, strings, lists, dicts — and NumPy scalars, which the release's ``train.py`` stores
    (the epoch's mIoU). A missing file raises FileNotFoundError, an unreadable one ``error``,
    both naming ``what`` and the path."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    try:
        from numpy._core.multiarray import scalar  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import scalar
    numpy_scalar = [scalar, np.dtype] + [
        type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32)
    ]
    try:
        with torch.serialization.safe_globals(numpy_scalar):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, forbidden globals ...
        raise error(
            f"{what} {path!r} could not be read as a tensor file (weights_only=True): "
            f"{type(e).__name__}: {e}"
        ) from e
