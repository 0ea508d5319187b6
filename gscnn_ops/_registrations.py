"""Fake (meta) kernels and autograd formulas of the gscnn_ops custom ops.

The schemas live in csrc/ops.cpp and the device kernels in csrc/cpu and csrc/cuda; this module
must be imported after the compiled library has been loaded.
"""

import torch

ops = torch.ops.gscnn_ops


def output_memory_format(t):
    """The layout the kernels write (mirror of csrc/common/checks.h): channels_last when the
    input is channels_last and not also plain contiguous, NCHW otherwise."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _gcl_outputs(s, weight):
    n, _, h, w = s.shape
    fmt = output_memory_format(s)
    out = s.new_empty((n, weight.shape[0], h, w)).contiguous(memory_format=fmt)
    alpha = s.new_empty((n, 1, h, w)).contiguous(memory_format=fmt)
    return out, alpha


def _check_gcl_fake(s, r, weight):
    torch._check(s.dim() == 4 and r.dim() == 4, lambda: "gscnn_ops.gated_conv2d: s and r must be 4-D")
    torch._check(weight.dim() == 4 and weight.shape[1] == s.shape[1],
                 lambda: "gscnn_ops.gated_conv2d: weight must have shape (C_out, C, 1, 1)")


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
    return (grad_s, grad_r, gate_weight.new_empty(gate_weight.shape),
            gate_bias.new_empty(gate_bias.shape), weight.new_empty(weight.shape),
            weight.new_empty((weight.shape[0],)))


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
    grads = ops.gated_conv2d_backward(grad_out, grad_alpha, s, r, gate_weight, gate_bias, weight)
    grad_s, grad_r, grad_gw, grad_gb, grad_w, grad_b = grads
    return grad_s, grad_r, grad_gw, grad_gb, grad_w, (grad_b if ctx.has_bias else None)


torch.library.register_autograd("gscnn_ops::gated_conv2d", _gcl_backward,
                                setup_context=_gcl_setup_context)


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


torch.library.register_autograd("gscnn_ops::gated_conv2d_mlp", _mlp_backward,
                                setup_context=_mlp_setup_context)


# --- boundary_potential / dual_task_loss -------------------------------------------------------

def _like_prob(prob):
    return prob.new_empty(prob.shape).contiguous(memory_format=output_memory_format(prob))


def _check_dtl_fake(op, prob, target=None):
    torch._check(prob.dim() == 4, lambda: f"gscnn_ops.{op}: prob must be (N, K, H, W)")
    if target is not None:
        torch._check(target.dim() == 3, lambda: f"gscnn_ops.{op}: target must be (N, H, W)")


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
    return ops.boundary_potential_backward(grad_zeta, prob, ctx.sigma), None


torch.library.register_autograd("gscnn_ops::boundary_potential", _bp_backward,
                                setup_context=_bp_setup_context)


def _dtl_setup_context(ctx, inputs, output):
    prob, target, sigma, threshold, ignore_index = inputs
    ctx.save_for_backward(prob, target, output[1])
    ctx.args = (sigma, threshold, ignore_index)


def _dtl_backward(ctx, grad_loss, grad_count):
    # P+ and |P+| are constants of the loss: count gets no gradient.
    prob, target, count = ctx.saved_tensors
    grad_prob = ops.dual_task_loss_backward(grad_loss, prob, target, count, *ctx.args)
    return grad_prob, None, None, None, None


torch.library.register_autograd("gscnn_ops::dual_task_loss", _dtl_backward,
                                setup_context=_dtl_setup_context)




# --- no double backward -------------------------------------------------------------------------
# The fused backward kernels have no derivative of their own. Without an autograd formula their
# outputs would simply not require grad, and a second derivative through them (a gradient
# penalty, meta-learning) would come out as zeros with only a warning: a silently wrong answer.
# So each backward op gets a formula that raises, naming the op and the way out. (The MLP gate's
# backward is plain tensor ops: its double backward works.)

def _register_no_double_backward(backward_op, forward_op):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"gscnn_ops.{backward_op}: double backward is not supported (a derivative of the "
            f"gradient of gscnn_ops.{forward_op}: the fused backward kernel has none). For "
            f"second derivatives use gscnn_ops.reference.{forward_op}, whose plain tensor ops "
            f"autograd differentiates twice.")

    torch.library.register_autograd(f"gscnn_ops::{backward_op}", backward,
                                    setup_context=lambda ctx, inputs, output: None)


for _backward_op, _forward_op in [("gated_conv2d_backward", "gated_conv2d"),
                                  ("boundary_potential_backward", "boundary_potential"),
                                  ("dual_task_loss_backward", "dual_task_loss")]:
    _register_no_double_backward(_backward_op, _forward_op)


# --- edge_targets (integer input: no autograd) --------------------------------------------------

_LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_edge_targets_fake(op, target, radius):
    # The same checks, and messages, as csrc/common/edge_targets_launch.h.
    torch._check(target.dim() == 3, lambda: (
        f"{op}: argument 'target' must be a 3-D (N, H, W) label map tensor, got a "
        f"{target.dim()}-D tensor of shape {list(target.shape)}"))
    torch._check(target.dtype in _LABEL_DTYPES, lambda: (
        f"{op}: argument 'target' must be an integer label map (uint8, int8, int16, int32 or "
        f"int64), got {target.dtype}"))
    torch._check(radius >= 0, lambda: (
        f"{op}: argument 'radius' must be a distance in pixels >= 0, got {radius}"))


@torch.library.register_fake("gscnn_ops::edge_targets")
def _edge_targets_fake(target, radius=2.0, ignore_index=255):
    _check_edge_targets_fake("gscnn_ops.edge_targets", target, radius)
    return target.new_empty(target.shape, dtype=torch.bool)  # contiguous, like the kernels




# --- boundary_fscore_counts (integer counts: no autograd) -----------------------------------------

@torch.library.register_fake("gscnn_ops::boundary_fscore_counts")
def _boundary_fscore_counts_fake(pred, target, num_classes, radii, ignore_index):
    torch._check(pred.dim() == 3 and target.dim() == 3,
                 lambda: "gscnn_ops.boundary_fscore_counts: pred and target must be (N, H, W)")
    return pred.new_empty((pred.shape[0], num_classes, len(radii), 6), dtype=torch.int64)
