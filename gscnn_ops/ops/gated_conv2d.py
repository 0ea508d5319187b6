"""gated_conv2d and gated_conv2d_mlp: the Gated Convolutional Layer (paper eq. 1-2) — the
functional wrappers, their fake kernels and their autograd formulas."""

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._common import OPS, output_memory_format, prepare, register_no_double_backward


def gated_conv2d(
    s: Tensor,
    r: Tensor,
    gate_weight: Tensor,
    gate_bias: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Gated Convolutional Layer of Gated-SCNN (paper eq. 1-2), fused.

    alpha = sigmoid(gate_weight . [s || r] + gate_bias)
    out   = conv1x1(s * (1 + alpha), weight, bias)

    Args:
        s: shape-stream features, (N, C, H, W).
        r: gating features from the regular stream, (N, Cr, H, W).
        gate_weight: (1, C + Cr, 1, 1). gate_bias: (1,).
        weight: (C_out, C, 1, 1). bias: (C_out,) or None.

    All tensors share one device and one dtype: float32, float16 or bfloat16 (float64 on CPU);
    accumulation is in float32 (float64 for float64). NCHW, channels_last and strided views are
    read as they are; outputs are channels_last when s is.

    Returns:
        (out, alpha): out (N, C_out, H, W) and the gate map alpha (N, 1, H, W).

    Examples:
        >>> import torch, gscnn_ops
        >>> s, r = torch.randn(2, 8, 5, 7), torch.randn(2, 1, 5, 7)
        >>> gate_weight, gate_bias = torch.randn(1, 9, 1, 1), torch.zeros(1)
        >>> weight = torch.randn(4, 8, 1, 1)
        >>> out, alpha = gscnn_ops.gated_conv2d(s, r, gate_weight, gate_bias, weight)
        >>> out.shape, alpha.shape
        (torch.Size([2, 4, 5, 7]), torch.Size([2, 1, 5, 7]))
        >>> ref, _ = gscnn_ops.reference.gated_conv2d(s, r, gate_weight, gate_bias, weight)
        >>> torch.allclose(out, ref, atol=1e-5)
        True
    """
    s, r, gate_weight, gate_bias, weight, bias = prepare(
        "gated_conv2d", [s, r, gate_weight, gate_bias, weight, bias]
    )
    return OPS.gated_conv2d(s, r, gate_weight, gate_bias, weight, bias)


def gated_conv2d_mlp(
    s: Tensor,
    r: Tensor,
    hidden_weight: Tensor,
    hidden_bias: Tensor,
    gate_weight: Tensor,
    gate_bias: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Gated Convolutional Layer with the authors' two-layer gate (BatchNorms folded in), fused.

    alpha = sigmoid(gate_weight . relu(hidden_weight . [s || r] + hidden_bias) + gate_bias)
    out   = conv1x1(s * (1 + alpha), weight, bias)

    hidden_weight: (M, C + Cr, 1, 1), hidden_bias: (M,), gate_weight: (1, M, 1, 1),
    gate_bias: (1,); the rest as in :func:`gated_conv2d`. Used by ``GatedConv2d(gate="mlp")`` in
    eval mode. Its backward (for eval-mode fine-tuning) is exact but not fused.

    Examples:
        >>> import torch, gscnn_ops
        >>> s, r = torch.randn(1, 8, 4, 4), torch.randn(1, 1, 4, 4)
        >>> hw, hb = torch.randn(9, 9, 1, 1), torch.zeros(9)
        >>> gw, gb = torch.randn(1, 9, 1, 1), torch.zeros(1)
        >>> out, alpha = gscnn_ops.gated_conv2d_mlp(s, r, hw, hb, gw, gb, torch.randn(8, 8, 1, 1))
        >>> out.shape, bool(((alpha >= 0) & (alpha <= 1)).all())
        (torch.Size([1, 8, 4, 4]), True)
    """
    args = prepare(
        "gated_conv2d_mlp", [s, r, hidden_weight, hidden_bias, gate_weight, gate_bias, weight, bias]
    )
    return OPS.gated_conv2d_mlp(*args)


def _gcl_outputs(s, weight):
    n, _, h, w = s.shape
    fmt = output_memory_format(s)
    out = s.new_empty((n, weight.shape[0], h, w)).contiguous(memory_format=fmt)
    alpha = s.new_empty((n, 1, h, w)).contiguous(memory_format=fmt)
    return out, alpha


def _check_gcl_fake(s, r, weight):
    torch._check(
        s.dim() == 4 and r.dim() == 4, lambda: "gscnnOPS.gated_conv2d: s and r must be 4-D"
    )
    torch._check(
        weight.dim() == 4 and weight.shape[1] == s.shape[1],
        lambda: "gscnnOPS.gated_conv2d: weight must have shape (C_out, C, 1, 1)",
    )


@torch.library.register_fake("gscnn_ops::gated_conv2d")
def _gated_conv2d_fake(s, r, gate_weight, gate_bias, weight, bias):
    _check_gcl_fake(s, r, weight)
    return _gcl_outputs(s, weight)


@torch.library.register_fake("gscnn_ops::gated_conv2d_mlp")
def _gated_conv2d_mlp_fake(s, r, hidden_weight, hidden_bias, gate_weight, gate_bias, weight, bias):
    _check_gcl_fake(s, r, weight)
    return _gcl_outputs(s, weight)


@torch.library.register_fake("gscnn_ops::gated_conv2d_backward")
def _gated_conv2d_backward_fake(grad_out, grad_alpha, s, r, gate_weight, gate_bias, weight):
    grad_s = s.new_empty(s.shape).contiguous(memory_format=output_memory_format(s))
    grad_r = r.new_empty(r.shape).contiguous(memory_format=output_memory_format(r))
    return (
        grad_s,
        grad_r,
        gate_weight.new_empty(gate_weight.shape),
        gate_bias.new_empty(gate_bias.shape),
        weight.new_empty(weight.shape),
        weight.new_empty((weight.shape[0],)),
    )


# --- gated_conv2d: fused backward kernel --------------------------------------------------------


def _gcl_setup_context(ctx, inputs, output):
    s, r, gate_weight, gate_bias, weight, bias = inputs
    ctx.save_for_backward(s, r, gate_weight, gate_bias, weight)
    ctx.has_bias = bias is not None
    # Unused outputs (often alpha) come as None rather than as a tensor of zeros to read.
    ctx.set_materialize_grads(False)


def _gcl_backward(ctx, grad_out, grad_alpha):
    s, r, gate_weight, gate_bias, weight = ctx.saved_tensors
    if grad_out is None:
        n, _, h, w = s.shape
        grad_out = s.new_zeros((n, weight.shape[0], h, w))
    grads = OPS.gated_conv2d_backward(grad_out, grad_alpha, s, r, gate_weight, gate_bias, weight)
    grad_s, grad_r, grad_gw, grad_gb, grad_w, grad_b = grads
    return grad_s, grad_r, grad_gw, grad_gb, grad_w, (grad_b if ctx.has_bias else None)


torch.library.register_autograd(
    "gscnn_ops::gated_conv2d", _gcl_backward, setup_context=_gcl_setup_context
)


# --- gated_conv2d_mlp: backward in plain tensor ops ---------------------------------------------
# The fused MLP op serves inference (eval mode, BatchNorm folded). Its rare training use (eval-mode
# fine-tuning) gets exact gradients from this composite formula, which is not fused.


def _mlp_setup_context(ctx, inputs, output):
    s, r, hw, hb, gw, gb, weight, bias = inputs
    ctx.save_for_backward(s, r, hw, hb, gw, gb, weight, output[1])
    ctx.has_bias = bias is not None
    ctx.set_materialize_grads(False)


def _mlp_backward(ctx, grad_out, grad_alpha):
    s, r, hw, hb, gw, gb, weight, alpha = ctx.saved_tensors
    C = s.shape[1]
    x = torch.cat([s, r], dim=1)
    h_pre = torch.nn.functional.conv2d(x, hw, hb)
    h = torch.relu(h_pre)
    w2 = weight.flatten(1)
    dalpha = torch.zeros_like(alpha) if grad_alpha is None else grad_alpha
    if grad_out is not None:
        gu = torch.einsum("oc,nohw->nchw", w2, grad_out)
        dalpha = dalpha + (gu * s).sum(1, keepdim=True)
        grad_w = torch.einsum("nohw,nchw->oc", grad_out, s * (1 + alpha)).reshape(weight.shape)
        grad_b = grad_out.sum((0, 2, 3)) if ctx.has_bias else None
    else:
        gu = torch.zeros_like(s)
        grad_w = torch.zeros_like(weight)
        grad_b = weight.new_zeros(weight.shape[0]) if ctx.has_bias else None
    dz = dalpha * alpha * (1 - alpha)
    grad_gw = torch.einsum("nzhw,nmhw->zm", dz, h).reshape(gw.shape)
    grad_gb = dz.sum().reshape(1)
    dh = gw.flatten(1).reshape(1, -1, 1, 1) * dz * (h_pre > 0)
    grad_hw = torch.einsum("nmhw,ndhw->md", dh, x).reshape(hw.shape)
    grad_hb = dh.sum((0, 2, 3))
    dx = torch.einsum("md,nmhw->ndhw", hw.flatten(1), dh)
    grad_s = gu * (1 + alpha) + dx[:, :C]
    grad_r = dx[:, C:]
    return grad_s, grad_r, grad_hw, grad_hb, grad_gw, grad_gb, grad_w, grad_b


torch.library.register_autograd(
    "gscnn_ops::gated_conv2d_mlp", _mlp_backward, setup_context=_mlp_setup_context
)


register_no_double_backward("gated_conv2d_backward", "gated_conv2d")
# (The MLP gate's backward is plain tensor ops: its double backward works.)
