"""boundary_potential and dual_task_loss: the paper's boundary potential (eq. 4) and dual-task
loss (eq. 5) — the functional wrappers, their fake kernels and their autograd formulas."""

import torch
from torch import Tensor

from ._common import OPS, output_memory_format, prepare, register_no_double_backward

# Default threshold of P+ for dual_task_loss. A one-hot step edge blurred with sigma = 1 has
# zeta_hat = 0.227, 0.105, 0.021 at the pixels 1, 2, 3 px from the edge, 1.6e-3 at 4 px (only
# the last, tiny taps of the Gaussian reach there) and exactly 0 beyond. In flat regions of a
# prediction zeta is the blurred gradient of noise (rounding: 1e-8 in float32, ~1e-3 in
# bfloat16). 1e-2 keeps the band of 3 px on each side of every boundary, where the loss is
# informative, and excludes flat regions and the tails of the taps, which would otherwise count
# as "non-zero" and dilute the mean (tests/test_dual_task_loss.py, test_default_threshold_*).
DUAL_TASK_THRESHOLD = 1e-2


def boundary_potential(prob: Tensor, sigma: float = 1.0) -> Tensor:
    """Boundary potential of class maps (Gated-SCNN eq. 4), fused.

    zeta = (1/sqrt 2) * sqrt(gx^2 + gy^2) per channel, with (gx, gy) the central differences
    (replicate borders) of G * prob, G the Gaussian of standard deviation ``sigma`` truncated at
    radius R = ceil(3 sigma), normalised, separable, replicate borders. The gradient is taken as
    0 where zeta = 0.

    Args:
        prob: (N, K, H, W) class probabilities, float32/float16/bfloat16 (float64 on CPU).
        sigma: in (0, 32/3].

    Returns:
        zeta, (N, K, H, W), dtype of prob (accumulation in float32).

    Examples:
        >>> import torch, gscnn_ops
        >>> prob = torch.zeros(1, 2, 16, 16)
        >>> prob[:, 0, :, :8], prob[:, 1, :, 8:] = 1.0, 1.0  # a vertical boundary at x = 8
        >>> zeta = gscnn_ops.boundary_potential(prob)
        >>> zeta.shape, bool(zeta[0, 0, 8, 0] == 0), bool(zeta[0, 0, 8, 7] > 0.1)
        (torch.Size([1, 2, 16, 16]), True, True)
    """
    (prob,) = prepare("boundary_potential", [prob])
    return OPS.boundary_potential(prob, float(sigma))


def dual_task_loss(
    prob: Tensor,
    target: Tensor,
    sigma: float = 1.0,
    threshold: float = DUAL_TASK_THRESHOLD,
    ignore_index: int = 255,
) -> Tensor:
    """Dual-task loss of Gated-SCNN (eq. 5), fused: forward and backward each read prob and
    target once and keep nothing of size N*K*H*W besides the gradient.

    loss = sum_{P+} |zeta - zeta_hat| / max(|P+|, 1), with zeta = boundary_potential(prob),
    zeta_hat the same for the one-hot labels (every channel 0 at ignore pixels), and P+ the
    (n, k, pixel) positions with zeta > threshold or zeta_hat > threshold, among pixels with no
    ignore pixel within Chebyshev distance R + 1 (so the loss never depends on anything under an
    ignore region). The gradient treats P+ and |P+| as constants, with sign(0) = 0.

    Args:
        prob: (N, K, H, W) class probabilities (softmax or Gumbel-softmax of the logits),
            float32/float16/bfloat16 (float64 on CPU).
        target: (N, H, W) int64 labels in [0, K) or ``ignore_index``.
        sigma: Gaussian standard deviation, in (0, 32/3].
        threshold: P+ threshold (default 1e-2: see DUAL_TASK_THRESHOLD).
        ignore_index: label of pixels left out.

    Returns:
        0-dim tensor, dtype of prob.

    Bad labels (neither in [0, K) nor ``ignore_index``) are found by the kernel itself, without a
    host synchronisation: on the CPU they raise at once; on CUDA that call's loss is NaN and the
    error is raised by the next call on the device or by :func:`check_errors`.

    Examples:
        >>> import torch, gscnn_ops
        >>> target = torch.zeros(1, 16, 16, dtype=torch.long)
        >>> target[:, :, 8:] = 1
        >>> perfect = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float()
        >>> float(gscnn_ops.dual_task_loss(perfect, target))
        0.0
        >>> float(gscnn_ops.dual_task_loss(torch.full((1, 2, 16, 16), 0.5), target)) > 0
        True
    """
    (prob,) = prepare("dual_task_loss", [prob])
    loss, _ = OPS.dual_task_loss(prob, target, float(sigma), float(threshold), int(ignore_index))
    return loss


def _like_prob(prob):
    return prob.new_empty(prob.shape).contiguous(memory_format=output_memory_format(prob))


def _check_dtl_fake(op, prob, target=None):
    torch._check(prob.dim() == 4, lambda: f"gscnnOPS.{op}: prob must be (N, K, H, W)")
    if target is not None:
        torch._check(target.dim() == 3, lambda: f"gscnnOPS.{op}: target must be (N, H, W)")


@torch.library.register_fake("gscnn_ops::boundary_potential")
def _boundary_potential_fake(prob, sigma):
    _check_dtl_fake("boundary_potential", prob)
    return _like_prob(prob)


@torch.library.register_fake("gscnn_ops::boundary_potential_backward")
def _boundary_potential_backward_fake(grad_zeta, prob, sigma):
    return _like_prob(prob)


@torch.library.register_fake("gscnn_ops::dual_task_loss")
def _dual_task_loss_fake(prob, target, sigma, threshold, ignore_index):
    _check_dtl_fake("dual_task_loss", prob, target)
    return prob.new_empty(()), prob.new_empty((), dtype=torch.float64)


@torch.library.register_fake("gscnn_ops::dual_task_loss_backward")
def _dual_task_loss_backward_fake(grad, prob, target, count, sigma, threshold, ignore_index):
    return _like_prob(prob)


def _bp_setup_context(ctx, inputs, output):
    prob, sigma = inputs
    ctx.save_for_backward(prob)
    ctx.sigma = sigma


def _bp_backward(ctx, grad_zeta):
    (prob,) = ctx.saved_tensors
    return OPS.boundary_potential_backward(grad_zeta, prob, ctx.sigma), None


torch.library.register_autograd(
    "gscnn_ops::boundary_potential", _bp_backward, setup_context=_bp_setup_context
)


def _dtl_setup_context(ctx, inputs, output):
    prob, target, sigma, threshold, ignore_index = inputs
    ctx.save_for_backward(prob, target, output[1])
    ctx.args = (sigma, threshold, ignore_index)


def _dtl_backward(ctx, grad_loss, grad_count):
    # P+ and |P+| are constants of the loss: count gets no gradient.
    prob, target, count = ctx.saved_tensors
    grad_prob = OPS.dual_task_loss_backward(grad_loss, prob, target, count, *ctx.args)
    return grad_prob, None, None, None, None


torch.library.register_autograd(
    "gscnn_ops::dual_task_loss", _dtl_backward, setup_context=_dtl_setup_context
)


register_no_double_backward("boundary_potential_backward", "boundary_potential")
register_no_double_backward("dual_task_loss_backward", "dual_task_loss")
