"""Benchmarks of edge_targets (GSCNN's edge ground truth): the fused op against the eager
reference, torch.compile(reference) and a SciPy implementation in the authors' manner (one
Euclidean distance transform per class per sample, on the CPU), in one run.

Groups (pytest-benchmark ``benchmark.group``) are "<device>-edge_targets-r<radius>-<dtype>": each
table compares the implementations on identical inputs. Every implementation's first result is
checked against the eager reference before timing. See conftest.py for how time and memory are
measured; ``python benchmarks/summarize.py out.json --impls fused,eager,compiled,scipy`` makes the
ratio tables.

Shape: N = 2 label maps of 512 x 1024 (half-resolution Cityscapes), 19 classes in regions of
irregular shape, 5% ignored pixels, radius 2 (the authors' edge band). CPU and CUDA alike; SciPy
only in the CPU groups (it is a CPU implementation; the CUDA op replaces it in a data loader).
"""

import pytest
import torch
import torch.nn.functional as F

import gscnn_ops

try:
    import numpy as np
    from scipy import ndimage
except ImportError:  # SciPy is optional: its cases are skipped
    ndimage = None


NUM_CLASSES = 19
IGNORE_INDEX = 255
RADIUS = 2.0
IMPLS = ("fused", "eager", "compiled", "scipy")
DEVICE_DTYPES = (
    ("cpu", torch.int64),
    ("cpu", torch.uint8),
    ("cuda", torch.int64),
    ("cuda", torch.uint8),
)
_DTYPE_NAME = {torch.int64: "i64", torch.uint8: "u8"}

# (n, h, w, seconds_per_case, min_rounds, max_rounds, warmup_rounds)
_REAL = {"cpu": (2, 512, 1024, 2.0, 5, 200, 2), "cuda": (2, 512, 1024, 1.0, 20, 1000, 5)}
_SMOKE = {"cpu": (1, 16, 24, 0.0, 1, 1, 0), "cuda": (1, 16, 24, 0.0, 1, 1, 0)}


def scipy_edge_targets(target, radius=2.0, ignore_index=255):
    """The definition through distance transforms, as the authors compute their edge maps: for
    every sample and every class c present in it, the Euclidean distance of each pixel to the
    nearest pixel of another valid class (scipy.ndimage.distance_transform_edt); the pixels of c
    within `radius` are edges. (The authors' code takes two transforms per class, for all 19
    classes, so it is slower than this.)"""
    labels = target.cpu().numpy()
    out = np.zeros(labels.shape, dtype=bool)
    for n in range(labels.shape[0]):
        lab = labels[n]
        valid = lab != ignore_index
        for c in np.unique(lab[valid]):
            mask = lab == c
            other = valid & ~mask
            if not other.any():  # edt of a map without zeros is meaningless: no edge anyway
                continue
            out[n] |= mask & (ndimage.distance_transform_edt(~other) <= radius)
    return torch.from_numpy(out).to(target.device)


def make_labels(device, dtype, n, h, w, seed=0):
    """Label maps of 19 classes in cells of about 32 x 32 px whose boundaries are made irregular
    (the class grid is sampled at smoothly jittered coordinates), with 5% of the pixels ignored,
    in blobs."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, NUM_CLASSES, (n, 1, max(2, h // 32), max(2, w // 32)), generator=g)
    ys = torch.linspace(-1, 1, h).view(1, h, 1).expand(n, h, w)
    xs = torch.linspace(-1, 1, w).view(1, 1, w).expand(n, h, w)
    jitter = (
        F.interpolate(
            torch.rand(n, 2, max(2, h // 8), max(2, w // 8), generator=g) - 0.5,
            size=(h, w),
            mode="bilinear",
            align_corners=False,
        )
        * 0.1
    )
    grid = torch.stack([xs + jitter[:, 0], ys + jitter[:, 1]], dim=-1)
    labels = F.grid_sample(coarse.float(), grid, mode="nearest", align_corners=True)[:, 0].long()
    blobs = F.interpolate(
        torch.rand(n, 1, max(2, h // 16), max(2, w // 16), generator=g),
        size=(h, w),
        mode="bilinear",
        align_corners=False,
    )[:, 0]
    labels[blobs > blobs.flatten().quantile(0.95)] = IGNORE_INDEX
    return labels.to(device=device, dtype=dtype)


@pytest.fixture(scope="module")
def compiled_edge_targets():
    return torch.compile(gscnn_ops.reference.edge_targets, dynamic=False)


def _params():
    out = []
    for device, dtype in DEVICE_DTYPES:
        marks = [pytest.mark.cuda] if device == "cuda" else []
        for impl in IMPLS:
            if impl == "scipy" and device != "cpu":
                continue
            out.append(
                pytest.param(
                    device, dtype, impl, marks=marks, id=f"{device}-{_DTYPE_NAME[dtype]}-{impl}"
                )
            )
    return out


_REF_CACHE = {}


@pytest.mark.parametrize("device, dtype, impl", _params())
def test_edge_targets(
    benchmark, smoke, peak_memory, run_timed, compiled_edge_targets, device, dtype, impl
):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    if device == "cuda" and impl == "fused" and not gscnn_ops.has_cuda_kernels():
        pytest.skip("gscnn_ops was built without its CUDA kernels")
    if impl == "scipy" and ndimage is None:
        pytest.skip("SciPy is not installed")
    n, h, w, seconds, min_rounds, max_rounds, warmup = (_SMOKE if smoke else _REAL)[device]
    fn = {
        "fused": gscnn_ops.edge_targets,
        "eager": gscnn_ops.reference.edge_targets,
        "compiled": compiled_edge_targets,
        "scipy": scipy_edge_targets,
    }[impl]
    labels = make_labels(device, dtype, n, h, w)

    def call():
        out = fn(labels, RADIUS, IGNORE_INDEX)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.group = f"{device}-edge_targets-r{RADIUS:g}-{_DTYPE_NAME[dtype]}"
    info = benchmark.extra_info
    info.update(
        impl=impl,
        device=device,
        dtype=_DTYPE_NAME[dtype],
        radius=RADIUS,
        num_classes=NUM_CLASSES,
        shape=[n, h, w],
    )

    # 1. First call (compiles, for "compiled"), checked against the eager reference.
    key = (device, dtype, n, h, w)
    if key not in _REF_CACHE:
        _REF_CACHE.clear()
        _REF_CACHE[key] = gscnn_ops.reference.edge_targets(labels.cpu(), RADIUS, IGNORE_INDEX)
    want = _REF_CACHE[key]
    got = call()
    assert got.dtype == torch.bool and got.shape == want.shape
    assert torch.equal(got.cpu(), want), f"edge_targets {impl} {benchmark.group}: wrong result"
    assert want.any() and not want.all()
    info["edge_fraction"] = want.float().mean().item()

    # 2. Peak memory of one call beyond what was live (the torch profiler does not see NumPy's
    #    allocations, so SciPy's figure would be wrong: not recorded).
    info["peak_mem_bytes"] = None if impl == "scipy" else peak_memory(call, device)

    # 3. Warm-up, then the timed rounds (conftest._run_timed).
    run_timed(
        benchmark,
        call,
        device,
        warmup_rounds=warmup,
        min_rounds=min_rounds,
        max_rounds=max_rounds,
        seconds_per_case=seconds,
    )
    if not benchmark.disabled:
        stats = getattr(benchmark, "stats", None)
        if stats is not None:
            # Bytes a kernel must move at least: the labels read once, the bool map written once.
            nbytes = labels.numel() * (labels.element_size() + 1)
            info["min_bytes"] = nbytes
            info["achieved_bytes_per_s"] = nbytes / stats.stats.median
