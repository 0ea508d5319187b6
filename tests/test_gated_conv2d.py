"""gscnn_ops.gated_conv2d (and gated_conv2d_mlp) against the pure-PyTorch reference: values,
gradients, layouts, torch.library.opcheck, torch.compile, determinism and autocast (CPU)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.library import opcheck

import gscnn_ops
from gscnn_ops import reference

from conftest import TIGHT_TOL, assert_all_close, assert_low_precision_close
from gated_conv2d_cases import (
    ARG_NAMES,
    LOSS_USES,
    MLP_ARG_NAMES,
    forward_backward,
    leaves,
    make_inputs,
    make_mlp_inputs,
    upstream_grads,
)
from op_checks import OpChecks

OUT_NAMES = ("out", "alpha")
GRAD_NAMES = tuple(f"grad_{n}" for n in ARG_NAMES)


def check_against_reference(inputs, use="out_and_alpha", tol=None):
    """Forward and all input gradients of the op vs the reference, on leaf copies of inputs."""
    dtype = inputs[0].dtype
    tol = tol or TIGHT_TOL[dtype]
    x, y = leaves(inputs), leaves(inputs)
    out, alpha, grads = forward_backward(gscnn_ops.gated_conv2d, x, use=use)
    go, ga = upstream_grads(out.shape, alpha.shape, dtype)
    rout, ralpha, rgrads = forward_backward(reference.gated_conv2d, y, go, ga, use=use)
    assert out.shape == rout.shape and alpha.shape == ralpha.shape
    assert_all_close([out, alpha], [rout, ralpha], OUT_NAMES, **tol)
    assert_all_close(grads, rgrads, GRAD_NAMES, **tol)
    return out, alpha, grads


# --- values and gradients -----------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("use", LOSS_USES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_matches_reference(dtype, use, bias):
    inputs = make_inputs(2, 5, 3, 4, 7, 13, dtype=dtype, bias=bias)
    _, _, grads = check_against_reference(inputs, use=use)
    if use == "alpha_only":
        # alpha does not depend on weight and bias: their gradients must be exactly zero.
        assert torch.count_nonzero(grads[4]) == 0
        if bias:
            assert torch.count_nonzero(grads[5]) == 0
    # The gate is live: its gradients are not all zero whatever the loss uses.
    assert torch.count_nonzero(grads[2]) > 0 and torch.count_nonzero(grads[3]) > 0


SHAPES = [  # (N, C, Cr, Cout, H, W)
    pytest.param((1, 4, 2, 4, 5, 6), id="batch1"),
    pytest.param((3, 4, 1, 2, 1, 1), id="1x1_image"),
    pytest.param((2, 3, 2, 5, 7, 13), id="7x13"),
    pytest.param((2, 3, 1, 3, 1, 17), id="1x17"),
    pytest.param((2, 1, 1, 1, 4, 5), id="C1_Cr1_Cout1"),
    pytest.param((2, 1, 8, 6, 3, 5), id="C1_Cr8"),
    pytest.param((1, 64, 8, 16, 9, 11), id="C64_Cr8"),
    pytest.param((2, 17, 5, 3, 6, 7), id="C17_Cout3"),
    pytest.param((1, 2, 3, 33, 5, 5), id="Cout33"),
    pytest.param((2, 8, 2, 8, 9, 15), id="tiles_cross_rows"),  # 135 pixels: 3 tiles per image
]


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_float64(shape):
    check_against_reference(make_inputs(*shape, dtype=torch.float64))


@pytest.mark.parametrize("shape", [SHAPES[2], SHAPES[6]])
def test_shapes_float32(shape):
    check_against_reference(make_inputs(*shape, dtype=torch.float32))


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2], SHAPES[6]])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_low_precision(dtype, shape):
    inputs = make_inputs(*shape, dtype=dtype)
    x = leaves(inputs)
    out, alpha, grads = forward_backward(gscnn_ops.gated_conv2d, x)
    go, ga = upstream_grads(out.shape, alpha.shape, dtype)
    # Reference: float64 math on exactly the rounded inputs and upstream gradients.
    y = leaves(inputs, dtype=torch.float64)
    rout, ralpha, rgrads = forward_backward(reference.gated_conv2d, y, go.double(), ga.double())
    assert_low_precision_close(out, rout, dtype, "out")
    assert_low_precision_close(alpha, ralpha, dtype, "alpha")
    for g, rg, name in zip(grads, rgrads, GRAD_NAMES):
        assert g.dtype == dtype
        assert_low_precision_close(g, rg, dtype, name)


def test_saturated_gate_is_finite():
    s, r, gw, gb, w, b = make_inputs(2, 3, 1, 2, 4, 5)
    for logit_bias, expected_alpha in ((1000.0, 1.0), (-1000.0, 0.0)):
        x = leaves([s, r, gw, torch.tensor([logit_bias], dtype=s.dtype), w, b])
        out, alpha, grads = forward_backward(gscnn_ops.gated_conv2d, x)
        assert torch.all(alpha == expected_alpha)
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(g).all() for g in grads)
        torch.testing.assert_close(out, torch.nn.functional.conv2d(s * (1 + expected_alpha), w, b))


# --- gradcheck ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("outputs", ["both", "out", "alpha"])
def test_gradcheck(bias, outputs):
    inputs = make_inputs(2, 3, 2, 4, 3, 5, bias=bias, requires_grad=True)

    def fn(*args):
        out, alpha = gscnn_ops.gated_conv2d(*args)
        return {"both": (out, alpha), "out": out, "alpha": alpha}[outputs]

    assert torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_channels_last():
    inputs = make_inputs(2, 3, 2, 4, 3, 5, channels_last=True, requires_grad=True)
    assert torch.autograd.gradcheck(gscnn_ops.gated_conv2d, tuple(inputs), atol=1e-8)


@pytest.mark.parametrize("outputs", ["both", "alpha"])
def test_gradcheck_mlp(outputs):
    inputs = make_mlp_inputs(2, 3, 2, 4, 3, 3, 4, requires_grad=True)

    def fn(*args):
        out, alpha = gscnn_ops.gated_conv2d_mlp(*args)
        return (out, alpha) if outputs == "both" else alpha

    assert torch.autograd.gradcheck(fn, tuple(inputs), atol=1e-8)


# --- opcheck ------------------------------------------------------------------------------------


def _opcheck_samples(make, *shape_and_kw):
    base = make(*shape_and_kw)
    samples = {
        "nchw": base,
        "no_bias": base[:-1] + [None],
        "channels_last": make(*shape_and_kw, channels_last=True),
        "requires_grad": make(*shape_and_kw, requires_grad=True),
        "channels_last_requires_grad": make(*shape_and_kw, channels_last=True, requires_grad=True),
        "float32_non_contiguous": [t.float() for t in base],
    }
    samples["float32_non_contiguous"][0] = samples["float32_non_contiguous"][0].transpose(2, 3)
    samples["float32_non_contiguous"][1] = samples["float32_non_contiguous"][1].transpose(2, 3)
    return samples


@pytest.mark.parametrize(
    "sample",
    [
        "nchw",
        "no_bias",
        "channels_last",
        "requires_grad",
        "channels_last_requires_grad",
        "float32_non_contiguous",
    ],
)
def test_opcheck_gated_conv2d(sample):
    args = _opcheck_samples(make_inputs, 2, 3, 2, 4, 5, 6)[sample]
    opcheck(torch.ops.gscnn_ops.gated_conv2d.default, tuple(args))


@pytest.mark.parametrize(
    "sample",
    [
        "nchw",
        "no_bias",
        "channels_last",
        "requires_grad",
        "channels_last_requires_grad",
        "float32_non_contiguous",
    ],
)
def test_opcheck_gated_conv2d_mlp(sample):
    args = _opcheck_samples(make_mlp_inputs, 2, 3, 2, 5, 4, 5, 6)[sample]
    opcheck(torch.ops.gscnn_ops.gated_conv2d_mlp.default, tuple(args))


@pytest.mark.parametrize("with_grad_alpha", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_gated_conv2d_backward(with_grad_alpha, channels_last):
    s, r, gw, gb, w, _ = make_inputs(2, 3, 2, 4, 5, 6, channels_last=channels_last)
    go, ga = upstream_grads((2, 4, 5, 6), (2, 1, 5, 6), s.dtype)
    opcheck(
        torch.ops.gscnn_ops.gated_conv2d_backward.default,
        (go, ga if with_grad_alpha else None, s, r, gw, gb, w),
    )


# --- torch.compile ------------------------------------------------------------------------------


def _model_step(s, r, gw, gb, w, b):
    out, alpha = gscnn_ops.gated_conv2d(s, r, gw, gb, w, b)
    return torch.relu(out) * 2.0, alpha + 1.0


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_torch_compile_fullgraph(channels_last):
    torch._dynamo.reset()
    compiled = torch.compile(_model_step, fullgraph=True)
    inputs = make_inputs(2, 5, 3, 4, 7, 13, dtype=torch.float32, channels_last=channels_last)
    x, y = leaves(inputs), leaves(inputs)
    out_c, alpha_c, grads_c = forward_backward(compiled, x)
    go, ga = upstream_grads(out_c.shape, alpha_c.shape, out_c.dtype)
    out_e, alpha_e, grads_e = forward_backward(_model_step, y, go, ga)
    assert out_c.stride() == out_e.stride()
    assert_all_close([out_c, alpha_c], [out_e, alpha_e], OUT_NAMES, rtol=1e-6, atol=1e-6)
    assert_all_close(grads_c, grads_e, GRAD_NAMES, rtol=1e-6, atol=1e-6)


# --- layouts ------------------------------------------------------------------------------------


def test_channels_last():
    inputs = make_inputs(2, 5, 3, 4, 7, 13, channels_last=True)
    out, alpha, grads = check_against_reference(inputs)
    cl = torch.channels_last
    assert out.is_contiguous(memory_format=cl) and not out.is_contiguous()
    assert alpha.is_contiguous(memory_format=cl)
    assert grads[0].is_contiguous(memory_format=cl) and grads[1].is_contiguous(memory_format=cl)


# The CPU kernels store whole tiles (128 pixels) of float32 that start on a cache line with
# streaming stores and everything else with plain ones; the backward's partial sums are rows of 16
# consecutive tiles. 2 images of 48 x 64: 24 whole aligned tiles each, 3 rows; 2 of 45 x 61: tiles
# that start off a cache line and a partial last tile; channels_last: the strided path.
@pytest.mark.parametrize("hw", [(48, 64), (45, 61)], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("C", [8, 6], ids=["C8", "C6"])
def test_float32_whole_tiles(hw, channels_last, C):
    # Against a float64 reference of the same values: the parameter gradients are sums over
    # 5-6 thousand pixels, where a float32 reference's own rounding exceeds TIGHT_TOL.
    inputs = make_inputs(2, C, 1, C + 1, *hw, dtype=torch.float32, channels_last=channels_last)
    go, ga = upstream_grads((2, C + 1, *hw), (2, 1, *hw), torch.float32)
    out, alpha, grads = forward_backward(gscnn_ops.gated_conv2d, leaves(inputs), go, ga)
    wide = leaves(inputs, dtype=torch.float64)
    rout, ralpha, rgrads = forward_backward(reference.gated_conv2d, wide, go.double(), ga.double())
    for a, e, name in zip([out, alpha, *grads], [rout, ralpha, *rgrads], OUT_NAMES + GRAD_NAMES):
        err = (a.double() - e).abs().max().item()
        # atol: float32 rounding of a sum of ~5000 terms of order 1 (grad_gate_bias, a sum of
        # signed terms, can be far smaller than its terms)
        assert err <= 1e-5 * e.abs().max().item() + 1e-4, f"{name}: max error {err:.3g}"


# Whole tiles of NCHW float32 / float64 tensors are read and written where they lie; every other
# tile (strided, partial, other dtypes) goes through copies into tile buffers. Both run the same
# arithmetic on the same values in the same order, so copied inputs must give bitwise the results
# of in-place ones: forward, grad_s / grad_r and every parameter gradient, with every build
# (each has its own vector width and streaming stores). The copied run takes s and grad_out
# channels_last (so out and grad_s are written through buffers too) and r and grad_alpha as views
# with padded rows (a single channel is consecutive even channels_last). hw: whole tiles whose rows
# start on a cache line (streaming stores), and rows that do not, with a partial last tile.
@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("hw", [(48, 64), (45, 61)], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("C, Cr, Cout", [(8, 1, 8), (16, 1, 16), (5, 3, 7)], ids=str)
def test_in_place_tiles_match_copied_tiles(monkeypatch, isa, dtype, hw, C, Cr, Cout):
    from test_cpu_isa import _use_isa

    _use_isa(monkeypatch, isa)
    s, r, gate_weight, gate_bias, weight, bias = make_inputs(2, C, Cr, Cout, *hw, dtype=dtype)
    go, ga = upstream_grads((2, Cout, *hw), (2, 1, *hw), dtype)

    def padded_rows(t):
        wide = t.new_zeros(*t.shape[:3], t.shape[3] + 3)
        wide[..., : t.shape[3]] = t
        return wide[..., : t.shape[3]]

    def run(s_, r_, go_, ga_):
        out, alpha = torch.ops.gscnn_ops.gated_conv2d(s_, r_, gate_weight, gate_bias, weight, bias)
        grads = torch.ops.gscnn_ops.gated_conv2d_backward(
            go_, ga_, s_, r_, gate_weight, gate_bias, weight
        )
        return [out, alpha, *grads]

    in_place = run(s, r, go, ga)
    cl = torch.channels_last
    copied = run(
        s.contiguous(memory_format=cl),
        padded_rows(r),
        go.contiguous(memory_format=cl),
        padded_rows(ga),
    )
    assert not copied[0].is_contiguous()  # out, too, went through the copying path
    names = OUT_NAMES + ("grad_s", "grad_r", "grad_gate_weight", "grad_gate_bias")
    names += ("grad_weight", "grad_bias")
    assert len(in_place) == len(names)
    for a, b, name in zip(in_place, copied, names):
        assert a is not None and torch.equal(a, b), f"{name}: in-place and copied tiles differ"


def test_nchw_output_is_contiguous():
    out, alpha = gscnn_ops.gated_conv2d(*make_inputs(2, 5, 3, 4, 7, 13))
    assert out.is_contiguous() and alpha.is_contiguous()


def test_mixed_layouts():
    """s channels_last with r NCHW, and the reverse."""
    for cl_index in (0, 1):
        inputs = make_inputs(2, 5, 3, 4, 7, 13)
        inputs[cl_index] = inputs[cl_index].contiguous(memory_format=torch.channels_last)
        check_against_reference(inputs)


def _views(bases):
    """Non-contiguous views of base tensors: channel slice, H/W transpose, stride-0 expansion and
    non-contiguous parameters."""
    big_s, small_r, big_w, big_gw = bases
    s = big_s[:, 2:7].transpose(2, 3)  # (2, 5, 13, 7): channel slice + transpose
    r = small_r.expand(2, 3, 13, 7)  # stride 0 over N and H
    weight = big_w.transpose(0, 1)[:, ::2]  # (4, 5, 1, 1), non-contiguous
    gate_weight = big_gw[..., ::2]  # (1, 8, 1, 1) from (1, 8, 1, 2)
    return s, r, weight, gate_weight


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(3)
    dt = torch.float64

    def bases():
        return [
            torch.randn(2, 9, 7, 13, generator=g, dtype=dt),
            torch.randn(1, 3, 1, 7, generator=g, dtype=dt),
            torch.randn(10, 4, 1, 1, generator=g, dtype=dt) / 3,
            torch.randn(1, 8, 1, 2, generator=g, dtype=dt) / 3,
        ]

    b0 = bases()
    gate_bias = torch.tensor([0.2], dtype=dt)
    bias = torch.randn(4, generator=g, dtype=dt)
    results = []
    for fn in (gscnn_ops.gated_conv2d, reference.gated_conv2d):
        base = leaves(b0)
        s, r, weight, gate_weight = _views(base)
        assert not s.is_contiguous() and r.stride(0) == 0 and not weight.is_contiguous()
        out, alpha = fn(s, r, gate_weight, gate_bias, weight, bias)
        # A non-contiguous upstream gradient as well.
        go, ga = upstream_grads((2, 4, 7, 13), (2, 1, 7, 13), dt)
        loss = (out * go.transpose(2, 3)).sum() + (alpha * ga.transpose(2, 3)).sum()
        results.append([out, alpha, *torch.autograd.grad(loss, base)])
    names = OUT_NAMES + ("grad_big_s", "grad_small_r", "grad_big_weight", "grad_big_gate_weight")
    assert_all_close(results[0], results[1], names, **TIGHT_TOL[dt])


def test_expanded_upstream_gradient():
    """loss = out.sum() + alpha.sum() hands the backward stride-0 (expanded) gradients."""
    inputs = make_inputs(2, 5, 3, 4, 7, 13)
    grads = []
    for fn in (gscnn_ops.gated_conv2d, reference.gated_conv2d):
        x = leaves(inputs)
        out, alpha = fn(*x)
        grads.append(torch.autograd.grad(out.sum() + 3.0 * alpha.sum(), x))
    assert_all_close(grads[0], grads[1], GRAD_NAMES, **TIGHT_TOL[torch.float64])


def test_backward_op_outputs_do_not_alias():
    s, r, gw, gb, w, _ = make_inputs(2, 3, 2, 4, 5, 6)
    go, ga = upstream_grads((2, 4, 5, 6), (2, 1, 5, 6), s.dtype)
    grads = torch.ops.gscnn_ops.gated_conv2d_backward(go, ga, s, r, gw, gb, w)
    ptrs = [g.untyped_storage().data_ptr() for g in grads]
    assert len(set(ptrs)) == len(ptrs)
    assert [tuple(g.shape) for g in grads] == [
        (2, 3, 5, 6),
        (2, 2, 5, 6),
        (1, 5, 1, 1),
        (1,),
        (4, 3, 1, 1),
        (4,),
    ]


def test_empty_batch():
    """N = 0 follows F.conv2d: empty outputs of the right shape, zero parameter gradients."""
    inputs = make_inputs(0, 5, 3, 4, 7, 13)
    out, alpha, grads = check_against_reference(inputs)
    assert out.shape == (0, 4, 7, 13) and alpha.shape == (0, 1, 7, 13)
    assert grads[0].shape == (0, 5, 7, 13) and grads[1].shape == (0, 3, 7, 13)
    for g in grads[2:]:
        assert torch.count_nonzero(g) == 0


@settings(max_examples=40, deadline=None, database=None, derandomize=True)
@given(
    N=st.integers(1, 3),
    C=st.integers(1, 9),
    Cr=st.integers(1, 4),
    Cout=st.integers(1, 7),
    H=st.integers(1, 9),
    W=st.integers(1, 12),
    bias=st.booleans(),
    layout=st.sampled_from(["nchw", "channels_last", "transposed"]),
    use=st.sampled_from(LOSS_USES),
)
def test_property_random_shapes(N, C, Cr, Cout, H, W, bias, layout, use):
    inputs = make_inputs(
        N,
        C,
        Cr,
        Cout,
        H,
        W,
        bias=bias,
        channels_last=layout == "channels_last",
        seed=N * 1000 + C * 100 + H * 10 + W,
    )
    if layout == "transposed":
        inputs[0] = inputs[0].transpose(2, 3).contiguous().transpose(2, 3)
        inputs[1] = inputs[1].transpose(2, 3).contiguous().transpose(2, 3)
    out, alpha, _ = check_against_reference(inputs, use=use)
    assert out.shape == (N, Cout, H, W) and alpha.shape == (N, 1, H, W)
    assert torch.all((alpha > 0) & (alpha < 1))


# --- gated_conv2d_mlp ---------------------------------------------------------------------------


@pytest.mark.parametrize("use", LOSS_USES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_mlp_matches_reference(dtype, use):
    inputs = make_mlp_inputs(2, 5, 2, 6, 4, 7, 13, dtype=dtype)
    x, y = leaves(inputs), leaves(inputs)
    out, alpha, grads = forward_backward(gscnn_ops.gated_conv2d_mlp, x, use=use)
    go, ga = upstream_grads(out.shape, alpha.shape, dtype)
    rout, ralpha, rgrads = forward_backward(reference.gated_conv2d_mlp, y, go, ga, use=use)
    assert_all_close([out, alpha], [rout, ralpha], OUT_NAMES, **TIGHT_TOL[dtype])
    assert_all_close(grads, rgrads, tuple(f"grad_{n}" for n in MLP_ARG_NAMES), **TIGHT_TOL[dtype])


def test_mlp_channels_last_output():
    out, alpha = gscnn_ops.gated_conv2d_mlp(
        *make_mlp_inputs(2, 5, 2, 6, 4, 7, 13, channels_last=True)
    )
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    rout, ralpha = reference.gated_conv2d_mlp(*make_mlp_inputs(2, 5, 2, 6, 4, 7, 13))
    assert_all_close([out, alpha], [rout, ralpha], OUT_NAMES, **TIGHT_TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_mlp_low_precision_forward(dtype):
    inputs = make_mlp_inputs(2, 5, 2, 6, 4, 7, 13, dtype=dtype)
    out, alpha = gscnn_ops.gated_conv2d_mlp(*inputs)
    rout, ralpha = reference.gated_conv2d_mlp(*[t.double() for t in inputs])
    assert_low_precision_close(out, rout, dtype, "out")
    assert_low_precision_close(alpha, ralpha, dtype, "alpha")


# --- determinism --------------------------------------------------------------------------------

# 3 images of 50x61 pixels: 72 tiles of 128 pixels in 5 rows of partial sums on the CPU, enough
# for every thread to get several.
DETERMINISM_SHAPE = (3, 16, 2, 8, 50, 61)


def _grads(inputs):
    return forward_backward(gscnn_ops.gated_conv2d, leaves(inputs))[2]


def test_backward_is_deterministic():
    inputs = make_inputs(*DETERMINISM_SHAPE, dtype=torch.float32)
    first, second = _grads(inputs), _grads(inputs)
    for a, b, name in zip(first, second, GRAD_NAMES):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_gradients_independent_of_thread_count(dtype, restore_num_threads):
    inputs = make_inputs(*DETERMINISM_SHAPE, dtype=dtype)
    torch.set_num_threads(1)
    one = _grads(inputs)
    torch.set_num_threads(2)
    two = _grads(inputs)
    for a, b, name in zip(one, two, GRAD_NAMES):
        assert torch.equal(a, b), f"{name} differs between 1 and 2 threads"


# --- autocast -----------------------------------------------------------------------------------


def test_autocast_cpu_bfloat16():
    inputs = make_inputs(2, 5, 3, 4, 7, 13, dtype=torch.float32)
    x = leaves(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, alpha = gscnn_ops.gated_conv2d(*x)
    assert out.dtype == torch.bfloat16 and alpha.dtype == torch.bfloat16
    # Autocast rounds the inputs to bfloat16; compare with float64 math on the rounded values.
    rounded = [t.detach().bfloat16().double() for t in inputs]
    rout, ralpha = reference.gated_conv2d(*rounded)
    assert_low_precision_close(out, rout, torch.bfloat16, "out")
    assert_low_precision_close(alpha, ralpha, torch.bfloat16, "alpha")
    # Gradients flow back to the float32 leaves in float32.
    grads = torch.autograd.grad(out.float().sum() + alpha.float().sum(), x)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert torch.count_nonzero(grads[0]) > 0


def test_autocast_applies_inside_its_region_only():
    inputs = make_inputs(2, 5, 3, 4, 7, 13, dtype=torch.float32)
    before = gscnn_ops.gated_conv2d(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = gscnn_ops.gated_conv2d(*inputs)
    after = gscnn_ops.gated_conv2d(*inputs)
    assert all(t.dtype == torch.bfloat16 for t in inside)
    assert all(t.dtype == torch.float32 for t in before + after)
    for b, a in zip(before, after):  # nothing of the region lingers
        assert torch.equal(b, a)


def test_autocast_leaves_float64_alone_like_conv2d():
    inputs = make_inputs(2, 5, 3, 4, 7, 13, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.nn.functional.conv2d(inputs[0], inputs[4], inputs[5])
        out, alpha = gscnn_ops.gated_conv2d(*inputs)
    assert expected.dtype == torch.float64
    assert out.dtype == torch.float64 and alpha.dtype == torch.float64


# --- the checks every op gets (op_checks.py) ---------------------------------------------------


class TestGatedConv2dChecks(OpChecks):
    name = "gated_conv2d"
    shapes = ((2, 5, 2, 7, 7, 9), (1, 3, 1, 4, 1, 1), (1, 8, 1, 8, 13, 5))  # N, C, Cr, Cout, H, W
    differentiable = (0, 1, 2, 3, 4, 5)

    def inputs(self, shape, dtype, seed=0):
        return tuple(make_inputs(*shape, dtype=dtype, seed=seed))

    def bad_inputs(self):
        s, r, gw, gb, w, b = make_inputs(2, 3, 1, 4, 5, 5, dtype=torch.float32)
        return [
            ((s[0], r, gw, gb, w, b), "s"),
            ((s.int(), r, gw, gb, w, b), "s"),
            ((s, r[:, :, :4], gw, gb, w, b), "r"),
            ((s, r, gw, gb, w[:, :2], b), "weight"),
        ]


class TestGatedConv2dMlpChecks(OpChecks):
    name = "gated_conv2d_mlp"
    shapes = ((2, 5, 2, 6, 7, 7, 9), (1, 3, 1, 4, 4, 1, 1))  # N, C, Cr, M, Cout, H, W
    differentiable = (0, 1, 2, 3, 4, 5, 6, 7)

    def inputs(self, shape, dtype, seed=0):
        return tuple(make_mlp_inputs(*shape, dtype=dtype, seed=seed))

    def bad_inputs(self):
        args = make_mlp_inputs(2, 3, 1, 4, 4, 5, 5, dtype=torch.float32)
        return [
            ((args[0][0], *args[1:]), "s"),
            ((*args[:2], args[2][:, :3], *args[3:]), "hidden_weight"),
        ]
