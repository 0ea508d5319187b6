"""gated_conv2d's test cases, shared by its test files (test_gated_conv2d*.py, the CUDA, emulator,
ISA and double-backward tests): input factories and a forward/backward runner."""

import torch

ARG_NAMES = ("s", "r", "gate_weight", "gate_bias", "weight", "bias")
MLP_ARG_NAMES = (
    "s",
    "r",
    "hidden_weight",
    "hidden_bias",
    "gate_weight",
    "gate_bias",
    "weight",
    "bias",
)


LOSS_USES = ("out_and_alpha", "out_only", "alpha_only")


def make_inputs(
    N,
    C,
    Cr,
    Cout,
    H,
    W,
    dtype=torch.float64,
    device="cpu",
    bias=True,
    channels_last=False,
    requires_grad=False,
    seed=0,
):
    """[s, r, gate_weight, gate_bias, weight, bias] for gscnn_ops.gated_conv2d.

    Values are drawn in float64 on the CPU from a fixed seed (so every dtype and device sees the
    same numbers up to rounding) and scaled so the gate logits are O(1): alpha is neither
    saturated nor constant, and gradients through the gate are not negligible.
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)

    s = rnd(N, C, H, W)
    r = rnd(N, Cr, H, W)
    gate_weight = rnd(1, C + Cr, 1, 1, scale=(C + Cr) ** -0.5)
    gate_bias = rnd(1, scale=0.5)
    weight = rnd(Cout, C, 1, 1, scale=C**-0.5)
    b = rnd(Cout, scale=0.5) if bias else None
    if channels_last:
        s = s.contiguous(memory_format=torch.channels_last)
        r = r.contiguous(memory_format=torch.channels_last)
    inputs = [s, r, gate_weight, gate_bias, weight, b]
    if requires_grad:
        inputs = [t.requires_grad_() if t is not None else None for t in inputs]
    return inputs


def make_mlp_inputs(
    N,
    C,
    Cr,
    M,
    Cout,
    H,
    W,
    dtype=torch.float64,
    device="cpu",
    bias=True,
    channels_last=False,
    requires_grad=False,
    seed=0,
):
    """[s, r, hidden_weight, hidden_bias, gate_weight, gate_bias, weight, bias] for
    gscnn_ops.gated_conv2d_mlp (hidden width M)."""
    s, r, _, _, weight, b = make_inputs(
        N, C, Cr, Cout, H, W, dtype, device, bias, channels_last, seed=seed
    )
    g = torch.Generator().manual_seed(seed + 1)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)

    inputs = [
        s,
        r,
        rnd(M, C + Cr, 1, 1, scale=(C + Cr) ** -0.5),
        rnd(M, scale=0.5),
        rnd(1, M, 1, 1, scale=M**-0.5),
        rnd(1, scale=0.5),
        weight,
        b,
    ]
    if requires_grad:
        inputs = [t.requires_grad_() if t is not None else None for t in inputs]
    return inputs


def leaves(inputs, dtype=None, device=None):
    """Fresh leaf copies (requiring grad) of a list of inputs; None stays None. Strides are kept
    (clone preserves the memory format of dense tensors)."""
    out = []
    for t in inputs:
        if t is None:
            out.append(None)
            continue
        t = t.detach()
        if dtype is not None or device is not None:
            t = t.to(device=device or t.device, dtype=dtype or t.dtype)
        else:
            t = t.clone()
        out.append(t.requires_grad_())
    return out


def upstream_grads(out_shape, alpha_shape, dtype, device="cpu", seed=1):
    """Deterministic random upstream gradients for out and alpha."""
    g = torch.Generator().manual_seed(seed)
    go = torch.randn(out_shape, generator=g, dtype=torch.float64).to(device, dtype)
    ga = torch.randn(alpha_shape, generator=g, dtype=torch.float64).to(device, dtype)
    return go, ga


def forward_backward(fn, inputs, grad_out=None, grad_alpha=None, use="out_and_alpha"):
    """Runs fn(*inputs) -> (out, alpha), backpropagates sum(out * grad_out) and/or
    sum(alpha * grad_alpha) (as `use` says) and returns (out, alpha, grads). grads has one entry
    per input: None for None inputs, zeros for inputs the loss does not depend on."""
    out, alpha = fn(*inputs)
    if grad_out is None:
        grad_out, grad_alpha = upstream_grads(out.shape, alpha.shape, out.dtype, out.device)
    terms = []
    if use in ("out_and_alpha", "out_only"):
        terms.append((out * grad_out.to(out.dtype)).sum())
    if use in ("out_and_alpha", "alpha_only"):
        terms.append((alpha * grad_alpha.to(alpha.dtype)).sum())
    loss = sum(terms)
    wrt = [t for t in inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(loss, wrt, allow_unused=True, materialize_grads=True))
    grads = [next(got) if (t is not None and t.requires_grad) else None for t in inputs]
    return out, alpha, grads
