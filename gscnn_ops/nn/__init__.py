"""nn.Module layers of gscnn_ops."""

from .dual_task_loss import DualTaskLoss
from .gated_conv import GatedConv2d, fold_gate_net

__all__ = ["DualTaskLoss", "GatedConv2d", "fold_gate_net"]
