"""Shared helpers of the gscnn_ops test suite: input factories, a forward/backward runner, and
the tolerances every file compares with."""

import os

import pytest
import torch

import gscnn_ops
from gscnn_ops import reference

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

# float64 and float32 results are compared elementwise with these (absolute and relative) bounds.
# The kernels accumulate in the input precision for float64 and in float32 for float32, in a
# different order than the reference (cat + F.conv2d), so only rounding noise remains.
TIGHT_TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
}

# Low precision. The kernels read float16/bfloat16 values, accumulate in float32 and round each
# result to the storage type exactly once. Compared with the float64 reference computed from the
# same (already rounded) inputs, an element is therefore off by at most half an ulp of itself
# plus float32 accumulation noise: we allow one machine epsilon of the dtype relative to the
# element (rtol) plus one epsilon of the largest magnitude of the tensor (atol, for elements that
# are near zero because of cancellation in a sum of larger terms).
LOW_PRECISION_EPS = {
    torch.float16: 2.0**-10,  # 9.8e-4
    torch.bfloat16: 2.0**-7,  # 7.8e-3
}

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


def assert_all_close(actual, expected, names, **tol):
    """assert_close on parallel lists (None must match None), naming the failing entry."""
    assert len(actual) == len(expected) == len(names)
    for a, e, name in zip(actual, expected, names):
        if e is None:
            assert a is None, f"{name}: expected None, got a tensor"
            continue
        assert a is not None, f"{name}: got None"
        torch.testing.assert_close(a, e, msg=lambda m, name=name: f"{name}: {m}", **tol)


def assert_low_precision_close(actual, expected64, dtype, name=""):
    """actual (float16/bfloat16) against a float64 reference, with LOW_PRECISION_EPS."""
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype}, expected {dtype}"
    eps = LOW_PRECISION_EPS[dtype]
    scale = expected64.abs().max().item() if expected64.numel() else 0.0
    torch.testing.assert_close(
        actual.double(), expected64, rtol=eps, atol=eps * scale, msg=lambda m: f"{name}: {m}"
    )


def reference_fn(inputs):
    """The pure-PyTorch reference for a list of gated_conv2d inputs."""
    return reference.gated_conv2d(*inputs)


@pytest.fixture
def restore_num_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def cuda_skip_reason():
    """Why the CUDA tests cannot run here, or None when they can. With
    GSCNN_EXPECT_CUDA_KERNELS=1 a GPU build without CUDA kernels is not a reason to skip."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if not gscnn_ops.has_cuda_kernels() and os.environ.get("GSCNN_EXPECT_CUDA_KERNELS") != "1":
        return "gscnn_ops was built without its CUDA kernels"
    return None


requires_cuda = pytest.mark.skipif(cuda_skip_reason() is not None, reason=str(cuda_skip_reason()))


# CI (.ci/run) sets GSCNN_REQUIRE_ORACLES=1: there a missing independent implementation that a
# test compares against (OpenCV's Canny, torchvision's ResNets, cmake for the CMake build) fails
# the test instead of silently skipping the only check of that code.
REQUIRE_ORACLES = os.environ.get("GSCNN_REQUIRE_ORACLES") == "1"


def oracle(module_name):
    """The module, or a skip (a failure under GSCNN_REQUIRE_ORACLES=1) when it is missing."""
    if REQUIRE_ORACLES:
        import importlib

        try:
            return importlib.import_module(module_name)
        except ImportError as e:
            pytest.fail(
                f"the test oracle '{module_name}' is missing ({e}); it is in the test "
                "extras: pip install -e '.[test]'"
            )
    return pytest.importorskip(module_name)


def missing_tool(reason):
    """Skip, or fail under GSCNN_REQUIRE_ORACLES=1."""
    if REQUIRE_ORACLES:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def emu():
    """The emulated GPU (tests/emulation.py): builds the test extension once per session."""
    import emulation

    emulation.load()
    return emulation
