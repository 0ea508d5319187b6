"""gscnn_ops: fused CPU/CUDA kernels and layers for Gated-SCNN (Takikawa et al., ICCV 2019).

Importing the package loads the compiled library (with a clear error when it was built against
another torch, or not built), then registers fake kernels and autograd for every op.
"""

from ._extension import build_info, has_cuda_kernels
from ._extension import load as _load

_BUILD_INFO = _load()

from . import filters, metrics, ops, reference  # noqa: E402  (ops needs the library loaded above)
from .metrics import BoundaryFScore, ConfusionMatrix  # noqa: E402
from .models import GSCNN, GSCNNLoss  # noqa: E402
from .nn import DualTaskLoss, GatedConv2d, fold_gate_net  # noqa: E402
from .ops import (  # noqa: E402
    boundary_fscore_counts,
    boundary_potential,
    check_errors,
    dual_task_loss,
    edge_targets,
    gated_conv2d,
    gated_conv2d_mlp,
)

__version__ = "0.1.0"

__all__ = [
    "BoundaryFScore",
    "ConfusionMatrix",
    "DualTaskLoss",
    "GSCNN",
    "GSCNNLoss",
    "GatedConv2d",
    "boundary_fscore_counts",
    "boundary_potential",
    "build_info",
    "check_errors",
    "dual_task_loss",
    "edge_targets",
    "filters",
    "fold_gate_net",
    "gated_conv2d",
    "gated_conv2d_mlp",
    "has_cuda_kernels",
    "metrics",
    "ops",
    "reference",
]
