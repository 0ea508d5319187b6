"""Bad arguments get a clear error that names the op and the argument."""

import re

import pytest
import torch

import gscnn_ops

from gated_conv2d_cases import make_inputs, make_mlp_inputs

OP = "gscnn_ops.gated_conv2d"
MLP_OP = "gscnn_ops.gated_conv2d_mlp"
BACKWARD_OP = "gscnn_ops.gated_conv2d_backward"

N, C, CR, COUT, H, W = 2, 5, 3, 4, 7, 13


def good_args(dtype=torch.float32):
    s, r, gw, gb, w, b = make_inputs(N, C, CR, COUT, H, W, dtype=dtype)
    return dict(s=s, r=r, gate_weight=gw, gate_bias=gb, weight=w, bias=b)


def f32(*shape):
    return torch.randn(*shape)


# (id, replacements, argument named in the message, pattern the message must match)
BAD_CALLS = [
    ("int64_s", dict(s=torch.ones(N, C, H, W, dtype=torch.int64)), "s", r"float32.*got Long"),
    (
        "weight_float64",
        dict(weight=torch.randn(COUT, C, 1, 1, dtype=torch.float64)),
        "weight",
        r"dtype Double but 's' has dtype Float",
    ),
    ("r_float16", dict(r=torch.randn(N, CR, H, W, dtype=torch.float16)), "r", r"dtype Half"),
    ("bias_float64", dict(bias=torch.randn(COUT, dtype=torch.float64)), "bias", r"dtype Double"),
    ("s_3d", dict(s=f32(C, H, W)), "s", r"must be a 4-D .* got a 3-D"),
    ("r_5d", dict(r=f32(N, CR, H, W, 1)), "r", r"must be a 4-D .* got a 5-D"),
    ("r_batch", dict(r=f32(N + 1, CR, H, W)), "r", r"same batch size and spatial size"),
    ("r_height", dict(r=f32(N, CR, H + 1, W)), "r", r"same batch size and spatial size"),
    ("r_width", dict(r=f32(N, CR, H, W - 1)), "r", r"same batch size and spatial size"),
    (
        "gate_weight_channels",
        dict(gate_weight=f32(1, C + CR - 1, 1, 1)),
        "gate_weight",
        r"must have shape \[1, 8, 1, 1\], got \[1, 7, 1, 1\]",
    ),
    ("gate_weight_flat", dict(gate_weight=f32(C + CR)), "gate_weight", r"must have shape"),
    (
        "gate_weight_two_rows",
        dict(gate_weight=f32(2, C + CR, 1, 1)),
        "gate_weight",
        r"must have shape",
    ),
    ("gate_bias_shape", dict(gate_bias=f32(2)), "gate_bias", r"must have shape \[1\]"),
    (
        "weight_in_channels",
        dict(weight=f32(COUT, C + 1, 1, 1)),
        "weight",
        r"must have shape \[4, 5, 1, 1\], got \[4, 6, 1, 1\]",
    ),
    ("weight_3x3", dict(weight=f32(COUT, C, 3, 3)), "weight", r"got \[4, 5, 3, 3\]"),
    ("weight_2d", dict(weight=f32(COUT, C)), "weight", r"must be a 4-D"),
    (
        "weight_no_out_channels",
        dict(weight=f32(0, C, 1, 1), bias=f32(0)),
        "weight",
        r"at least one output channel",
    ),
    ("bias_shape", dict(bias=f32(COUT + 1)), "bias", r"must have shape \[4\], got \[5\]"),
    (
        "s_zero_channels",
        dict(s=f32(N, 0, H, W), gate_weight=f32(1, CR, 1, 1), weight=f32(COUT, 0, 1, 1)),
        "s",
        r"at least one channel",
    ),
    (
        "r_zero_channels",
        dict(r=f32(N, 0, H, W), gate_weight=f32(1, C, 1, 1)),
        "r",
        r"at least one channel",
    ),
]


def _expect_error(call, op, arg, pattern):
    with pytest.raises(RuntimeError, match=re.escape(op) + r": ") as info:
        call()
    message = str(info.value)
    assert f"'{arg}'" in message, f"message does not name argument {arg!r}: {message}"
    assert re.search(pattern, message), f"{pattern!r} not in: {message}"


@pytest.mark.parametrize(
    "replace,arg,pattern", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
@pytest.mark.parametrize("entry", ["functional", "torch.ops"])
def test_bad_arguments(entry, replace, arg, pattern):
    args = {**good_args(), **replace}
    fn = gscnn_ops.gated_conv2d if entry == "functional" else torch.ops.gscnn_ops.gated_conv2d
    _expect_error(lambda: fn(**args), OP, arg, pattern)


def test_bad_arguments_with_autograd():
    """Errors are the same when the inputs require grad (the autograd path)."""
    args = {k: (v.requires_grad_() if v is not None else v) for k, v in good_args().items()}
    args["weight"] = torch.randn(COUT, C + 1, 1, 1, requires_grad=True)
    _expect_error(lambda: gscnn_ops.gated_conv2d(**args), OP, "weight", r"must have shape")


def test_good_arguments_pass():
    """The baseline the error cases modify is itself valid."""
    out, alpha = gscnn_ops.gated_conv2d(**good_args())
    assert out.shape == (N, COUT, H, W) and alpha.shape == (N, 1, H, W)


# --- gated_conv2d_mlp ---------------------------------------------------------------------------

M = 6
MLP_BAD = [
    (
        "hidden_weight_in",
        dict(hidden_weight=f32(M, C + CR + 1, 1, 1)),
        "hidden_weight",
        r"must have shape \[6, 8, 1, 1\]",
    ),
    ("hidden_bias", dict(hidden_bias=f32(M + 1)), "hidden_bias", r"must have shape \[6\]"),
    (
        "gate_weight_not_M",
        dict(gate_weight=f32(1, C + CR, 1, 1)),
        "gate_weight",
        r"must have shape \[1, 6, 1, 1\]",
    ),
    (
        "hidden_weight_float64",
        dict(hidden_weight=torch.randn(M, C + CR, 1, 1, dtype=torch.float64)),
        "hidden_weight",
        r"dtype Double",
    ),
    ("s_int", dict(s=torch.ones(N, C, H, W, dtype=torch.int32)), "s", r"got Int"),
]


@pytest.mark.parametrize(
    "replace,arg,pattern", [c[1:] for c in MLP_BAD], ids=[c[0] for c in MLP_BAD]
)
def test_mlp_bad_arguments(replace, arg, pattern):
    names = ("s", "r", "hidden_weight", "hidden_bias", "gate_weight", "gate_bias", "weight", "bias")
    args = {
        **dict(zip(names, make_mlp_inputs(N, C, CR, M, COUT, H, W, dtype=torch.float32))),
        **replace,
    }
    _expect_error(lambda: gscnn_ops.gated_conv2d_mlp(**args), MLP_OP, arg, pattern)


# --- gated_conv2d_backward ----------------------------------------------------------------------

BACKWARD_BAD = [
    (
        "grad_out_spatial",
        dict(grad_out=f32(N, COUT, H, W + 1)),
        "grad_out",
        r"must have shape \[2, 4, 7, 13\], got \[2, 4, 7, 14\]",
    ),
    ("grad_out_channels", dict(grad_out=f32(N, COUT + 1, H, W)), "grad_out", r"must have shape"),
    ("grad_out_3d", dict(grad_out=f32(COUT, H, W)), "grad_out", r"must have shape"),
    (
        "grad_out_float64",
        dict(grad_out=torch.randn(N, COUT, H, W, dtype=torch.float64)),
        "grad_out",
        r"dtype Double",
    ),
    (
        "grad_alpha_channels",
        dict(grad_alpha=f32(N, 2, H, W)),
        "grad_alpha",
        r"must have shape \[2, 1, 7, 13\]",
    ),
    ("weight_shape", dict(weight=f32(COUT, C + 1, 1, 1)), "weight", r"must have shape"),
]


@pytest.mark.parametrize(
    "replace,arg,pattern", [c[1:] for c in BACKWARD_BAD], ids=[c[0] for c in BACKWARD_BAD]
)
def test_backward_bad_arguments(replace, arg, pattern):
    a = good_args()
    args = dict(
        grad_out=f32(N, COUT, H, W),
        grad_alpha=f32(N, 1, H, W),
        s=a["s"],
        r=a["r"],
        gate_weight=a["gate_weight"],
        gate_bias=a["gate_bias"],
        weight=a["weight"],
    )
    args.update(replace)
    _expect_error(
        lambda: torch.ops.gscnn_ops.gated_conv2d_backward(**args), BACKWARD_OP, arg, pattern
    )


# --- GatedConv2d ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(in_channels=0, out_channels=4), r"in_channels must be a positive int, got 0"),
        (dict(in_channels=4, out_channels=-1), r"out_channels must be a positive int, got -1"),
        (dict(in_channels=4, out_channels=4, gate_channels=0), r"gate_channels must be a positive"),
        (dict(in_channels=4.0, out_channels=4), r"in_channels must be a positive int, got 4.0"),
        (dict(in_channels=4, out_channels=4, gate="conv"), r"gate must be 'linear' or 'mlp'"),
        (dict(in_channels=4, out_channels=4, gate="MLP"), r"gate must be 'linear' or 'mlp'"),
    ],
)
def test_module_constructor_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        gscnn_ops.GatedConv2d(**kwargs)


@pytest.mark.parametrize("gate", ["linear", "mlp"])
@pytest.mark.parametrize(
    "s_shape,r_shape,pattern",
    [
        ((N, C + 1, H, W), (N, CR, H, W), r"s must be \(N, 5, H, W\), got \(2, 6, 7, 13\)"),
        ((N, C, H, W), (N, CR - 1, H, W), r"r must be \(N, 3, H, W\), got \(2, 2, 7, 13\)"),
        ((C, H, W), (N, CR, H, W), r"s must be \(N, 5, H, W\), got \(5, 7, 13\)"),
        ((N, C, H, W), (CR, H, W), r"r must be \(N, 3, H, W\)"),
    ],
)
def test_module_forward_wrong_channels(gate, s_shape, r_shape, pattern):
    module = gscnn_ops.GatedConv2d(C, COUT, CR, gate=gate)
    with pytest.raises(ValueError, match=pattern):
        module(torch.randn(*s_shape), torch.randn(*r_shape))


# --- devices ------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensors():
    """With CUDA kernels: the op runs on CUDA tensors. Without: a clear error that says how to
    rebuild (not the dispatcher's 'could not run ... with arguments from the CUDA backend')."""
    args = {k: (v.cuda() if v is not None else v) for k, v in good_args().items()}
    if gscnn_ops.has_cuda_kernels():
        out, alpha = gscnn_ops.gated_conv2d(**args)
        assert out.is_cuda and out.shape == (N, COUT, H, W) and alpha.is_cuda
    else:
        with pytest.raises(RuntimeError, match=re.escape(OP) + r": .*built without its CUDA"):
            gscnn_ops.gated_conv2d(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("arg", ["r", "gate_weight", "gate_bias", "weight", "bias"])
def test_mixed_devices(arg):
    args = {k: (v.cuda() if v is not None else v) for k, v in good_args().items()}
    args[arg] = args[arg].cpu()
    with pytest.raises(RuntimeError) as info:
        gscnn_ops.gated_conv2d(**args)
    if gscnn_ops.has_cuda_kernels():
        assert re.search(
            re.escape(OP) + rf": argument '{arg}' is on cpu but 's' is on cuda", str(info.value)
        ), str(info.value)
