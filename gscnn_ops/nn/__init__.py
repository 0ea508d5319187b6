"""nn.Module layers of gscnn_ops."""

from .gated_conv import GatedConv2d, fold_gate_net

__all__ = ["GatedConv2d", "fold_gate_net"]
