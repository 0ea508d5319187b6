"""The functional API of gscnn_ops: thin wrappers over the fused custom ops.

Each function takes and returns ordinary tensors, supports autograd, torch.compile(fullgraph=True),
CUDA streams and autocast (inputs are cast to the autocast dtype, as torch.nn.functional.conv2d
does), and validates its arguments with errors that name the op and the argument.

Each op has one module here holding its wrapper, its fake kernel and its autograd formula (the
schemas are in csrc/ops.cpp, the kernels in csrc/cpu and csrc/cuda, the pure-PyTorch references
in :mod:`gscnn_ops.reference`). Importing this package registers them; the compiled library
must be loaded first (``import gscnn_ops`` does both).
"""

from .boundary_fscore_counts import boundary_fscore_counts
from .dual_task_loss import DUAL_TASK_THRESHOLD, boundary_potential, dual_task_loss
from .edge_targets import edge_targets
from .gated_conv2d import gated_conv2d, gated_conv2d_mlp
from .label_errors import check_errors

__all__ = [
    "DUAL_TASK_THRESHOLD",
    "boundary_fscore_counts",
    "boundary_potential",
    "check_errors",
    "dual_task_loss",
    "edge_targets",
    "gated_conv2d",
    "gated_conv2d_mlp",
]
