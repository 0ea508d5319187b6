"""gscnn_ops.GatedConv2d: parameters, initialisation, fused vs unfused, the authors' MLP gate in
train and eval mode, state_dict, return_alpha and gradcheck through the module."""

import copy

import pytest
import torch
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode

import gscnn_ops
from gscnn_ops import reference

from conftest import TIGHT_TOL, assert_all_close
from gated_conv2d_cases import upstream_grads

N, C, CR, COUT, H, W = 2, 5, 3, 4, 7, 13
F64 = TIGHT_TOL[torch.float64]


class OpRecorder(TorchDispatchMode):
    """Records the name of every op that reaches the dispatcher below autograd."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.name())
        return func(*args, **(kwargs or {}))

    def gscnn_ops(self):
        return {name for name in self.ops if name.startswith("gscnn_ops::")}


def feature_maps(dtype=torch.float64, shift=0.0, seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, C, H, W, generator=g, dtype=torch.float64) * 1.5 + shift
    r = torch.randn(n, CR, H, W, generator=g, dtype=torch.float64) - shift
    return s.to(dtype), r.to(dtype)


def make_mlp_module(bias=True, fused=True, dtype=torch.float64, seed=0):
    """A gate="mlp" module with non-trivial BatchNorm affine parameters and running statistics
    (running means far from 0 and variances far from 1), left in train mode."""
    torch.manual_seed(seed)
    module = gscnn_ops.GatedConv2d(C, COUT, CR, gate="mlp", bias=bias, fused=fused).to(dtype)
    with torch.no_grad():
        for bn in (module.gate_net[0], module.gate_net[4]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        if bias:
            module.bias.uniform_(-0.5, 0.5)
        module.train()
        for i in range(3):
            module(*feature_maps(dtype, shift=1.0 + i, seed=10 + i))
    bn0, bn4 = module.gate_net[0], module.gate_net[4]
    assert bn0.running_mean.abs().max() > 0.3 and (bn0.running_var - 1).abs().max() > 0.1
    assert bn4.running_mean.abs().max() > 0.01 and (bn4.running_var - 1).abs().max() > 0.01
    return module


def run_module(module, s, r, go_seed=1):
    """out, alpha and the gradients w.r.t. (s, r, *parameters) of sum(out*go) + sum(alpha*ga)."""
    s, r = s.detach().clone().requires_grad_(), r.detach().clone().requires_grad_()
    out, alpha = module(s, r, return_alpha=True)
    go, ga = upstream_grads(out.shape, alpha.shape, out.dtype, seed=go_seed)
    params = list(module.parameters())
    grads = torch.autograd.grad((out * go).sum() + (alpha * ga).sum(), [s, r] + params)
    return out, alpha, list(grads)


def run_authors(module, s, r, go_seed=1):
    """The authors' formula evaluated with (a copy of) the module's own gate_net and weights."""
    s, r = s.detach().clone().requires_grad_(), r.detach().clone().requires_grad_()
    out, alpha = reference.gated_conv2d_authors(s, r, module.gate_net, module.weight, module.bias)
    go, ga = upstream_grads(out.shape, alpha.shape, out.dtype, seed=go_seed)
    params = list(module.parameters())
    grads = torch.autograd.grad((out * go).sum() + (alpha * ga).sum(), [s, r] + params)
    return out, alpha, list(grads)


def grad_names(module):
    return ["grad_s", "grad_r"] + [f"grad_{n}" for n, _ in module.named_parameters()]


# --- parameters and initialisation --------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
def test_linear_parameters(bias):
    module = gscnn_ops.GatedConv2d(C, COUT, CR, bias=bias)
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
    expected = {"gate_weight": (1, C + CR, 1, 1), "gate_bias": (1,), "weight": (COUT, C, 1, 1)}
    if bias:
        expected["bias"] = (COUT,)
    assert shapes == expected
    assert (module.bias is None) == (not bias)


def test_mlp_parameters():
    module = gscnn_ops.GatedConv2d(C, COUT, CR, gate="mlp")
    d = C + CR
    net = module.gate_net
    assert [type(m) for m in net] == [
        torch.nn.BatchNorm2d,
        torch.nn.Conv2d,
        torch.nn.ReLU,
        torch.nn.Conv2d,
        torch.nn.BatchNorm2d,
    ]
    assert net[0].num_features == d and net[4].num_features == 1
    assert net[1].weight.shape == (d, d, 1, 1) and net[3].weight.shape == (1, d, 1, 1)
    assert module.weight.shape == (COUT, C, 1, 1) and module.bias is None
    assert not hasattr(module, "gate_weight")


def test_weight_init_is_xavier_normal():
    torch.manual_seed(0)
    c_in, c_out = 256, 128
    module = gscnn_ops.GatedConv2d(c_in, c_out, 1, bias=True)
    w = module.weight.detach().flatten()
    std = (2.0 / (c_in + c_out)) ** 0.5  # xavier-normal, gain 1, 1x1 kernel
    assert abs(w.std().item() / std - 1) < 0.05
    assert abs(w.mean().item()) < 0.05 * std
    # Normal, not uniform: about 68.3% within one std (57.7% for a uniform of that std).
    within = (w.abs() < std).double().mean().item()
    assert 0.66 < within < 0.71
    assert torch.count_nonzero(module.bias) == 0
    # The gate as nn.Conv2d initialises it: uniform in +-1/sqrt(fan_in).
    bound = (c_in + 1) ** -0.5
    assert module.gate_weight.abs().max() <= bound and module.gate_bias.abs().max() <= bound
    assert module.gate_weight.std() > bound / 4


def test_reset_parameters_redraws():
    module = gscnn_ops.GatedConv2d(C, COUT, CR)
    before = [p.detach().clone() for p in module.parameters()]
    module.reset_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


# --- fused vs unfused ---------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["linear", "linear_bias", "mlp_train", "mlp_eval"])
def test_fused_equals_unfused(config):
    bias = config != "linear"
    if config.startswith("linear"):
        torch.manual_seed(0)
        fused = gscnn_ops.GatedConv2d(C, COUT, CR, bias=bias).double()
        with torch.no_grad():
            if bias:
                fused.bias.uniform_(-0.5, 0.5)
    else:
        fused = make_mlp_module(bias=bias)
        if config == "mlp_eval":
            fused.eval()
    unfused = copy.deepcopy(fused)
    unfused.fused = False
    s, r = feature_maps()
    out, alpha, grads = run_module(fused, s, r)
    rout, ralpha, rgrads = run_module(unfused, s, r)
    assert_all_close([out, alpha], [rout, ralpha], ["out", "alpha"], **F64)
    assert_all_close(grads, rgrads, grad_names(fused), **F64)
    for (name, a), b in zip(fused.named_buffers(), unfused.buffers()):
        assert torch.equal(a, b), name


# --- the authors' MLP gate ----------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
def test_mlp_train_mode_equals_authors(bias):
    module = make_mlp_module(bias=bias)
    authors = copy.deepcopy(module)
    s, r = feature_maps(shift=0.5)
    with OpRecorder() as rec:
        out, alpha, grads = run_module(module, s, r)
    rout, ralpha, rgrads = run_authors(authors, s, r)
    assert_all_close([out, alpha], [rout, ralpha], ["out", "alpha"], **F64)
    assert_all_close(grads, rgrads, grad_names(module), **F64)
    # Batch statistics were used and the running statistics updated exactly as the authors' do.
    for (name, a), b in zip(module.named_buffers(), authors.buffers()):
        assert torch.equal(a, b), name
    assert "gscnn_ops::gated_conv2d" in rec.gscnn_ops()
    assert "gscnn_ops::gated_conv2d_mlp" not in rec.gscnn_ops()


@pytest.mark.parametrize("bias", [False, True])
def test_mlp_eval_mode_equals_authors_and_is_fused(bias):
    module = make_mlp_module(bias=bias).eval()
    authors = copy.deepcopy(module)
    buffers_before = [b.clone() for b in module.buffers()]
    s, r = feature_maps(shift=0.5)
    with OpRecorder() as rec:
        out, alpha, grads = run_module(module, s, r)
    rout, ralpha, rgrads = run_authors(authors, s, r)
    assert_all_close([out, alpha], [rout, ralpha], ["out", "alpha"], **F64)
    assert_all_close(grads, rgrads, grad_names(module), **F64)
    # One fused MLP op (forward); the linear op and its fused backward are not used.
    assert rec.ops.count("gscnn_ops::gated_conv2d_mlp") == 1
    assert rec.gscnn_ops() == {"gscnn_ops::gated_conv2d_mlp"}
    # Eval mode reads the running statistics and never updates them.
    assert all(torch.equal(a, b) for a, b in zip(buffers_before, module.buffers()))


def test_mlp_eval_mode_float32_channels_last():
    module = make_mlp_module(dtype=torch.float32).eval()
    s, r = feature_maps(torch.float32, shift=0.5)
    s, r = (
        s.contiguous(memory_format=torch.channels_last),
        r.contiguous(memory_format=torch.channels_last),
    )
    with torch.no_grad():
        out, alpha = module(s, r, return_alpha=True)
        rout, ralpha = reference.gated_conv2d_authors(
            s, r, module.gate_net, module.weight, module.bias
        )
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_all_close([out, alpha], [rout, ralpha], ["out", "alpha"], rtol=1e-5, atol=1e-5)


# --- state_dict, return_alpha, dtype ------------------------------------------------------------


def test_state_dict_has_no_logit_gate_buffers():
    module = make_mlp_module()
    keys = set(module.state_dict())
    assert not any("_logit_gate" in k for k in keys), keys
    assert {"weight", "bias", "gate_net.0.running_mean", "gate_net.4.running_var"} <= keys
    fresh = gscnn_ops.GatedConv2d(C, COUT, CR, gate="mlp", bias=True).double()
    fresh.load_state_dict(module.state_dict())  # strict: same keys both ways
    module.eval(), fresh.eval()
    s, r = feature_maps()
    with torch.no_grad():
        assert torch.equal(module(s, r), fresh(s, r))
    linear_keys = set(gscnn_ops.GatedConv2d(C, COUT, CR).state_dict())
    assert linear_keys == {"gate_weight", "gate_bias", "weight"}


@pytest.mark.parametrize("gate", ["linear", "mlp"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_return_alpha_shapes(gate, training):
    module = gscnn_ops.GatedConv2d(C, COUT, CR, gate=gate).train(training)
    s, r = feature_maps(torch.float32)
    out = module(s, r)
    assert isinstance(out, torch.Tensor) and out.shape == (N, COUT, H, W)
    out2, alpha = module(s, r, return_alpha=True)
    assert out2.shape == (N, COUT, H, W) and alpha.shape == (N, 1, H, W)
    assert torch.all((alpha > 0) & (alpha < 1))
    assert out2.dtype == alpha.dtype == torch.float32
    if not training:
        assert torch.equal(out, out2)


def test_module_half_precision_runs():
    module = gscnn_ops.GatedConv2d(C, COUT, CR, gate="mlp").to(torch.bfloat16)
    s, r = feature_maps(torch.bfloat16)
    out, alpha = module(s, r, return_alpha=True)
    assert out.dtype == alpha.dtype == torch.bfloat16 and torch.isfinite(out).all()
    module.eval()
    assert module(s, r).dtype == torch.bfloat16


# --- gradcheck through the module ---------------------------------------------------------------


def _gradcheck_module(module):
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    s, r = feature_maps(n=1)
    s, r = (
        s[..., :3, :4].contiguous().requires_grad_(),
        r[..., :3, :4].contiguous().requires_grad_(),
    )

    def fn(s, r, *ps):
        return functional_call(module, dict(zip(names, ps)), (s, r), {"return_alpha": True})

    assert torch.autograd.gradcheck(fn, (s, r, *params), atol=1e-8)


@pytest.mark.parametrize("bias", [False, True])
def test_gradcheck_linear_module(bias):
    torch.manual_seed(0)
    module = gscnn_ops.GatedConv2d(C, COUT, CR, bias=bias).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in module.parameters())
    _gradcheck_module(module)


def test_gradcheck_mlp_module_eval():
    module = make_mlp_module(bias=True, dtype=torch.float32).to(torch.float64).eval()
    assert all(b.dtype == torch.float64 for b in module.buffers() if b.is_floating_point())
    _gradcheck_module(module)


def test_gradcheck_mlp_module_train():
    # Train mode: batch statistics (the running-statistics update does not change outputs).
    module = make_mlp_module(bias=False, dtype=torch.float32).to(torch.float64).train()
    _gradcheck_module(module)


@pytest.mark.parametrize("gate,train", [("linear", True), ("mlp", True), ("mlp", False)])
def test_module_under_torch_compile_fullgraph(gate, train):
    torch.manual_seed(0)
    module = gscnn_ops.GatedConv2d(6, 5, 2, gate=gate).train(train)
    s, r = torch.randn(2, 6, 7, 9), torch.randn(2, 2, 7, 9)

    def step(m, s, r):
        out, alpha = m(s, r, return_alpha=True)
        return out.square().mean() + alpha.mean()

    eager_module = copy.deepcopy(module)
    # aot_eager: what is tested is that the module traces in one graph through the fake kernels
    # and autograd formulas; Inductor's code generation is tested once, on the op
    # (test_gated_conv2d.py), and on the whole model (test_models.py, slow).
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(module, s, r)
    loss.backward()
    eager_loss = step(eager_module, s, r)
    eager_loss.backward()
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(module.named_parameters(), eager_module.parameters()):
        torch.testing.assert_close(
            p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}"
        )
