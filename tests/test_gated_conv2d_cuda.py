"""CUDA kernels: CUDA vs CPU, opcheck, streams, determinism (skipped without a GPU), and a check
that runs everywhere that the CUDA kernels were registered when the build says they were
compiled in."""

import os

import pytest
import torch
from torch.library import opcheck

import gscnn_ops
from gscnn_ops import reference

from conftest import TIGHT_TOL, assert_all_close, assert_low_precision_close, requires_cuda
from gated_conv2d_cases import (
    ARG_NAMES,
    forward_backward,
    leaves,
    make_inputs,
    make_mlp_inputs,
    upstream_grads,
)

OPS = ("gated_conv2d", "gated_conv2d_mlp", "gated_conv2d_backward")
GRAD_NAMES = tuple(f"grad_{n}" for n in ARG_NAMES)


# --- runs without a GPU -------------------------------------------------------------------------


def test_cuda_kernels_registered_when_built_with_cuda():
    info = gscnn_ops.build_info()
    expect = os.environ.get("GSCNN_EXPECT_CUDA_KERNELS") == "1"
    registered = {
        op: torch._C._dispatch_has_kernel_for_dispatch_key(f"gscnn_ops::{op}", "CUDA") for op in OPS
    }
    if info.get("with_cuda") or expect:
        assert info.get("with_cuda"), f"GSCNN_EXPECT_CUDA_KERNELS=1 but build_info is {info}"
        missing = [op for op, ok in registered.items() if not ok]
        assert not missing, f"built with CUDA but no CUDA kernel for {missing}"
        assert gscnn_ops.has_cuda_kernels()
    else:
        pytest.skip(f"gscnn_ops was built without CUDA kernels (build_info: {info})")


def test_cpu_kernels_registered_and_has_cuda_kernels_consistent():
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"gscnn_ops::{op}", "CPU"), op
    cuda = {
        torch._C._dispatch_has_kernel_for_dispatch_key(f"gscnn_ops::{op}", "CUDA") for op in OPS
    }
    assert len(cuda) == 1, "CUDA kernels registered for some ops only"
    assert gscnn_ops.has_cuda_kernels() == cuda.pop()


# --- needs a GPU --------------------------------------------------------------------------------

CUDA_SHAPES = [  # (N, C, Cr, Cout, H, W, channels_last)
    pytest.param((2, 5, 3, 4, 7, 13, False), id="7x13"),
    pytest.param((2, 5, 3, 4, 7, 13, True), id="7x13_channels_last"),
    pytest.param((1, 3, 1, 6, 1, 17, False), id="1x17"),
    pytest.param((3, 1, 1, 1, 1, 1, False), id="1x1_C1"),
    pytest.param((1, 64, 8, 16, 9, 11, True), id="C64_channels_last"),
    pytest.param((2, 32, 1, 16, 97, 131, False), id="large_97x131"),
    pytest.param((2, 32, 1, 16, 97, 131, True), id="large_97x131_channels_last"),
    # the shape stream's widths: their own programs (channels_last: the NHWC forward, its tiles
    # staged in shared memory; 97 x 131 leaves a partial last tile)
    pytest.param((2, 32, 1, 32, 97, 131, False), id="shape_stream_C32"),
    # an even pixel count: the half types' two-pixel forward
    pytest.param((2, 32, 1, 32, 96, 131, False), id="shape_stream_C32_even"),
    pytest.param((2, 32, 1, 32, 97, 131, True), id="shape_stream_C32_channels_last"),
    pytest.param((1, 8, 1, 8, 33, 65, True), id="shape_stream_C8_channels_last"),
]


@requires_cuda
@pytest.mark.parametrize("shape", CUDA_SHAPES)
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16", "bf16"]
)
def test_cuda_matches_cpu(dtype, shape):
    *dims, channels_last = shape
    inputs = make_inputs(*dims, dtype=dtype, channels_last=channels_last)
    x = leaves(inputs, device="cuda")
    out, alpha, grads = forward_backward(gscnn_ops.gated_conv2d, x)
    go, ga = upstream_grads(out.shape, alpha.shape, dtype)
    assert out.is_cuda and alpha.is_cuda and all(g.is_cuda for g in grads if g is not None)
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert grads[0].is_contiguous(memory_format=torch.channels_last)
    if dtype == torch.float32:
        # Against the CPU kernel on the same inputs.
        y = leaves(inputs)
        rout, ralpha, rgrads = forward_backward(gscnn_ops.gated_conv2d, y, go, ga)
        tol = dict(rtol=1e-4, atol=1e-4) if dims[-1] * dims[-2] > 1000 else TIGHT_TOL[dtype]
        assert_all_close([out.cpu(), alpha.cpu()], [rout, ralpha], ["out", "alpha"], **tol)
        assert_all_close(
            [g.cpu() if g is not None else None for g in grads], rgrads, GRAD_NAMES, **tol
        )
    else:
        # Against float64 math on the same rounded inputs (see LOW_PRECISION_EPS).
        y = leaves(inputs, dtype=torch.float64)
        rout, ralpha, rgrads = forward_backward(reference.gated_conv2d, y, go.double(), ga.double())
        assert_low_precision_close(out.cpu(), rout, dtype, "out")
        assert_low_precision_close(alpha.cpu(), ralpha, dtype, "alpha")
        for g, rg, name in zip(grads, rgrads, GRAD_NAMES):
            assert_low_precision_close(g.cpu(), rg, dtype, name)


@requires_cuda
def test_cuda_float64_matches_reference():
    inputs = make_inputs(2, 5, 3, 4, 7, 13)
    out, alpha, grads = forward_backward(gscnn_ops.gated_conv2d, leaves(inputs, device="cuda"))
    go, ga = upstream_grads(out.shape, alpha.shape, torch.float64)
    rout, ralpha, rgrads = forward_backward(reference.gated_conv2d, leaves(inputs), go, ga)
    assert_all_close(
        [out.cpu(), alpha.cpu()], [rout, ralpha], ["out", "alpha"], **TIGHT_TOL[torch.float64]
    )
    assert_all_close([g.cpu() for g in grads], rgrads, GRAD_NAMES, **TIGHT_TOL[torch.float64])


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
def test_cuda_mlp_matches_cpu(dtype):
    inputs = make_mlp_inputs(2, 5, 3, 6, 4, 7, 13, dtype=dtype)
    out, alpha = gscnn_ops.gated_conv2d_mlp(*[t.cuda() for t in inputs])
    rout, ralpha = reference.gated_conv2d_mlp(*[t.double() for t in inputs])
    if dtype == torch.float32:
        assert_all_close(
            [out.cpu().double(), alpha.cpu().double()],
            [rout, ralpha],
            ["out", "alpha"],
            rtol=1e-5,
            atol=1e-5,
        )
    else:
        assert_low_precision_close(out.cpu(), rout, dtype, "out")
        assert_low_precision_close(alpha.cpu(), ralpha, dtype, "alpha")


@requires_cuda
def test_cuda_empty_batch():
    inputs = leaves(make_inputs(0, 5, 3, 4, 7, 13, dtype=torch.float32), device="cuda")
    out, alpha, grads = forward_backward(gscnn_ops.gated_conv2d, inputs)
    assert out.shape == (0, 4, 7, 13) and alpha.shape == (0, 1, 7, 13)
    assert all(torch.count_nonzero(g) == 0 for g in grads[2:])


@requires_cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_opcheck(channels_last):
    args = make_inputs(
        2,
        3,
        2,
        4,
        5,
        6,
        dtype=torch.float32,
        device="cuda",
        channels_last=channels_last,
        requires_grad=True,
    )
    opcheck(torch.ops.gscnn_ops.gated_conv2d.default, tuple(args))
    mlp_args = make_mlp_inputs(
        2,
        3,
        2,
        5,
        4,
        5,
        6,
        dtype=torch.float32,
        device="cuda",
        channels_last=channels_last,
        requires_grad=True,
    )
    opcheck(torch.ops.gscnn_ops.gated_conv2d_mlp.default, tuple(mlp_args))
    s, r, gw, gb, w, _ = [t.detach() if t is not None else None for t in args]
    go, ga = upstream_grads((2, 4, 5, 6), (2, 1, 5, 6), torch.float32, device="cuda")
    opcheck(torch.ops.gscnn_ops.gated_conv2d_backward.default, (go, ga, s, r, gw, gb, w))


@requires_cuda
def test_cuda_non_default_stream():
    inputs = make_inputs(2, 32, 1, 16, 97, 131, dtype=torch.float32, device="cuda")
    expected = forward_backward(gscnn_ops.gated_conv2d, leaves(inputs))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        x = leaves(inputs)
        go, ga = upstream_grads(expected[0].shape, expected[1].shape, torch.float32, "cuda")
        got = forward_backward(gscnn_ops.gated_conv2d, x, go, ga)
    torch.cuda.current_stream().wait_stream(side)
    side.synchronize()
    for a, b, name in zip(
        [got[0], got[1], *got[2]],
        [expected[0], expected[1], *expected[2]],
        ("out", "alpha") + GRAD_NAMES,
    ):
        assert torch.equal(a, b), name


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_cuda_backward_deterministic(dtype):
    inputs = make_inputs(2, 32, 1, 16, 97, 131, dtype=dtype, device="cuda")
    first = forward_backward(gscnn_ops.gated_conv2d, leaves(inputs))[2]
    second = forward_backward(gscnn_ops.gated_conv2d, leaves(inputs))[2]
    for a, b, name in zip(first, second, GRAD_NAMES):
        assert torch.equal(a, b), name


@requires_cuda
def test_cuda_autocast_float16():
    inputs = make_inputs(2, 5, 3, 4, 7, 13, dtype=torch.float32, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        out, alpha = gscnn_ops.gated_conv2d(*inputs)
    assert out.dtype == alpha.dtype == torch.float16
    rout, ralpha = reference.gated_conv2d(*[t.half().double().cpu() for t in inputs])
    assert_low_precision_close(out.cpu(), rout, torch.float16, "out")
    assert_low_precision_close(alpha.cpu(), ralpha, torch.float16, "alpha")


@requires_cuda
def test_cuda_module_mlp_eval_matches_cpu():
    torch.manual_seed(0)
    module = gscnn_ops.GatedConv2d(5, 4, 3, gate="mlp", bias=True)
    s, r = torch.randn(2, 5, 7, 13), torch.randn(2, 3, 7, 13)
    module.train()
    module(s + 1, r - 1)
    module.eval()
    with torch.no_grad():
        expected = module(s, r)
        got = module.cuda()(s.cuda(), r.cuda())
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-5)


@requires_cuda
def test_cuda_layers_too_wide_for_shared_memory_and_large_sigma_run():
    # Sizes the old kernels refused on CUDA only: C + Cr > ~1800 (forward, backward) and sigma
    # above 8 (the dual-task backward). Now the direct / global-scratch programs run them.
    inputs = make_inputs(1, 1900, 1, 64, 3, 5)
    cuda = [t.cuda() for t in inputs]
    for a, b in zip(gscnn_ops.gated_conv2d(*cuda), gscnn_ops.gated_conv2d(*inputs)):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-9)
    go = torch.randn(1, 64, 3, 5, dtype=torch.float64)
    got = torch.ops.gscnn_ops.gated_conv2d_backward(go.cuda(), None, *cuda[:5])
    want = torch.ops.gscnn_ops.gated_conv2d_backward(go, None, *inputs[:5])
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-9)
    prob = torch.softmax(torch.randn(1, 3, 40, 50, dtype=torch.float64), 1)
    target = torch.randint(0, 3, (1, 40, 50))
    p_cpu, p_gpu = prob.clone().requires_grad_(), prob.cuda().requires_grad_()
    loss_cpu = gscnn_ops.dual_task_loss(p_cpu, target, sigma=10.0)
    loss_gpu = gscnn_ops.dual_task_loss(p_gpu, target.cuda(), sigma=10.0)
    loss_cpu.backward()
    loss_gpu.backward()
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu)
    torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad)
