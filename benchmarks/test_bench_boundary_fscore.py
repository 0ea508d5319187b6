"""Benchmarks of the boundary F-score: the fused op (gscnn_ops.boundary_fscore_counts and the
scores from its counts, what BoundaryFScore.update + compute run per image) against the DAVIS
implementation in NumPy/OpenCV that the Gated-SCNN release evaluates with, on one Cityscapes-sized
image: 1024 x 2048, 19 classes, thresholds 3, 5, 9, 12 px, ignore label 255.

Implementations (group "<device>-1x1024x2048-K19-T4"):
  fused          the fused op, then precision/recall/F from its counts;
  davis          DAVIS's f_measure per class and threshold, as the release calls it: boundary maps
                 recomputed in every call, cv2.dilate with a disk per call (scipy.ndimage when
                 OpenCV is missing: `pip install opencv-python-headless`);
  davis_hoisted  the same arithmetic with each class's boundary maps computed once and only the
                 dilations per threshold: a faster baseline than the release, for reference.
Every implementation's F (per class and threshold) is checked equal to the fused op's before it
is timed. extra_info records per-image time x 500 (the Cityscapes validation set) as
"est_500_images_s".

    python -m pytest benchmarks/test_bench_boundary_fscore.py --benchmark-only \
        --benchmark-json=out.json
    python benchmarks/summarize.py out.json --impls fused,davis,davis_hoisted

The inputs are synthetic but shaped like Cityscapes: ground truth of 19 classes in regions of
tens to hundreds of pixels with void regions (an ego-vehicle band at the bottom, blobs), a
prediction that follows it with boundaries displaced by up to a few pixels and about 8% of the
image pasted over with wrong labels; pred int64 (argmax output), target uint8 (as loaded).
"""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gscnn_ops
from gscnn_ops.metrics import boundary_radii, scores_from_counts

try:
    import cv2
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None
try:
    import scipy.ndimage as ndimage
except ImportError:  # pragma: no cover
    ndimage = None

K = 19
THRESHOLDS = (3, 5, 9, 12)
IGNORE = 255
IMAGES_PER_VAL_SET = 500
_REAL = dict(
    h=1024,
    w=2048,
    seconds=float(os.environ.get("GSCNN_BENCH_CPU_S", "2.0")),
    min_rounds=3,
    max_rounds=30,
)
_SMOKE = dict(h=96, w=160, seconds=0.0, min_rounds=1, max_rounds=1)


# --- inputs ---------------------------------------------------------------------------------------


def cityscapes_like(h, w, seed=0):
    """(pred int64 (1, h, w), target uint8 (1, h, w)), see the module docstring."""
    g = torch.Generator().manual_seed(seed)
    s = max(1, min(h, w) // 16)
    logits = torch.rand(1, K, max(1, h // s), max(1, w // s), generator=g)
    target = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).argmax(1)
    # Prediction: the target resampled through a smooth displacement field (a few pixels).
    amp = max(1.0, min(h, w) / 256.0)
    disp = torch.randn(1, 2, max(2, h // 64), max(2, w // 64), generator=g) * amp
    disp = F.interpolate(disp, size=(h, w), mode="bicubic", align_corners=False)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    grid = torch.stack(
        [(xs + disp[0, 0]) / max(w - 1, 1) * 2 - 1, (ys + disp[0, 1]) / max(h - 1, 1) * 2 - 1],
        dim=-1,
    )[None]
    pred = F.grid_sample(
        target[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=True
    )[:, 0].long()
    # Wrong labels pasted over about 8% of the image.
    wrong = F.interpolate(
        torch.rand(1, K, max(1, h // (s // 2 or 1)), max(1, w // (s // 2 or 1)), generator=g),
        size=(h, w),
        mode="bilinear",
    ).argmax(1)
    where = (
        F.interpolate(
            torch.rand(1, 1, max(1, h // s), max(1, w // s), generator=g),
            size=(h, w),
            mode="bilinear",
        )[:, 0]
        < 0.08
    )
    pred = torch.where(where, wrong, pred)
    # Void: the ego-vehicle band and some blobs.
    target = target.to(torch.uint8)
    target[:, int(h * 0.9) :, :] = IGNORE
    void = (
        F.interpolate(
            torch.rand(1, 1, max(1, h // s), max(1, w // s), generator=g),
            size=(h, w),
            mode="bilinear",
        )[:, 0]
        < 0.04
    )
    target[void] = IGNORE
    return pred, target


# --- the DAVIS implementation (NumPy + OpenCV), as the release runs it ------------------------


def _seg2bmap(seg):
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def _disk(r):
    offsets = np.arange(-r, r + 1)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= r * r).astype(np.uint8)


def _dilate(b, r):
    if cv2 is not None:
        return cv2.dilate(b.astype(np.uint8), _disk(r)).astype(bool)
    return ndimage.binary_dilation(b, structure=_disk(r).astype(bool))


def _f_from_boundaries(fg_b, gt_b, r):
    fg_dil, gt_dil = _dilate(fg_b, r), _dilate(gt_b, r)
    n_fg, n_gt = fg_b.sum(), gt_b.sum()
    if n_fg == 0 and n_gt > 0:
        p, rc = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        p, rc = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        p, rc = 1.0, 1.0
    else:
        p, rc = (fg_b & gt_dil).sum() / n_fg, (gt_b & fg_dil).sum() / n_gt
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def davis_f_measure(fg, gt, void, bound_th):
    """DAVIS's f_measure: boundaries of both masks (void removed), dilation, P, R, F."""
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(fg.shape))
    fg_b = _seg2bmap(fg & ~void)
    gt_b = _seg2bmap(gt & ~void)
    return _f_from_boundaries(fg_b, gt_b, int(bound_pix))


def davis(pred, target):
    """F (K, T) of one image, one f_measure call per class and threshold, as the release."""
    void = target == IGNORE
    return np.array(
        [[davis_f_measure(pred == k, target == k, void, t) for t in THRESHOLDS] for k in range(K)]
    )


def davis_hoisted(pred, target):
    """F (K, T): boundaries once per class, dilations per threshold."""
    valid = target != IGNORE
    radii = boundary_radii(THRESHOLDS, *pred.shape)
    out = np.zeros((K, len(THRESHOLDS)))
    for k in range(K):
        fg_b, gt_b = _seg2bmap((pred == k) & valid), _seg2bmap((target == k) & valid)
        out[k] = [_f_from_boundaries(fg_b, gt_b, r) for r in radii]
    return out


def fused(pred, target):
    """F (K, T) of one image: the fused counts op, then scores (BoundaryFScore's path)."""
    radii = boundary_radii(THRESHOLDS, pred.shape[-2], pred.shape[-1])
    counts = gscnn_ops.boundary_fscore_counts(pred, target, K, radii, IGNORE)
    return scores_from_counts(counts)["f"][0]


_INPUTS = {}
_FUSED_F = {}


def _params():
    out = []
    for impl in ("fused", "davis", "davis_hoisted"):
        out.append(pytest.param("cpu", impl, id=f"cpu-{impl}"))
    out.append(pytest.param("cuda", "fused", id="cuda-fused", marks=[pytest.mark.cuda]))
    return out


@pytest.mark.parametrize("device, impl", _params())
def test_boundary_fscore(benchmark, smoke, run_timed, device, impl):
    if impl != "fused" and cv2 is None and ndimage is None:
        pytest.skip("needs opencv-python-headless (or scipy) for the DAVIS baseline")
    if device == "cuda" and not (torch.cuda.is_available() and gscnn_ops.has_cuda_kernels()):
        pytest.skip("needs a GPU and gscnn_ops' CUDA kernels")
    st = _SMOKE if smoke else _REAL
    h, w = st["h"], st["w"]
    if (h, w) not in _INPUTS:
        _INPUTS[(h, w)] = cityscapes_like(h, w)
        _FUSED_F[(h, w)] = fused(*_INPUTS[(h, w)]).numpy()
    pred_t, target_t = _INPUTS[(h, w)]
    if impl == "fused":
        p, t = pred_t.to(device), target_t.to(device)

        def call():
            f = fused(p, t)
            if device == "cuda":
                torch.cuda.synchronize()
            return f.cpu().numpy()
    else:
        p, t = pred_t[0].numpy(), target_t[0].numpy()
        fn = davis if impl == "davis" else davis_hoisted

        def call():
            return fn(p, t)

    benchmark.group = f"{device}-1x{h}x{w}-K{K}-T{len(THRESHOLDS)}"
    info = benchmark.extra_info
    info.update(
        impl=impl,
        device=device,
        shape=[1, h, w],
        classes=K,
        thresholds=list(THRESHOLDS),
        dilation=("opencv" if cv2 is not None else "scipy") if impl != "fused" else None,
    )

    # Same numbers: every implementation's F equals the fused op's on the CPU.
    np.testing.assert_allclose(call(), _FUSED_F[(h, w)], rtol=0, atol=1e-12)

    run_timed(
        benchmark,
        call,
        device,
        warmup_rounds=1,
        min_rounds=st["min_rounds"],
        max_rounds=st["max_rounds"],
        seconds_per_case=st["seconds"],
    )
    stats = getattr(benchmark, "stats", None)
    if not benchmark.disabled and stats is not None:
        info["est_500_images_s"] = stats.stats.median * IMAGES_PER_VAL_SET
