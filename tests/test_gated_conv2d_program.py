"""The CUDA gated_conv2d kernels' own block programs, run on the CPU by the emulated GPU
(tests/emulation.py): the launches each GPU of the table gets from the op's own selection, forced
launches that small inputs need to reach partial tiles, odd block sizes, grid-stride loops and
the global-memory variants, against the float64 reference, with the race detector on."""

import pytest
import torch

from gscnn_ops import reference

from conftest import LOW_PRECISION_EPS
from gated_conv2d_cases import make_inputs, make_mlp_inputs, upstream_grads

ARGS = ("s", "r", "gate_weight", "gate_bias", "weight", "bias")

SHAPES = [  # N, C, Cr, Cout, H, W
    (2, 5, 2, 7, 7, 9),  # Cout = 7: one group of four output channels plus three left over
    (1, 3, 1, 4, 1, 1),  # 1x1 image, batch 1
    (3, 9, 3, 2, 5, 13),  # Cout < 4: only the remainder loop
    (1, 1, 1, 1, 3, 2),  # single channels
    (2, 32, 1, 32, 6, 11),  # the shape stream's first GCL
]

# (threads, blocks, memory): a full warp, a block smaller than the image, an odd block size
# (padding in every tile), grids too small for the input (grid-stride loops, several tiles per
# block), one thread; memory 1 = the direct forward / global-scratch backward.
FORCED = [(32, 1024, -1), (32, 1, -1), (7, 3, -1), (64, 2, 1), (1, 5, -1), (13, 2, 1)]


def ops(emu):
    return torch.ops.gscnn_testing


def specialised(shape):
    """Whether forward and backward run the programs for the shape stream's layers (C = C_out in
    8, 16, 32, linear gate; the backward also needs Cr <= 8), which stage their parameters in
    shared memory."""
    _, C, _, Cout, _, _ = shape
    return C == Cout and C in (8, 16, 32)


def reference_grads(inputs, grad_out, grad_alpha):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out, alpha = reference.gated_conv2d(*leaves)
    loss = (out * grad_out).sum() + ((alpha * grad_alpha).sum() if grad_alpha is not None else 0)
    return torch.autograd.grad(loss, leaves)


def check_forward(emu, inputs, gpu, force=(), tol=1e-12):
    out, alpha = ops(emu).gated_conv2d(*inputs, gpu, list(force))
    ref_out, ref_alpha = reference.gated_conv2d(*inputs)
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    torch.testing.assert_close(alpha, ref_alpha, rtol=tol, atol=tol)


def check_backward(emu, inputs, gpu, force=(), with_grad_alpha=True, tol=1e-11, grads_like_s=False):
    """grads_like_s: the upstream gradients in s's memory format (channels_last for the NHWC
    programs, as autograd hands them to a channels_last layer)."""
    s, r, gw, gb, w, b = inputs
    go, ga = upstream_grads(
        reference.gated_conv2d(*inputs)[0].shape, (s.shape[0], 1) + s.shape[2:], s.dtype
    )
    if grads_like_s:
        go, ga = torch.empty_like(s).copy_(go), torch.empty_like(s[:, :1]).copy_(ga)
    ga = ga if with_grad_alpha else None
    got = ops(emu).gated_conv2d_backward(go, ga, s, r, gw, gb, w, gpu, list(force))
    want = reference_grads(inputs, go, ga)
    for name, g, e in zip(ARGS, got, want):
        torch.testing.assert_close(g, e, rtol=tol, atol=tol, msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gpu", ["sm_75", "sm_86", "sm_90", "sm_120"])
def test_production_launches_match_reference(emu, shape, gpu):
    inputs = make_inputs(*shape)
    check_forward(emu, inputs, emu.gpu(gpu))
    check_backward(emu, inputs, emu.gpu(gpu))
    assert emu.last_launch()["threads"] >= 64  # never the single-warp blocks of old


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threads,blocks,memory", FORCED)
def test_forced_launches_match_reference(emu, shape, threads, blocks, memory):
    inputs = make_inputs(*shape)
    force = emu.launch(threads, blocks, memory=memory)
    check_forward(emu, inputs, emu.gpu(), force)
    if not specialised(shape):  # the shape stream's layers have their own program, no variants
        assert emu.last_launch()["variant"] == (1 if memory == 1 else 0)
    check_backward(emu, inputs, emu.gpu(), force, with_grad_alpha=blocks % 2 == 0)
    if not specialised(shape):  # the specialised backward has no global-memory variant
        assert (emu.last_launch()["scratch_bytes"] > 0) == (memory == 1)


@pytest.mark.parametrize("C", [8, 16, 32, 12])
@pytest.mark.parametrize("channels_last", [False, True])
def test_shape_stream_widths_run_their_own_program(emu, C, channels_last):
    inputs = make_inputs(2, C, 2, C, 9, 13, channels_last=channels_last)
    for force in ([], emu.launch(7, 3), emu.launch(64, 1)):
        check_forward(emu, inputs, emu.gpu(), force)
        # NCHW: one barrier (parameters staged); NHWC: two per tile (after the load, which
        # also orders the parameters' staging, and after the compute phase); generic: none
        launch = emu.last_launch()
        tiles = -(-2 * 9 * 13 // (launch["threads"] * launch["blocks"]))
        nhwc = channels_last and C != 12
        assert launch["barriers"] == (2 * tiles if nhwc else 1 if C != 12 else 0)
    # backward: the production launch (128 threads, one 128-pixel tile per block here: padding),
    # 64 threads over several tiles per block, odd blocks (work items spread over threads,
    # scalar tails), one thread, 256 threads; with and without the gradient of alpha
    for force in ([], emu.launch(64, 1), emu.launch(7, 3), emu.launch(1, 2), emu.launch(256, 1)):
        for with_ga in (True, False):
            check_backward(emu, inputs, emu.gpu(), force, with_grad_alpha=with_ga)
        # generic program: 2 barriers per tile; specialised: 1 + 2 per tile + 1
        tiles = -(-2 * 9 * 13 // emu.last_launch()["threads"])
        per_block = -(-tiles // emu.last_launch()["blocks"])
        generic = 2 * per_block - 1
        assert emu.last_launch()["barriers"] == (generic if C == 12 else 2 * per_block + 1)
    no_bias = inputs[:5] + [None]
    check_forward(emu, no_bias, emu.gpu())
    # the MLP gate keeps the generic program
    mlp = make_mlp_inputs(1, C, 1, 6, C, 4, 5)
    out, alpha = ops(emu).gated_conv2d_mlp(*mlp, emu.gpu())
    torch.testing.assert_close(out, reference.gated_conv2d_mlp(*mlp)[0], rtol=1e-12, atol=1e-12)
    assert emu.last_launch()["barriers"] == 0


# channels_last inputs of the shape stream's widths: the NHWC program (tiles of T pixels staged in
# shared memory as 16-byte chunks). Partial last tiles (P = 2 * 9 * 13 = 234, 2 * 1 * 1 = 2), odd
# and single-thread blocks, a grid too small for the input (several tiles per block), Cr = 3.
@pytest.mark.parametrize("C", [8, 16, 32])
@pytest.mark.parametrize("hw", [(9, 13), (1, 1)], ids=["9x13", "1x1"])
def test_nhwc_forward_program(emu, C, hw):
    for Cr in (1, 3):
        inputs = make_inputs(2, C, Cr, C, *hw, channels_last=True)
        forced = [emu.launch(7, 3), emu.launch(1, 5), emu.launch(32, 1), emu.launch(256, 2)]
        for force in [[]] + forced:
            check_forward(emu, inputs, emu.gpu(), force)
            out, alpha = ops(emu).gated_conv2d(*inputs, emu.gpu(), force)
            launch = emu.last_launch()
            tiles = -(-2 * hw[0] * hw[1] // (launch["threads"] * launch["blocks"]))
            nhwc = hw != (1, 1)  # 1 x 1 images are contiguous too: the plain program
            assert launch["barriers"] == (2 * tiles if nhwc else 1), (force, launch)
            if nhwc:
                assert out.is_contiguous(memory_format=torch.channels_last)
                assert alpha.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("C", [8, 32])
def test_nhwc_forward_program_narrow_types(emu, dtype, C):
    # 4 (float32) or 8 (half types) channels per chunk: at C = 8 in half types a pixel is one
    # chunk (rows without padding). Against the float64 reference of the same rounded inputs.
    inputs = make_inputs(2, C, 1, C, 5, 11, dtype=dtype, channels_last=True)
    inputs64 = [t.double() for t in inputs]
    eps = LOW_PRECISION_EPS.get(dtype, 1e-6)
    for force in ([], emu.launch(7, 3)):
        got = ops(emu).gated_conv2d(*inputs, emu.gpu(), force)
        assert emu.last_launch()["barriers"] > 1  # the NHWC program
        for g, e in zip(got, reference.gated_conv2d(*inputs64)):
            assert g.dtype == dtype
            torch.testing.assert_close(g.double(), e, rtol=eps, atol=eps * e.abs().max().item())


@pytest.mark.parametrize("C", [8, 16, 32])
def test_nhwc_backward_program(emu, C):
    # s and the upstream gradients channels_last: the NHWC backward (s and g staged as
    # PixelTiles, ds stored from them). The production launch (one partial tile per block here),
    # several tiles per block, odd blocks, one thread, 256 threads; with and without the gradient
    # of alpha; Cr = 1 and 3. Same barriers as the NCHW program, more shared memory.
    for Cr in (1, 3):
        inputs = make_inputs(2, C, Cr, C, 9, 13, channels_last=True)
        forced = [emu.launch(64, 1), emu.launch(7, 3), emu.launch(1, 2), emu.launch(256, 1)]
        for force in [[]] + forced:
            for with_ga in (True, False):
                check_backward(emu, inputs, emu.gpu(), force, with_ga, grads_like_s=True)
            nhwc = emu.last_launch()
            check_backward(emu, inputs, emu.gpu(), force)  # NCHW gradients: the strided program
            strided = emu.last_launch()
            tiles = -(-2 * 9 * 13 // nhwc["threads"])
            per_block = -(-tiles // nhwc["blocks"])
            assert nhwc["barriers"] == strided["barriers"] == 2 * per_block + 1
            assert nhwc["shared_bytes"] > strided["shared_bytes"], (force, nhwc, strided)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nhwc_backward_program_half_types(emu, dtype):
    # Against the float64 reference of the same rounded inputs, as the NCHW half-precision test.
    inputs = make_inputs(2, 16, 1, 16, 9, 10, dtype=dtype, channels_last=True)
    inputs64 = [t.double() for t in inputs]
    eps = LOW_PRECISION_EPS[dtype]
    go, _ = upstream_grads((2, 16, 9, 10), (2, 1, 9, 10), dtype)
    go = go.contiguous(memory_format=torch.channels_last)
    got = ops(emu).gated_conv2d_backward(go, None, *inputs[:5], emu.gpu())
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    want = reference_grads(inputs64, go.double(), None)
    for name, g, e in zip(ARGS, got, want):
        torch.testing.assert_close(
            g.double(),
            e,
            rtol=eps,
            atol=eps * e.abs().max().item(),
            msg=lambda m, n=name: f"{n}: {m}",
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_two_pixel_forward_for_half_types_at_c32(emu, dtype):
    # Contiguous half-type input at C = 32 with an even number of pixels per image: two pixels
    # per thread (variant 2), against the float64 reference of the same rounded inputs, and
    # bitwise equal to the one-pixel programs (the same sums in the same order): the NHWC program
    # on the channels_last copy. An odd image (5 x 11) takes the one-pixel NCHW program.
    eps = LOW_PRECISION_EPS[dtype]
    for hw, pairs in (((6, 11), True), ((5, 11), False), ((1, 2), True)):
        for Cr in (1, 3):
            inputs = make_inputs(2, 32, Cr, 32, *hw, dtype=dtype)
            inputs64 = [t.double() for t in inputs]
            for force in ([], emu.launch(7, 3), emu.launch(1, 5)):
                got = ops(emu).gated_conv2d(*inputs, emu.gpu(), force)
                launch = emu.last_launch()
                assert (launch["variant"] == 2) == pairs and launch["barriers"] == 1, launch
                for g, e in zip(got, reference.gated_conv2d(*inputs64)):
                    torch.testing.assert_close(
                        g.double(), e, rtol=eps, atol=eps * e.abs().max().item()
                    )
                cl = [inputs[0].contiguous(memory_format=torch.channels_last)] + inputs[1:]
                one_pixel = ops(emu).gated_conv2d(*cl, emu.gpu(), force)
                for g, o in zip(got, one_pixel):
                    assert torch.equal(g, o)


def test_nhwc_misaligned_input_takes_the_strided_program(emu):
    # A channels_last view starting 8 bytes into its storage: no 16-byte chunks there, so the
    # strided program reads it (one barrier), with the same results.
    s, r, gw, gb, w, b = make_inputs(2, 8, 1, 8, 5, 7)
    flat = torch.empty(s.numel() + 1, dtype=s.dtype)
    shifted = flat[1:].view(2, 5, 7, 8).permute(0, 3, 1, 2)
    shifted.copy_(s)
    assert shifted.is_contiguous(memory_format=torch.channels_last)
    assert shifted.data_ptr() % 16 != 0
    check_forward(emu, [shifted, r, gw, gb, w, b], emu.gpu())
    assert emu.last_launch()["barriers"] == 1


def test_mlp_forward(emu):
    inputs = make_mlp_inputs(2, 6, 2, 8, 5, 4, 7)
    for force in ([], emu.launch(5, 3), emu.launch(32, 2, memory=1)):
        out, alpha = ops(emu).gated_conv2d_mlp(*inputs, emu.gpu(), force)
        ref_out, ref_alpha = reference.gated_conv2d_mlp(*inputs)
        torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alpha, ref_alpha, rtol=1e-12, atol=1e-12)


def test_strided_inputs_channels_last_and_views(emu):
    inputs = make_inputs(2, 6, 1, 4, 5, 7, channels_last=True)
    out, _ = ops(emu).gated_conv2d(*inputs, emu.gpu())
    assert out.is_contiguous(memory_format=torch.channels_last)
    check_forward(emu, inputs, emu.gpu())
    s, r, gw, gb, w, b = make_inputs(2, 6, 1, 4, 5, 7)
    s_view = torch.randn(2, 10, 5, 7, dtype=torch.float64)[:, 2:8]  # channel slice
    r_expanded = torch.randn(1, 1, 5, 7, dtype=torch.float64).expand(2, 1, 5, 7)  # stride 0 on N
    strided = [s_view, r_expanded, gw, gb, w, b]
    check_forward(emu, strided, emu.gpu(), emu.launch(16, 3))
    check_backward(emu, strided, emu.gpu(), emu.launch(16, 3))


@pytest.mark.parametrize("gpu", ["sm_75", "sm_90"])
def test_layers_too_wide_for_shared_memory_run_from_global_memory(emu, gpu):
    # C + Cr = 2001 channels: no block size stages them in shared memory, so the forward reads
    # them where it uses them; the backward's tiles (Cout + C + Cr rows) go to global scratch.
    inputs = make_inputs(1, 2000, 1, 3, 2, 3)
    check_forward(emu, inputs, emu.gpu(gpu), tol=1e-11)
    assert emu.last_launch()["variant"] == 1 and emu.last_launch()["shared_bytes"] == 0
    inputs = make_inputs(1, 300, 1, 300, 2, 3)
    check_backward(emu, inputs, emu.gpu(gpu), tol=1e-10)
    assert emu.last_launch()["scratch_bytes"] > 0 and emu.last_launch()["shared_bytes"] == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_against_float64_reference(emu, dtype):
    # Values as the model sees them (make_inputs keeps the gate logits O(1): alpha is neither
    # saturated nor constant). The program reads half values, accumulates in float32 and rounds
    # each result once: within one epsilon of the dtype of the float64 reference computed from
    # the same rounded inputs (conftest.LOW_PRECISION_EPS), as documented in the README.
    inputs = make_inputs(2, 16, 1, 16, 9, 10, dtype=dtype)
    inputs64 = [t.double() for t in inputs]
    eps = LOW_PRECISION_EPS[dtype]
    got = ops(emu).gated_conv2d(*inputs, emu.gpu())
    want = reference.gated_conv2d(*inputs64)
    for g, e in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), e, rtol=eps, atol=eps * e.abs().max().item())
    go, _ = upstream_grads((2, 16, 9, 10), (2, 1, 9, 10), dtype)
    got = ops(emu).gated_conv2d_backward(go, None, *inputs[:5], emu.gpu())
    want = reference_grads(inputs64, go.double(), None)
    for name, g, e in zip(ARGS, got, want):
        assert g.dtype == dtype
        # Parameter gradients are sums over all 180 pixels, accumulated in float32 and rounded once.
        torch.testing.assert_close(
            g.double(),
            e,
            rtol=eps,
            atol=eps * e.abs().max().item(),
            msg=lambda m, n=name: f"grad {n}: {m}",
        )


def test_backward_is_bitwise_reproducible(emu):
    inputs = make_inputs(2, 8, 1, 8, 13, 17, dtype=torch.float32)
    go = torch.randn(2, 8, 13, 17)
    first = ops(emu).gated_conv2d_backward(go, None, *inputs[:5], emu.gpu(), emu.launch(32, 4))
    second = ops(emu).gated_conv2d_backward(go, None, *inputs[:5], emu.gpu(), emu.launch(32, 4))
    for a, c in zip(first, second):
        assert torch.equal(a, c)


def test_empty_batch(emu):
    inputs = make_inputs(0, 3, 1, 2, 4, 4)
    out, alpha = ops(emu).gated_conv2d(*inputs, emu.gpu())
    assert out.shape == (0, 2, 4, 4) and alpha.shape == (0, 1, 4, 4)
    grads = ops(emu).gated_conv2d_backward(
        torch.empty(0, 2, 4, 4, dtype=torch.float64), None, *inputs[:5], emu.gpu()
    )
    assert grads[4].shape == (2, 3, 1, 1) and torch.count_nonzero(grads[4]) == 0


def test_bad_forced_launch_is_rejected(emu):
    inputs = make_inputs(1, 2, 1, 2, 3, 3)
    with pytest.raises(RuntimeError, match="bad forced launch"):
        ops(emu).gated_conv2d(*inputs, emu.gpu(), emu.launch(2000, 1))
    with pytest.raises(RuntimeError, match="'gpu' must hold 11 limits, got 3"):
        ops(emu).gated_conv2d(*inputs, [1, 2, 3])
    with pytest.raises(RuntimeError, match="'force' must be empty or"):
        ops(emu).gated_conv2d(*inputs, emu.gpu(), [32])
