"""Benchmarks of gated_conv2d (GSCNN's gated convolutional layer): the fused op against the eager
reference and torch.compile(reference), forward and forward+backward, in one run.

Groups (pytest-benchmark ``benchmark.group``) are "<device>-<fwd|fwdbwd>-C<C>-<dtype>", so each
table of the report compares the three implementations on identical inputs; on CUDA the same
groups with "-nhwc" appended time channels_last inputs (fused and eager: the issue's target is
channels_last within 1.2x of NCHW, one group against the other). The fwdbwd groups
also time "floor": one copy of the traffic forward + backward cannot avoid (s, r and the two
upstream gradients read once; out, alpha, grad_s and grad_r written once), in the same run, and
"matmul": the layer's three matrix products alone by torch.matmul, the same-run cost of the
arithmetic it cannot avoid.
See conftest.py for
how time and memory are measured; summarize.py turns the JSON into ratio tables.

Shapes: the shape stream of GSCNN has C = 32, 16, 8 channels at its three gates, gated by one
channel from the regular stream (Cr = 1); C_out = C; no bias.
  CPU:  N=2, 256x512, float32.
  CUDA: N=8, 800x800 (GSCNN's Cityscapes training crop), float32 and bfloat16.
"""

import math

import pytest
import torch

import gscnn_ops

CHANNELS = (32, 16, 8)
CR = 1
DIRECTIONS = ("fwd", "fwdbwd")
IMPLS = ("fused", "eager", "compiled")
DEVICE_DTYPES = (("cpu", torch.float32), ("cuda", torch.float32), ("cuda", torch.bfloat16))
LAYOUTS = {"cpu": ("nchw",), "cuda": ("nchw", "nhwc")}
_DTYPE_NAME = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
# Allowed max|x - ref| / max|ref| per tensor, against a float64 reference of the same inputs.
_TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 5e-3}


def _params():
    # One flat list, implementations innermost: the three implementations of a group run
    # back to back (same machine conditions, and the float64 reference is computed once).
    out = []
    for device, dtype in DEVICE_DTYPES:
        marks = [pytest.mark.cuda] if device == "cuda" else []
        for layout in LAYOUTS[device]:
            suffix = "" if layout == "nchw" else f"-{layout}"
            for direction in DIRECTIONS:
                for c in CHANNELS:
                    impls = IMPLS + (("floor", "matmul") if direction == "fwdbwd" else ())
                    if layout == "nhwc":
                        impls = ("fused", "eager")
                    for impl in impls:
                        out.append(
                            pytest.param(
                                device,
                                dtype,
                                layout,
                                direction,
                                c,
                                impl,
                                marks=marks,
                                id=f"{device}-{_DTYPE_NAME[dtype]}-{direction}-C{c}{suffix}-{impl}",
                            )
                        )
    return out


def make_inputs(device, dtype, n, c, h, w, requires_grad, seed=0, layout="nchw"):
    """(s, r, gate_weight, gate_bias, weight) with GSCNN's shapes, deterministic across
    implementations; weights scaled like a default init so the gate is not saturated. layout
    "nhwc": s and r channels_last (the same values)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, fmt=torch.contiguous_format):
        t = (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)
        return t.contiguous(memory_format=fmt).requires_grad_(requires_grad)

    image = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    s = rnd(n, c, h, w, fmt=image)
    r = rnd(n, CR, h, w, fmt=image)
    gate_weight = rnd(1, c + CR, 1, 1, scale=1.0 / math.sqrt(c + CR))
    gate_bias = rnd(1, scale=0.1)
    weight = rnd(c, c, 1, 1, scale=1.0 / math.sqrt(c))
    return s, r, gate_weight, gate_bias, weight


def make_grads(leaves, seed=1):
    """Fixed random upstream gradients for (out, alpha): backward then does the op's real work,
    not the broadcast of a ones tensor that out.sum() would give."""
    s = leaves[0]
    n, c, h, w = s.shape
    g = torch.Generator().manual_seed(seed)
    fmt = torch.contiguous_format if s.is_contiguous() else torch.channels_last  # s's layout
    g_out = torch.randn(n, c, h, w, generator=g).to(device=s.device, dtype=s.dtype)
    g_alpha = torch.randn(n, 1, h, w, generator=g).to(device=s.device, dtype=s.dtype)
    g_out = g_out.contiguous(memory_format=fmt)
    g_alpha = g_alpha.contiguous(memory_format=fmt)
    return g_out, g_alpha


def min_forward_bytes(s, r, c_out):
    """Bytes a forward must move at least: s and r read once, out and alpha written once."""
    n, _, h, w = s.shape
    return s.element_size() * (s.numel() + r.numel() + n * c_out * h * w + n * h * w)


def make_call(fn, leaves, direction, device):
    """A callable running one forward (no_grad) or forward+backward and returning its results.

    Backward uses torch.autograd.grad with the precomputed upstream gradients: the gradients of
    all five inputs are returned rather than accumulated into .grad, so no round pays an extra
    accumulation pass and no state leaks between rounds."""
    if direction == "fwd":

        def call():
            with torch.no_grad():
                result = fn(*leaves)
            if device == "cuda":
                torch.cuda.synchronize()
            return result
    else:
        g_out, g_alpha = make_grads(leaves)

        def call():
            out, alpha = fn(*leaves)
            grads = torch.autograd.grad((out, alpha), leaves, (g_out, g_alpha))
            if device == "cuda":
                torch.cuda.synchronize()
            return (out, alpha) + tuple(grads)

    return call


def make_floor_call(leaves, device):
    """The same-run floor of forward + backward: s, r, g_out, g_alpha each read once and copied
    into a fresh tensor (out, alpha, grad_s, grad_r are their sizes)."""
    s, r = leaves[0].detach(), leaves[1].detach()
    g_out, g_alpha = make_grads(leaves)

    def call():
        result = (s.clone(), r.clone(), g_out.clone(), g_alpha.clone())
        if device == "cuda":
            torch.cuda.synchronize()
        return result

    return call


def make_matmul_call(leaves, device):
    """The same-run cost of the layer's arithmetic alone: its three C x C x (N H W) matrix products
    (forward W s; backward W^T g_out and the weight gradient g_out s^T) by torch.matmul (a BLAS
    library), nothing else (no gate, no elementwise work): a same-run reference for the share of
    the layer's time that is arithmetic, not a lower bound (it moves bytes of its own)."""
    s, w = leaves[0].detach(), leaves[4].detach()
    n, c, h, wd = s.shape
    g_out, _ = make_grads(leaves)
    w2 = w.reshape(w.shape[0], c)
    s3, g3 = s.reshape(n, c, h * wd), g_out.reshape(n, -1, h * wd)

    def call():
        result = (
            torch.matmul(w2, s3),
            torch.matmul(w2.t(), g3),
            torch.matmul(g3, s3.transpose(1, 2)).sum(0),
        )
        if device == "cuda":
            torch.cuda.synchronize()
        return result

    return call


_REF_CACHE = {}


def reference_result(key, leaves, direction):
    """The float64 eager reference for one group, computed once and shared by its three cases."""
    if key not in _REF_CACHE:
        _REF_CACHE.clear()  # keep only the current group's (large) tensors alive
        leaves64 = tuple(t.detach().double().requires_grad_(t.requires_grad) for t in leaves)
        call = make_call(
            gscnn_ops.reference.gated_conv2d, leaves64, direction, leaves[0].device.type
        )
        _REF_CACHE[key] = tuple(t.detach() for t in call())
    return _REF_CACHE[key]


def check_close(result, expected, dtype, what):
    names = (
        "out",
        "alpha",
        "grad_s",
        "grad_r",
        "grad_gate_weight",
        "grad_gate_bias",
        "grad_weight",
    )
    assert len(result) == len(expected)
    for name, x, ref in zip(names, result, expected):
        assert x.shape == ref.shape, (what, name, x.shape, ref.shape)
        scale = ref.abs().max().item() or 1.0
        err = (x.detach().double() - ref).abs().max().item() / scale
        assert err <= _TOL[dtype], f"{what}: {name} relative max error {err:.3g} > {_TOL[dtype]}"


@pytest.mark.parametrize("device, dtype, layout, direction, c, impl", _params())
def test_gated_conv2d(
    benchmark,
    settings,
    impls,
    peak_memory,
    run_timed,
    hbm_bytes_per_s,
    device,
    dtype,
    layout,
    direction,
    c,
    impl,
):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    if device == "cuda" and impl == "fused" and not gscnn_ops.has_cuda_kernels():
        pytest.skip("gscnn_ops was built without its CUDA kernels")
    st = settings[device]
    leaves = make_inputs(
        device, dtype, st.n, c, st.h, st.w, requires_grad=(direction == "fwdbwd"), layout=layout
    )
    if impl == "floor":
        call = make_floor_call(leaves, device)
    elif impl == "matmul":
        call = make_matmul_call(leaves, device)
    else:
        call = make_call(impls[impl], leaves, direction, device)

    dtype_name = _DTYPE_NAME[dtype]
    benchmark.group = f"{device}-{direction}-C{c}-{dtype_name}" + (
        "" if layout == "nchw" else f"-{layout}"
    )
    info = benchmark.extra_info
    info.update(
        impl=impl,
        device=device,
        dtype=dtype_name,
        direction=direction,
        C=c,
        Cr=CR,
        layout=layout,
        shape=[st.n, c, st.h, st.w],
    )

    # 1. First call: compiles (for "compiled"), creates oneDNN primitives, etc.; checked against
    #    a float64 reference so a benchmark can never time a wrong result.
    what = f"gated_conv2d {impl} {benchmark.group}"
    if impl not in ("floor", "matmul"):
        check_close(
            call(),
            reference_result((device, dtype, layout, direction, c, st), leaves, direction),
            dtype,
            what,
        )

    # 2. Peak memory of one (warm) call, outside the timed rounds.
    info["peak_mem_bytes"] = peak_memory(call, device)

    # 3. Warm-up, then the timed rounds (conftest._run_timed).
    run_timed(
        benchmark,
        call,
        device,
        warmup_rounds=st.warmup_rounds,
        min_rounds=st.min_rounds,
        max_rounds=st.max_rounds,
        seconds_per_case=st.seconds_per_case,
    )

    if direction == "fwd":
        s, r = leaves[0], leaves[1]
        nbytes = min_forward_bytes(s, r, c)
        info["min_bytes"] = nbytes
        if device == "cuda":
            floor_s = nbytes / hbm_bytes_per_s
            info["bw_floor_s"] = floor_s
        stats = getattr(benchmark, "stats", None)
        if stats is not None:
            median = stats.stats.median
            info["achieved_bytes_per_s"] = nbytes / median
            if device == "cuda":
                # Fraction of the bandwidth roofline reached: 1.0 = as fast as a copy of the
                # minimum traffic.
                info["roofline_fraction"] = floor_s / median
