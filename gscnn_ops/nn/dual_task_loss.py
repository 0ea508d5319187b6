"""DualTaskLoss: Gated-SCNN's dual-task regulariser (eq. 4-5) as an nn.Module."""

import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops, reference


class DualTaskLoss(nn.Module):
    """Dual-task loss between segmentation logits and labels (Takikawa et al., ICCV 2019, eq. 5).

    forward(logits (N, K, H, W), target (N, H, W) int64) -> 0-dim loss. The class probabilities
    are a Gumbel-softmax of the logits at temperature ``tau`` in training mode (a differentiable
    stand-in for the argmax of eq. 4, as the authors do) and a plain softmax in eval mode; then
    :func:`gscnn_ops.dual_task_loss` (fused) or its reference (``fused=False``).

    Args:
        tau: Gumbel-softmax temperature (training mode).
        sigma: Gaussian standard deviation of the boundary potential.
        threshold: P+ threshold (see gscnn_ops.ops.DUAL_TASK_THRESHOLD).
        ignore_index: label of pixels left out.
        fused: use the fused kernels (default) or the pure-PyTorch reference.

    Examples:
        >>> import torch
        >>> from gscnn_ops import DualTaskLoss
        >>> logits = torch.randn(2, 5, 16, 16, requires_grad=True)
        >>> target = torch.randint(0, 5, (2, 16, 16))
        >>> loss = DualTaskLoss()(logits, target)  # Gumbel softmax of the logits in training mode
        >>> loss.backward()
        >>> loss.dim(), logits.grad.shape
        (0, torch.Size([2, 5, 16, 16]))
    """

    def __init__(
        self,
        tau: float = 0.5,
        sigma: float = 1.0,
        threshold: float = ops.DUAL_TASK_THRESHOLD,
        ignore_index: int = 255,
        fused: bool = True,
    ):
        super().__init__()
        if not tau > 0:
            raise ValueError(f"DualTaskLoss: tau must be positive, got {tau}")
        if not sigma > 0:
            raise ValueError(f"DualTaskLoss: sigma must be positive, got {sigma}")
        self.tau = tau
        self.sigma = sigma
        self.threshold = threshold
        self.ignore_index = ignore_index
        self.fused = fused

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.dim() != 4:
            raise ValueError(
                f"DualTaskLoss: logits must be (N, K, H, W), got shape {tuple(logits.shape)}"
            )
        if self.training:
            prob = F.gumbel_softmax(logits, tau=self.tau, hard=False, dim=1)
        else:
            prob = F.softmax(logits, dim=1)
        fn = ops.dual_task_loss if self.fused else reference.dual_task_loss
        return fn(prob, target, self.sigma, self.threshold, self.ignore_index)

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, sigma={self.sigma}, threshold={self.threshold}, "
            f"ignore_index={self.ignore_index}, fused={self.fused}"
        )
