"""The CUDA kernels' own code, run on the CPU.

csrc/common/gated_conv2d_blocks.h holds the bodies of the CUDA gated_conv2d kernels as per-thread
phases; the `_..._emulate_cuda` ops run them block by block and phase by phase, as a GPU with
__syncthreads() would. These tests pin the kernels' indexing, tiling, padding, grid-stride loops
and deterministic reduction against the reference on machines without a GPU. (Races and the
memory model are only checked by compute-sanitizer on a GPU: scripts/gpu_check.sh.)
"""

import pytest
import torch

from gscnn_ops import reference

ops = torch.ops.gscnn_ops

# (threads, blocks): a full warp, a block smaller than the image, an odd block size (padding in
# every tile), and grids too small for the input (grid-stride loops, several tiles per block).
LAUNCHES = [(32, 1024), (32, 1), (7, 3), (64, 2), (1, 5)]

SHAPES = [  # N, C, Cr, Cout, H, W
    (2, 5, 2, 7, 7, 9),    # Cout = 7: one group of four output channels plus three left over
    (1, 3, 1, 4, 1, 1),    # 1x1 image, batch 1
    (3, 9, 3, 2, 5, 13),   # Cout < 4: only the remainder loop
    (1, 1, 1, 1, 3, 2),    # single channels
    (2, 32, 1, 32, 6, 11),  # the shape stream's first GCL
]


def make(N, C, Cr, Cout, H, W, dtype=torch.float64, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    s, r = t(N, C, H, W), t(N, Cr, H, W)
    if channels_last:
        s, r = s.contiguous(memory_format=torch.channels_last), r.contiguous(memory_format=torch.channels_last)
    return s, r, t(1, C + Cr, 1, 1), t(1), t(Cout, C, 1, 1), t(Cout)


def reference_grads(s, r, gw, gb, w, b, grad_out, grad_alpha):
    inputs = [x.detach().clone().requires_grad_() for x in (s, r, gw, gb, w, b)]
    out, alpha = reference.gated_conv2d(*inputs)
    loss = (out * grad_out).sum() + ((alpha * grad_alpha).sum() if grad_alpha is not None else 0)
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threads,blocks", LAUNCHES)
def test_forward_kernel_matches_reference(shape, threads, blocks):
    s, r, gw, gb, w, b = make(*shape)
    out, alpha = ops._gated_conv2d_emulate_cuda(s, r, gw, gb, w, b, threads, blocks)
    ref_out, ref_alpha = reference.gated_conv2d(s, r, gw, gb, w, b)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alpha, ref_alpha, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threads,blocks", LAUNCHES)
@pytest.mark.parametrize("with_grad_alpha", [True, False])
def test_backward_kernel_matches_reference(shape, threads, blocks, with_grad_alpha):
    s, r, gw, gb, w, b = make(*shape)
    grad_out = torch.randn(shape[0], shape[3], shape[4], shape[5], dtype=torch.float64)
    grad_alpha = torch.randn(shape[0], 1, shape[4], shape[5], dtype=torch.float64) if with_grad_alpha else None
    got = ops._gated_conv2d_backward_emulate_cuda(grad_out, grad_alpha, s, r, gw, gb, w, threads, blocks)
    want = reference_grads(s, r, gw, gb, w, b, grad_out, grad_alpha)
    for name, g, e in zip(["s", "r", "gate_weight", "gate_bias", "weight", "bias"], got, want):
        torch.testing.assert_close(g, e, rtol=1e-11, atol=1e-11, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("threads,blocks", [(32, 2), (5, 3)])
def test_mlp_forward_kernel_matches_reference(threads, blocks):
    s, r, _, gb, w, b = make(2, 6, 2, 5, 4, 7)
    hw, hb, gw = torch.randn(8, 8, 1, 1, dtype=torch.float64), torch.randn(8, dtype=torch.float64), torch.randn(1, 8, 1, 1, dtype=torch.float64)
    out, alpha = ops._gated_conv2d_mlp_emulate_cuda(s, r, hw, hb, gw, gb, w, b, threads, blocks)
    ref_out, ref_alpha = reference.gated_conv2d_mlp(s, r, hw, hb, gw, gb, w, b)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alpha, ref_alpha, rtol=1e-12, atol=1e-12)


def test_strided_inputs_channels_last_and_views():
    # channels_last in, channels_last out; a channel slice and a stride-0 expanded r are read as is.
    s, r, gw, gb, w, b = make(2, 6, 1, 4, 5, 7, channels_last=True)
    out, alpha = ops._gated_conv2d_emulate_cuda(s, r, gw, gb, w, b, 32, 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference.gated_conv2d(s, r, gw, gb, w, b)[0], rtol=1e-12, atol=1e-12)

    big = torch.randn(2, 10, 5, 7, dtype=torch.float64)
    s_view = big[:, 2:8]                                     # non-contiguous channel slice
    r_expanded = torch.randn(1, 1, 5, 7, dtype=torch.float64).expand(2, 1, 5, 7)  # stride 0 on N
    out, _ = ops._gated_conv2d_emulate_cuda(s_view, r_expanded, gw, gb, w, b, 16, 3)
    torch.testing.assert_close(out, reference.gated_conv2d(s_view, r_expanded, gw, gb, w, b)[0],
                               rtol=1e-12, atol=1e-12)
    grad_out = torch.randn(2, 4, 5, 7, dtype=torch.float64).transpose(2, 3).contiguous().transpose(2, 3)
    got = ops._gated_conv2d_backward_emulate_cuda(grad_out, None, s_view, r_expanded, gw, gb, w, 16, 3)
    want = reference_grads(s_view, r_expanded, gw, gb, w, b, grad_out, None)
    for g, e in zip(got[:5], want[:5]):
        torch.testing.assert_close(g, e, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_reduced_precision_kernels_match_fast_cpu_kernels(dtype, tol):
    # Same accumulation type (float32) as the fast CPU kernels: results agree to rounding.
    s, r, gw, gb, w, b = make(2, 16, 1, 16, 9, 10, dtype=dtype)
    got = ops._gated_conv2d_emulate_cuda(s, r, gw, gb, w, b, 64, 2)
    want = ops.gated_conv2d(s, r, gw, gb, w, b)
    for g, e in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.float(), e.float(), rtol=tol, atol=tol)
    grad_out = torch.randn(2, 16, 9, 10, dtype=dtype)
    got = ops._gated_conv2d_backward_emulate_cuda(grad_out, None, s, r, gw, gb, w, 64, 2)
    want = ops.gated_conv2d_backward(grad_out, None, s, r, gw, gb, w)
    for g, e in zip(got, want):
        assert g.dtype == dtype
        scale = e.float().abs().max().clamp_min(1.0)
        torch.testing.assert_close(g.float() / scale, e.float() / scale, rtol=tol, atol=tol)


def test_backward_is_bitwise_reproducible():
    s, r, gw, gb, w, b = make(2, 8, 1, 8, 13, 17, dtype=torch.float32)
    grad_out = torch.randn(2, 8, 13, 17)
    first = ops._gated_conv2d_backward_emulate_cuda(grad_out, None, s, r, gw, gb, w, 32, 4)
    second = ops._gated_conv2d_backward_emulate_cuda(grad_out, None, s, r, gw, gb, w, 32, 4)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


def test_empty_batch():
    s, r, gw, gb, w, b = make(0, 3, 1, 2, 4, 4)
    out, alpha = ops._gated_conv2d_emulate_cuda(s, r, gw, gb, w, b, 32, 1)
    assert out.shape == (0, 2, 4, 4) and alpha.shape == (0, 1, 4, 4)
    grads = ops._gated_conv2d_backward_emulate_cuda(torch.empty(0, 2, 4, 4, dtype=torch.float64), None,
                                                    s, r, gw, gb, w, 32, 1)
    assert grads[4].shape == w.shape and torch.count_nonzero(grads[4]) == 0


def test_bad_launch_shape_is_rejected():
    s, r, gw, gb, w, b = make(1, 2, 1, 2, 3, 3)
    with pytest.raises(RuntimeError, match="_gated_conv2d_emulate_cuda: argument 'threads'"):
        ops._gated_conv2d_emulate_cuda(s, r, gw, gb, w, b, 0, 1)
    with pytest.raises(RuntimeError, match="argument 'blocks'"):
        ops._gated_conv2d_emulate_cuda(s, r, gw, gb, w, b, 32, 0)
