"""Every CPU kernel build (baseline, AVX2, AVX-512; picked at run time, or by GSCNN_CPU_ISA)
computes the same thing. The default run only exercises the widest one this CPU has."""

import pytest
import torch

import gscnn_ops
from gscnn_ops import reference

from conftest import TIGHT_TOL, assert_low_precision_close
from gated_conv2d_cases import make_inputs

ISAS = ["baseline", "avx2", "avx512"]
ops = torch.ops.gscnn_ops


def _cpu_flags():
    with open("/proc/cpuinfo") as f:
        return next(
            (set(line.split(":")[1].split()) for line in f if line.startswith("flags")), set()
        )


def _use_isa(monkeypatch, isa):
    monkeypatch.setenv("GSCNN_CPU_ISA", isa)
    probe = make_inputs(1, 1, 1, 1, 1, 1)
    try:
        gscnn_ops.gated_conv2d(*probe)
    except RuntimeError as e:
        if "lacks" in str(e):
            pytest.skip(f"this CPU has no {isa}")
        raise
    assert ops._cpu_isa() == isa  # the build that runs is the one asked for


@pytest.mark.skipif(not __import__("os").path.exists("/proc/cpuinfo"), reason="needs Linux")
def test_default_is_the_widest_build_this_cpu_runs(monkeypatch):
    monkeypatch.delenv("GSCNN_CPU_ISA", raising=False)
    flags = _cpu_flags()
    widest = (
        "avx512"
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma", "f16c"} <= flags
        else "avx2"
        if {"avx2", "fma", "f16c"} <= flags
        else "baseline"
    )
    assert ops._cpu_isa() == widest


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_each_cpu_build_half_precision(monkeypatch, isa, dtype):
    # Each build's half-precision loads and stores (F16C / AVX-512 conversions, or scalar code in
    # the baseline), against the float64 reference at the documented tolerance.
    _use_isa(monkeypatch, isa)
    x = make_inputs(2, 19, 2, 11, 3, 50, dtype=dtype)
    x64 = [t.double() for t in x]
    for got, want, name in zip(
        gscnn_ops.gated_conv2d(*x), reference.gated_conv2d(*x64), ("out", "alpha")
    ):
        assert_low_precision_close(got, want, dtype, f"{isa} {name}")
    g = torch.randn(2, 11, 3, 50, dtype=torch.float64).to(dtype)
    got = ops.gated_conv2d_backward(g, None, *x[:5])
    leaves = [t.detach().clone().requires_grad_() for t in x64]
    want = torch.autograd.grad((reference.gated_conv2d(*leaves)[0] * g.double()).sum(), leaves)
    for name, u, v in zip(["s", "r", "gate_weight", "gate_bias", "weight", "bias"], got, want):
        assert_low_precision_close(u, v, dtype, f"{isa} grad {name}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_each_cpu_build_matches_reference(monkeypatch, isa, dtype, channels_last):
    _use_isa(monkeypatch, isa)
    # 3 x 150 pixels: more than one 128-pixel tile per image, a partial last tile.
    x = make_inputs(2, 19, 2, 11, 3, 50, dtype=dtype, channels_last=channels_last)
    out, alpha = gscnn_ops.gated_conv2d(*x)
    ref_out, ref_alpha = reference.gated_conv2d(*x)
    torch.testing.assert_close(out, ref_out, **TIGHT_TOL[dtype])
    torch.testing.assert_close(alpha, ref_alpha, **TIGHT_TOL[dtype])

    g = torch.randn(2, 11, 3, 50, dtype=dtype)
    ga = torch.randn(2, 1, 3, 50, dtype=dtype)
    got = ops.gated_conv2d_backward(g, ga, *x[:5])
    leaves = [t.detach().clone().requires_grad_() for t in x]
    o, a = reference.gated_conv2d(*leaves)
    want = torch.autograd.grad((o * g).sum() + (a * ga).sum(), leaves)
    for name, u, v in zip(["s", "r", "gate_weight", "gate_bias", "weight", "bias"], got, want):
        scale = v.abs().max().clamp_min(1)
        torch.testing.assert_close(
            u / scale, v / scale, **TIGHT_TOL[dtype], msg=lambda m: f"{name}: {m}"
        )

    hw, hb = torch.randn(21, 21, 1, 1, dtype=dtype) * 0.2, torch.randn(21, dtype=dtype)
    gw = torch.randn(1, 21, 1, 1, dtype=dtype) * 0.2
    got_m = gscnn_ops.gated_conv2d_mlp(x[0], x[1], hw, hb, gw, x[3], x[4], x[5])
    want_m = reference.gated_conv2d_mlp(x[0], x[1], hw, hb, gw, x[3], x[4], x[5])
    for u, v in zip(got_m, want_m):
        torch.testing.assert_close(u, v, **TIGHT_TOL[dtype])


def test_unknown_isa_is_rejected(monkeypatch):
    monkeypatch.setenv("GSCNN_CPU_ISA", "sse9")
    with pytest.raises(RuntimeError, match="GSCNN_CPU_ISA must be baseline, avx2 or avx512"):
        gscnn_ops.gated_conv2d(*make_inputs(1, 1, 1, 1, 1, 1))


@pytest.mark.parametrize("isa", ISAS)
def test_saturated_gates(monkeypatch, isa, emu):
    # Gate logits of +-1e30 and +-inf: alpha is 1 or 0 (sigmoid's limits; below 1e-37 off), in
    # every CPU build and in the CUDA program. (The CPU's vectorised exp once clamped its argument
    # with x - (x + 87), which is 0 for x = -1e30 in float: alpha came out 0.5.)
    _use_isa(monkeypatch, isa)
    for dtype in (torch.float32, torch.float64):
        s, r, gw, gb, w, b = make_inputs(1, 3, 1, 2, 2, 70, dtype=dtype)
        for logit, want in [(1e30, 1.0), (-1e30, 0.0), (float("inf"), 1.0), (-float("inf"), 0.0)]:
            gb = torch.full((1,), logit, dtype=dtype)
            for alpha in (
                gscnn_ops.gated_conv2d(s, r, gw * 0, gb, w, b)[1],
                torch.ops.gscnn_testing.gated_conv2d(s, r, gw * 0, gb, w, b, emu.gpu())[1],
            ):
                torch.testing.assert_close(
                    alpha,
                    torch.full_like(alpha, want),
                    rtol=0,
                    atol=1e-37,
                    msg=lambda m: f"{dtype}, logit {logit}: {m}",
                )


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_each_cpu_build_dual_task_loss_and_potential(monkeypatch, isa, dtype):
    # The boundary_potential / dual_task_loss kernels of each build (their own per-ISA files),
    # forward and backward, on an image of 2 x 2 CPU tiles (32 x 256) with ignore pixels and
    # skippable classes, against the float64 reference.
    _use_isa(monkeypatch, isa)
    g = torch.Generator().manual_seed(0)
    N, K, H, W = 1, 4, 37, 300
    target = torch.randint(0, 2, (N, H // 8 + 1, W // 8 + 1), generator=g)
    target = target.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :H, :W].contiguous()
    target[:, 3:6, 100:140] = 255
    logits = 8.0 * torch.nn.functional.one_hot(target.clamp(max=K - 1), K).permute(0, 3, 1, 2)
    prob64 = (
        logits.double() + 0.5 * torch.randn(N, K, H, W, generator=g, dtype=torch.float64)
    ).softmax(1)
    prob = prob64.to(dtype)
    p = prob.clone().requires_grad_()
    loss = gscnn_ops.dual_task_loss(p, target)
    (grad,) = torch.autograd.grad(loss, p)
    q = prob.double().requires_grad_()
    ref = reference.dual_task_loss(q, target)
    (ref_grad,) = torch.autograd.grad(ref, q)
    # The potential on a noisy softmax: its gradient g / (2 zeta) is ill-conditioned where the map
    # is flat (zeta ~ 0), which would test float32 rounding rather than the kernels.
    gz = torch.randn(N, K, H, W, generator=g, dtype=torch.float64)
    noisy = (3 * torch.randn(N, K, H, W, generator=g, dtype=torch.float64)).softmax(1).to(dtype)
    z = noisy.clone().requires_grad_()
    zeta = gscnn_ops.boundary_potential(z)
    (zgrad,) = torch.autograd.grad(zeta, z, gz.to(dtype))
    z64 = noisy.double().requires_grad_()
    ref_zeta = reference.boundary_potential(z64)
    (ref_zgrad,) = torch.autograd.grad(ref_zeta, z64, gz.to(dtype).double())
    pairs = [
        (loss, ref, "loss"),
        (grad, ref_grad, "grad"),
        (zeta, ref_zeta, "zeta"),
        (zgrad, ref_zgrad, "potential grad"),
    ]
    for got, want, name in pairs:
        if dtype == torch.bfloat16:
            assert_low_precision_close(got, want, dtype, f"{isa} {name}")
        else:
            torch.testing.assert_close(got.double(), want, **TIGHT_TOL[dtype], msg=f"{isa} {name}")
