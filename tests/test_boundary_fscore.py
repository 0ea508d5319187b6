"""Boundary F-score: the fused counts op and gscnn_ops.metrics.BoundaryFScore against a plain
NumPy implementation of the DAVIS measure written here (seg2bmap by shifts, disk dilation by
explicit loops over the disk's offsets, DAVIS's conventions and threshold rule), the pure-PyTorch
reference, the CPU emulation of the CUDA kernels, and the CUDA kernels on a GPU."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import gscnn_ops
from gscnn_ops import reference
from gscnn_ops.metrics import BoundaryFScore, boundary_radii, scores_from_counts

import emulation
from conftest import requires_cuda
from op_checks import OpChecks

ops = torch.ops.gscnn_ops
OP = "gscnn_ops.boundary_fscore_counts"
IGNORE = 255


# --- the DAVIS measure in plain NumPy -----------------------------------------------------------


def davis_seg2bmap(seg):
    """DAVIS's seg2bmap, literally: xor with the east, south and south-east neighbours (zero
    outside the image), then the last row compares with its east neighbour only, the last column
    with its south neighbour only, and the bottom-right pixel is no boundary."""
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


def davis_dilate(mask, radius):
    """Binary dilation by the disk x^2 + y^2 <= radius^2, one shifted OR per disk offset."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy > radius * radius:
                continue
            y0, y1 = max(0, dy), min(h, h + dy)
            x0, x1 = max(0, dx), min(w, w + dx)
            if y1 > y0 and x1 > x0:
                out[y0:y1, x0:x1] |= mask[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    return out


def davis_bound_pix(bound_th, shape):
    return bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(shape))


def davis_f_measure(fg, gt, void, bound_th):
    """(precision, recall, F) of one binary mask pair, as DAVIS's f_measure."""
    radius = int(davis_bound_pix(bound_th, fg.shape))
    fg_b = davis_seg2bmap(fg & ~void)
    gt_b = davis_seg2bmap(gt & ~void)
    fg_dil = davis_dilate(fg_b, radius)
    gt_dil = davis_dilate(gt_b, radius)
    n_fg, n_gt = fg_b.sum(), gt_b.sum()
    if n_fg == 0 and n_gt > 0:
        p, r = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        p, r = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        p, r = 1.0, 1.0
    else:
        p = (fg_b & gt_dil).sum() / n_fg
        r = (gt_b & fg_dil).sum() / n_gt
    f = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    return p, r, f


def davis_scores(preds, targets, num_classes, thresholds, ignore_index=IGNORE):
    """Per image, class and threshold: P, R, F arrays (I, K, T), and presence (I, K)."""
    P, R, Fs, present = [], [], [], []
    for pred, target in zip(preds, targets):
        pred, target = np.asarray(pred), np.asarray(target)
        void = target == ignore_index
        pi, ri, fi, pres = [], [], [], []
        for k in range(num_classes):
            fg, gt = pred == k, target == k
            vals = [davis_f_measure(fg, gt, void, t) for t in thresholds]
            pi.append([v[0] for v in vals])
            ri.append([v[1] for v in vals])
            fi.append([v[2] for v in vals])
            pres.append(bool((fg & ~void).any() or (gt & ~void).any()))
        P.append(pi)
        R.append(ri)
        Fs.append(fi)
        present.append(pres)
    return (
        np.array(P, dtype=np.float64),
        np.array(R, dtype=np.float64),
        np.array(Fs, dtype=np.float64),
        np.array(present, dtype=bool),
    )


def release_and_strict_means(F_img, present):
    """The release's aggregation (mean over images per class, then over classes) and the strict
    one (per class over the images where it is present; NaN classes left out)."""
    per_class = F_img.mean(0).T  # (T, K)
    w = present[:, :, None].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        strict = ((F_img * w).sum(0) / w.sum(0)).T  # (T, K), NaN where never present
    return per_class, per_class.mean(1), strict, np.nanmean(strict, axis=1)


# --- inputs ---------------------------------------------------------------------------------------


def blobs(n, h, w, k, seed, scale=6):
    """Label maps of smooth blobs (argmax of upsampled noise): real boundaries, every class."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, k, max(1, h // scale), max(1, w // scale), generator=g)
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False).argmax(1)


def perturbed(target, k, seed, flip=0.15):
    """A plausible prediction: the target with some blobs of other labels pasted on it."""
    n, h, w = target.shape
    noise = blobs(n, h, w, k, seed, scale=4)
    g = torch.Generator().manual_seed(seed + 1)
    low = torch.rand(n, 1, max(1, h // 5), max(1, w // 5), generator=g)
    where = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[:, 0] < flip
    return torch.where(where, noise, target)


def with_ignore(target, seed, fraction=0.03):
    """Ignore regions: a rectangle touching the border, a block inside, scattered pixels."""
    target = target.clone()
    n, h, w = target.shape
    g = torch.Generator().manual_seed(seed)
    target[torch.rand(n, h, w, generator=g) < fraction] = IGNORE
    target[:, : max(1, h // 6), : max(1, w // 4)] = IGNORE
    target[:, h // 2 : h // 2 + max(1, h // 8), w // 3 : w // 3 + max(1, w // 7)] = IGNORE
    return target


def make_pair(n, h, w, k, seed, ignore=True):
    target = blobs(n, h, w, k, seed)
    pred = perturbed(target, k, seed + 100)
    if ignore:
        target = with_ignore(target, seed + 200)
    return pred, target


SHAPES = [  # n, h, w, k
    pytest.param((2, 31, 47, 4), id="31x47"),
    pytest.param((1, 64, 64, 3), id="64x64_one_word"),
    pytest.param((2, 33, 65, 5), id="33x65_word_plus_one"),
    pytest.param((1, 40, 130, 6), id="40x130_three_words"),
    pytest.param((3, 17, 9, 3), id="17x9"),
    pytest.param((1, 1, 1, 2), id="1x1"),
    pytest.param((2, 1, 70, 3), id="1x70"),
    pytest.param((2, 70, 1, 3), id="70x1"),
    pytest.param((1, 2, 2, 2), id="2x2"),
]

RADII = [0, 1, 2, 3, 5, 9, 12, 40]


# --- the counts op ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_counts_match_reference(shape):
    n, h, w, k = shape
    pred, target = make_pair(n, h, w, k, seed=h * 131 + w)
    got = gscnn_ops.boundary_fscore_counts(pred, target, k, RADII, IGNORE)
    want = reference.boundary_fscore_counts(pred, target, k, RADII, IGNORE)
    assert got.dtype == torch.int64 and got.shape == (n, k, len(RADII), 6)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("pred_dtype", [torch.uint8, torch.int32, torch.int64])
@pytest.mark.parametrize("target_dtype", [torch.uint8, torch.int32, torch.int64])
def test_label_dtypes(pred_dtype, target_dtype):
    pred, target = make_pair(2, 29, 71, 5, seed=7)
    want = reference.boundary_fscore_counts(pred, target, 5, [1, 3], IGNORE)
    got = gscnn_ops.boundary_fscore_counts(
        pred.to(pred_dtype), target.to(target_dtype), 5, [1, 3], IGNORE
    )
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_other_integer_dtypes_are_converted():
    pred, target = make_pair(1, 20, 30, 4, seed=8)
    want = reference.boundary_fscore_counts(pred, target, 4, [2], IGNORE)
    got = gscnn_ops.boundary_fscore_counts(
        pred.to(torch.int16), target.to(torch.int16), 4, [2], IGNORE
    )
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_strided_inputs():
    # Transposed views, a slice of a bigger batch, and an expanded (stride 0) batch.
    pred, target = make_pair(3, 40, 70, 4, seed=9)
    p_t, t_t = pred.transpose(1, 2), target.transpose(1, 2)
    assert not p_t.is_contiguous()
    torch.testing.assert_close(
        gscnn_ops.boundary_fscore_counts(p_t, t_t, 4, [1, 4], IGNORE),
        reference.boundary_fscore_counts(p_t, t_t, 4, [1, 4], IGNORE),
        rtol=0,
        atol=0,
    )
    p_s, t_s = pred[1:, 3:37, 5:69], target[1:, 3:37, 5:69]
    torch.testing.assert_close(
        gscnn_ops.boundary_fscore_counts(p_s, t_s, 4, [2], IGNORE),
        reference.boundary_fscore_counts(p_s, t_s, 4, [2], IGNORE),
        rtol=0,
        atol=0,
    )
    p_e, t_e = pred[:1].expand(3, -1, -1), target[:1].expand(3, -1, -1)
    got = gscnn_ops.boundary_fscore_counts(p_e, t_e, 4, [2], IGNORE)
    assert torch.equal(got[0], got[2])
    torch.testing.assert_close(
        got, reference.boundary_fscore_counts(p_e, t_e, 4, [2], IGNORE), rtol=0, atol=0
    )


def test_ignore_index_variants():
    pred, target = make_pair(2, 30, 50, 4, seed=10, ignore=False)
    target = target.clone()
    target[:, 5:12, 10:30] = -1
    for ignore_index in (-1, 255):
        want = reference.boundary_fscore_counts(pred, target, 4, [2, 5], ignore_index)
        if ignore_index == 255:  # then -1 is a bad label
            with pytest.raises(RuntimeError, match=r"argument 'target' has label -1"):
                gscnn_ops.boundary_fscore_counts(pred, target, 4, [2, 5], ignore_index)
            continue
        got = gscnn_ops.boundary_fscore_counts(pred, target, 4, [2, 5], ignore_index)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # An ignore_index inside [0, K): that class has no valid target pixel, but pred pixels of it
    # count (pred == k & valid), as in the per-class DAVIS masks.
    want = reference.boundary_fscore_counts(pred, target.clamp_min(0), 4, [2], 3)
    got = gscnn_ops.boundary_fscore_counts(pred, target.clamp_min(0), 4, [2], 3)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert got[:, 3, 0, 5].sum() == 0


def test_pred_may_hold_ignore_index_as_no_class():
    pred, target = make_pair(1, 25, 40, 3, seed=11, ignore=False)
    pred = pred.clone()
    pred[:, 10:20, 5:30] = IGNORE
    got = gscnn_ops.boundary_fscore_counts(pred, target, 3, [1, 3], IGNORE)
    torch.testing.assert_close(
        got, reference.boundary_fscore_counts(pred, target, 3, [1, 3], IGNORE), rtol=0, atol=0
    )


def test_hand_computed_square():
    # A 3x3 square of class 1 at rows 2..4, cols 3..5 of a 8x9 image of class 0. DAVIS's boundary
    # lies half a pixel towards the origin: the ring rows 1..4 x cols 2..5 without its 2x2 inside.
    target = torch.zeros(1, 8, 9, dtype=torch.int64)
    target[0, 2:5, 3:6] = 1
    b = davis_seg2bmap((target[0] == 1).numpy())
    # Rows 1..4 x cols 2..5 minus the interior (rows 2..3 x cols 3..4) = 16 - 4 = 12 pixels.
    assert b.sum() == 12 and b[1, 2] and b[4, 5] and not b[2, 3] and not b[0, 0]
    # Prediction: the same square moved one pixel right. Boundary pixels of pred within radius 0
    # of the target's: the overlap of the two rings.
    pred = torch.zeros_like(target)
    pred[0, 2:5, 4:7] = 1
    bp = davis_seg2bmap((pred[0] == 1).numpy())
    counts = gscnn_ops.boundary_fscore_counts(pred, target, 2, [0, 1], IGNORE)
    c1 = counts[0, 1]
    assert c1[0, 0] == bp.sum() == 12 and c1[0, 2] == 12
    assert c1[0, 1] == (bp & b).sum() and c1[0, 3] == (bp & b).sum()
    assert c1[1, 1] == 12 and c1[1, 3] == 12  # every ring pixel is within 1 px of the other ring
    assert c1[0, 4] == 9 and c1[0, 5] == 9


def test_border_is_never_a_boundary():
    # A mask that fills the image, or touches the border, has no boundary along the border.
    full = torch.ones(1, 6, 7, dtype=torch.int64)
    counts = gscnn_ops.boundary_fscore_counts(full, full, 2, [1], IGNORE)
    assert counts[0, 1, 0, 0] == 0 and counts[0, 1, 0, 4] == 42
    # Left half of class 1: the only boundary is the column next to the transition (column 2 of
    # class 0's and class 1's mask alike); the last row takes part (its east neighbour), the last
    # column never (its south neighbour is the same).
    half = torch.zeros(1, 6, 7, dtype=torch.int64)
    half[0, :, :3] = 1
    counts = gscnn_ops.boundary_fscore_counts(half, half, 2, [0], IGNORE)
    assert counts[0, 1, 0, 0] == 6 and counts[0, 0, 0, 0] == 6
    # Only the last column is class 1: boundary at column W-2 (its east neighbour differs), none
    # on the last column itself.
    last = torch.zeros(1, 5, 4, dtype=torch.int64)
    last[0, :, -1] = 1
    b = davis_seg2bmap((last[0] == 1).numpy())
    assert b[:, -1].sum() == 0 and b[:, -2].sum() == 5
    counts = gscnn_ops.boundary_fscore_counts(last, last, 2, [0], IGNORE)
    assert counts[0, 1, 0, 0] == 5


def test_seg2bmap_reference_matches_davis_literal():
    g = torch.Generator().manual_seed(12)
    for h, w in [(1, 1), (1, 5), (5, 1), (7, 9), (16, 70)]:
        masks = torch.rand(6, h, w, generator=g) < 0.5
        got = reference._seg2bmap(masks)
        for m, b in zip(masks, got):
            np.testing.assert_array_equal(b.numpy(), davis_seg2bmap(m.numpy()))


def test_counts_do_not_depend_on_thread_count(restore_num_threads):
    pred, target = make_pair(2, 90, 150, 7, seed=13)
    torch.set_num_threads(1)
    one = gscnn_ops.boundary_fscore_counts(pred, target, 7, [1, 3, 8], IGNORE)
    torch.set_num_threads(3)
    three = gscnn_ops.boundary_fscore_counts(pred, target, 7, [1, 3, 8], IGNORE)
    assert torch.equal(one, three)


def test_empty_inputs():
    for shape in [(0, 5, 6), (2, 0, 6), (2, 5, 0)]:
        p = torch.zeros(shape, dtype=torch.int64)
        counts = gscnn_ops.boundary_fscore_counts(p, p, 3, [1, 2], IGNORE)
        assert counts.shape == (shape[0], 3, 2, 6) and counts.sum() == 0
        assert torch.equal(emulated_counts(p, p, 3, [1, 2], IGNORE, 32, 2, 0), counts)


def test_large_radius_is_clamped_not_overflowing():
    pred, target = make_pair(1, 12, 20, 3, seed=14)
    got = gscnn_ops.boundary_fscore_counts(pred, target, 3, [2**40, 1000], IGNORE)
    # Every boundary pixel matches when the other map has any boundary pixel at all.
    has_both = (got[..., 0] > 0) & (got[..., 2] > 0)
    assert torch.equal(got[..., 1][has_both], got[..., 0][has_both])
    assert torch.equal(got[..., 3][has_both], got[..., 2][has_both])


# --- the CUDA kernels' block programs, on the emulated GPU (tests/emulation.py) ---------------

# (threads, blocks per plane, images per chunk): the production launch (0, 0: the op's own
# selection for an H100), a full warp, a single thread, an odd block with grid-stride loops, more
# blocks than cells (idle blocks), chunks of one and of two images.
LAUNCHES = [(0, 0, 0), (32, 4, 0), (1, 3, 1), (7, 2, 2), (64, 50, 0), (5, 1, 1)]


def emulated_counts(
    pred, target, num_classes, radii, ignore_index, threads=0, blocks=0, chunk=0, gpu="sm_90"
):
    emulation.load()
    return torch.ops.gscnn_testing.boundary_fscore_counts(
        pred,
        target,
        num_classes,
        radii,
        ignore_index,
        emulation.gpu(gpu),
        emulation.launch(threads, blocks),
        chunk,
    )


@pytest.mark.parametrize("shape", SHAPES[:6])
@pytest.mark.parametrize("threads,blocks,chunk", LAUNCHES)
def test_emulated_cuda_kernels_match_cpu_op(shape, threads, blocks, chunk):
    n, h, w, k = shape
    pred, target = make_pair(n, h, w, k, seed=w * 7 + h)
    want = gscnn_ops.boundary_fscore_counts(pred, target, k, RADII, IGNORE)
    got = emulated_counts(pred, target, k, RADII, IGNORE, threads, blocks, chunk)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_emulated_cuda_kernels_strided_and_mixed_dtypes():
    pred, target = make_pair(3, 30, 75, 5, seed=15)
    p, t = pred.transpose(1, 2).to(torch.int32), target.transpose(1, 2).to(torch.uint8)
    want = reference.boundary_fscore_counts(p, t, 5, [0, 2, 6], IGNORE)
    got = emulated_counts(p, t, 5, [0, 2, 6], IGNORE, 16, 3, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("chunk", [1, 0])
def test_emulated_cuda_kernels_report_bad_labels(chunk):
    pred, target = make_pair(3, 10, 70, 3, seed=16)
    target = target.clone()
    target[2, 4, 66] = 7
    target[1, 9, 3] = 9  # the first bad pixel in (n, y, x) order, found in the second chunk
    with pytest.raises(RuntimeError, match=r"argument 'target' has label 9 at \[1, 9, 3\]"):
        emulated_counts(pred, target, 3, [1], IGNORE, 8, 2, chunk)


# --- opcheck ------------------------------------------------------------------------------------


def test_compiled_call_matches_eager():
    pred, target = make_pair(2, 21, 33, 3, seed=18)
    fn = torch.compile(
        lambda p, t: ops.boundary_fscore_counts(p, t, 3, [1, 2], IGNORE),
        fullgraph=True,
        backend="aot_eager",
    )
    torch.testing.assert_close(
        fn(pred, target),
        gscnn_ops.boundary_fscore_counts(pred, target, 3, [1, 2], IGNORE),
        rtol=0,
        atol=0,
    )


# --- BoundaryFScore against the NumPy DAVIS measure -------------------------------------------

THRESHOLDS = (0, 1, 3, 5, 0.0025, 0.01, 0.05)


def check_against_davis(metric, preds, targets, num_classes, thresholds):
    P, R, Fi, present = davis_scores(preds, targets, num_classes, thresholds)
    s = metric.scores()
    np.testing.assert_allclose(s["precision"].numpy(), P, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s["recall"].numpy(), R, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s["f"].numpy(), Fi, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(s["present"].numpy(), present)
    per_class, mean_f, strict, strict_mean = release_and_strict_means(Fi, present)
    out = metric.compute()
    np.testing.assert_allclose(out["per_class"]["f"].numpy(), per_class, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["mean_f"].numpy(), mean_f, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        out["strict"]["per_class"]["f"].numpy(), strict, rtol=0, atol=1e-12, equal_nan=True
    )
    np.testing.assert_allclose(out["strict"]["mean_f"].numpy(), strict_mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["per_class"]["precision"].numpy(), P.mean(0).T, atol=1e-12)
    np.testing.assert_allclose(out["per_class"]["recall"].numpy(), R.mean(0).T, atol=1e-12)
    np.testing.assert_array_equal(out["strict"]["images_present"].numpy(), present.sum(0))
    return out


def test_metric_matches_davis_over_several_updates():
    k = 6
    metric = BoundaryFScore(k, thresholds=THRESHOLDS)
    preds, targets = [], []
    # Batches of different sizes and image sizes; class 5 is absent from everything but the last
    # batch; the second batch has an image whose prediction is empty of class 2.
    for i, (n, h, w) in enumerate([(2, 37, 53), (1, 64, 90), (3, 29, 31), (1, 45, 70)]):
        pred, target = make_pair(n, h, w, 5 if i < 3 else 6, seed=20 + i)
        if i == 1:
            pred = torch.where(pred == 2, torch.zeros_like(pred), pred)
        metric.update(pred, target)
        preds += list(pred.numpy())
        targets += list(target.numpy())
    assert metric.num_images == 7
    out = check_against_davis(metric, preds, targets, k, THRESHOLDS)
    assert out["thresholds"] == [0, 1, 3, 5, 0.0025, 0.01, 0.05]
    assert out["radii"][(64, 90)] == [0, 1, 3, 5, 1, 2, 6]
    assert out["num_images"] == 7
    # Class 5 is absent from both maps in 6 of the 7 images: F = 1 there (the release's quirk),
    # so the release mean of class 5 is above its strict mean.
    assert out["strict"]["images_present"][5] == 1
    assert torch.all(out["per_class"]["f"][:, 5] >= out["strict"]["per_class"]["f"][:, 5])


def test_metric_batches_and_single_images_agree():
    pred, target = make_pair(4, 33, 47, 4, seed=30)
    whole = BoundaryFScore(4, thresholds=(1, 3, 0.02))
    whole.update(pred, target)
    single = BoundaryFScore(4, thresholds=(1, 3, 0.02))
    for p, t in zip(pred, target):
        single.update(p, t)  # (H, W) maps
    assert torch.equal(whole.counts(), single.counts())
    a, b = whole.compute(), single.compute()
    torch.testing.assert_close(a["mean_f"], b["mean_f"], rtol=0, atol=0)
    torch.testing.assert_close(a["strict"]["mean_f"], b["strict"]["mean_f"], rtol=0, atol=0)


def test_reset_forgets_everything():
    pred, target = make_pair(2, 20, 30, 3, seed=31)
    metric = BoundaryFScore(3)
    metric.update(pred, target)
    metric.reset()
    assert metric.num_images == 0
    with pytest.raises(RuntimeError, match="no image"):
        metric.compute()
    metric.update(pred[:1], target[:1])
    assert metric.num_images == 1 and metric.counts().shape == (1, 3, 4, 6)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 9), (2, 9, 1), (1, 3, 5), (2, 15, 17)])
def test_metric_matches_davis_on_tiny_and_odd_images(shape):
    n, h, w = shape
    g = torch.Generator().manual_seed(h * 10 + w)
    pred = torch.randint(0, 3, shape, generator=g)
    target = torch.randint(0, 3, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.2] = IGNORE
    metric = BoundaryFScore(3, thresholds=(0, 1, 2, 0.3))
    metric.update(pred, target)
    check_against_davis(metric, list(pred.numpy()), list(target.numpy()), 3, (0, 1, 2, 0.3))


def test_conventions_for_empty_boundaries():
    h, w = 10, 12
    target = torch.zeros(1, h, w, dtype=torch.int64)
    target[0, 3:7, 4:9] = 1  # class 1 in the ground truth only
    pred = torch.zeros_like(target)
    pred[0, 2:5, 1:4] = 2  # class 2 in the prediction only
    metric = BoundaryFScore(4, thresholds=(2,))
    metric.update(pred, target)
    s = metric.scores()
    p, r, f = s["precision"][0, :, 0], s["recall"][0, :, 0], s["f"][0, :, 0]
    # class 1: no predicted boundary, some GT boundary -> P = 1, R = 0, F = 0
    assert (p[1].item(), r[1].item(), f[1].item()) == (1.0, 0.0, 0.0)
    # class 2: predicted boundary, no GT boundary -> P = 0, R = 1, F = 0
    assert (p[2].item(), r[2].item(), f[2].item()) == (0.0, 1.0, 0.0)
    # class 3: absent from both -> P = R = F = 1, and not present
    assert (p[3].item(), r[3].item(), f[3].item()) == (1.0, 1.0, 1.0)
    assert s["present"][0].tolist() == [True, True, True, False]
    out = metric.compute()
    # release mean over 4 classes includes class 3's F = 1; strict leaves it out (NaN)
    assert math.isnan(out["strict"]["per_class"]["f"][0, 3].item())
    f0 = f[0].item()
    assert out["mean_f"][0].item() == pytest.approx((f0 + 0 + 0 + 1) / 4)
    assert out["strict"]["mean_f"][0].item() == pytest.approx((f0 + 0 + 0) / 3)


def test_class_filling_the_image_has_no_boundary_but_is_present():
    ones = torch.ones(1, 8, 8, dtype=torch.int64)
    metric = BoundaryFScore(2, thresholds=(1,))
    metric.update(ones, ones)
    out = metric.compute()
    assert out["per_class"]["f"][0].tolist() == [1.0, 1.0]
    assert out["strict"]["images_present"].tolist() == [0, 1]
    assert out["strict"]["mean_f"][0].item() == 1.0


def test_f_is_zero_when_nothing_matches():
    counts = torch.tensor([[5, 0, 7, 0, 1, 1]])
    s = scores_from_counts(counts)
    assert s["precision"].item() == 0 and s["recall"].item() == 0 and s["f"].item() == 0


def test_boundary_radii_follow_davis():
    for h, w in [(1024, 2048), (512, 1024), (37, 53), (1, 1), (720, 720)]:
        for t in (0, 0.00088, 0.001875, 0.00375, 0.005, 0.0025, 0.008, 0.3, 1, 3, 12):
            assert boundary_radii([t], h, w) == [int(davis_bound_pix(t, (h, w)))], (h, w, t)
    # The release's fractions on Cityscapes' 1024x2048 and the paper's pixel thresholds.
    assert boundary_radii([3, 5, 9, 12], 1024, 2048) == [3, 5, 9, 12]


@pytest.mark.parametrize(
    "bad,match",
    [
        ((), "between 1 and 32"),
        (tuple(range(1, 34)), "between 1 and 32"),
        ((-1,), "non-negative"),
        ((2.5,), "whole number"),
        ((float("nan"),), "finite"),
        (("3",), "finite numbers"),
    ],
)
def test_bad_thresholds(bad, match):
    with pytest.raises(ValueError, match=match):
        BoundaryFScore(3, thresholds=bad)


def test_bad_metric_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        BoundaryFScore(0)
    with pytest.raises(ValueError, match="ignore_index"):
        BoundaryFScore(3, ignore_index=2.5)
    metric = BoundaryFScore(3)
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(H, W\)"):
        metric.update(
            torch.zeros(2, 1, 4, 4, dtype=torch.int64), torch.zeros(2, 1, 4, 4, dtype=torch.int64)
        )
    with pytest.raises(TypeError, match="tensors"):
        metric.update(np.zeros((4, 4)), torch.zeros(4, 4))


# --- bad arguments of the op ----------------------------------------------------------------------


def good():
    pred, target = make_pair(2, 9, 11, 3, seed=40, ignore=False)
    return dict(pred=pred, target=target, num_classes=3, radii=[1, 2], ignore_index=IGNORE)


BAD_CALLS = [  # id, replacements, argument named, pattern
    (
        "float_pred",
        dict(pred=torch.zeros(2, 9, 11)),
        "pred",
        r"integer label map .* got dtype Float",
    ),
    (
        "float_target",
        dict(target=torch.zeros(2, 9, 11, dtype=torch.float64)),
        "target",
        r"integer label map .* got dtype Double",
    ),
    (
        "pred_4d",
        dict(pred=torch.zeros(2, 1, 9, 11, dtype=torch.int64)),
        "pred",
        r"must be a 3-D \(N, H, W\) label map tensor, got a 4-D",
    ),
    ("target_2d", dict(target=torch.zeros(9, 11, dtype=torch.int64)), "target", r"got a 2-D"),
    (
        "shape_mismatch",
        dict(target=torch.zeros(2, 9, 12, dtype=torch.int64)),
        "target",
        r"same shape .* got pred \[2, 9, 11\] and target \[2, 9, 12\]",
    ),
    (
        "batch_mismatch",
        dict(target=torch.zeros(3, 9, 11, dtype=torch.int64)),
        "target",
        r"same shape",
    ),
    ("no_classes", dict(num_classes=0), "num_classes", r"must be positive, got 0"),
    ("no_radii", dict(radii=[]), "radii", r"between 1 and 32 entries, got 0"),
    ("too_many_radii", dict(radii=list(range(33))), "radii", r"got 33"),
    ("negative_radius", dict(radii=[1, -2]), "radii", r"non-negative"),
]


@pytest.mark.parametrize(
    "replace,arg,pattern", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
@pytest.mark.parametrize("entry", ["functional", "emulated_cuda"])
def test_bad_arguments(entry, replace, arg, pattern):
    args = {**good(), **replace}
    if entry == "functional":
        call, op = lambda: gscnn_ops.boundary_fscore_counts(**args), OP
    else:
        op = "gscnn_testing.boundary_fscore_counts"
        call = lambda: emulated_counts(  # noqa: E731
            args["pred"],
            args["target"],
            args["num_classes"],
            args["radii"],
            args["ignore_index"],
            32,
            2,
            0,
        )
    with pytest.raises(RuntimeError, match=re.escape(op) + ": ") as info:
        call()
    message = str(info.value)
    assert f"'{arg}'" in message, message
    assert re.search(pattern, message), message


@pytest.mark.parametrize(
    "name,value,where,pattern",
    [
        (
            "target",
            3,
            (1, 4, 7),
            r"argument 'target' has label 3 at \[1, 4, 7\]; expected a class in \[0, 3\) or "
            r"ignore_index 255",
        ),
        ("target", -2, (0, 0, 0), r"argument 'target' has label -2 at \[0, 0, 0\]"),
        ("pred", 5, (1, 8, 10), r"argument 'pred' has label 5 at \[1, 8, 10\]"),
        ("pred", -1, (0, 2, 3), r"argument 'pred' has label -1 at \[0, 2, 3\]"),
    ],
)
def test_bad_labels(name, value, where, pattern):
    args = good()
    t = args[name].clone()
    t[where] = value
    args[name] = t
    with pytest.raises(RuntimeError, match=re.escape(OP) + ": " + pattern):
        gscnn_ops.boundary_fscore_counts(**args)
    metric = BoundaryFScore(3)
    with pytest.raises(RuntimeError, match=pattern):
        metric.update(args["pred"], args["target"])
    assert metric.num_images == 0  # nothing was recorded


def test_bad_label_under_ignored_target_is_still_reported_for_pred():
    args = good()
    args["target"] = args["target"].clone()
    args["target"][0, 1, 1] = IGNORE
    args["pred"] = args["pred"].clone()
    args["pred"][0, 1, 1] = 42
    with pytest.raises(RuntimeError, match=r"'pred' has label 42"):
        gscnn_ops.boundary_fscore_counts(**args)


# --- CUDA (needs a GPU) ---------------------------------------------------------------------------


def test_cuda_kernel_registered_with_the_others():
    has = torch._C._dispatch_has_kernel_for_dispatch_key(
        "gscnn_ops::boundary_fscore_counts", "CUDA"
    )
    assert has == gscnn_ops.has_cuda_kernels()
    assert torch._C._dispatch_has_kernel_for_dispatch_key(
        "gscnn_ops::boundary_fscore_counts", "CPU"
    )


@requires_cuda
@pytest.mark.parametrize("shape", SHAPES)
def test_cuda_matches_cpu(shape):
    n, h, w, k = shape
    pred, target = make_pair(n, h, w, k, seed=h + w * 3)
    want = gscnn_ops.boundary_fscore_counts(pred, target, k, RADII, IGNORE)
    got = gscnn_ops.boundary_fscore_counts(
        pred.cuda(), target.to(torch.uint8).cuda(), k, RADII, IGNORE
    )
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)


@requires_cuda
def test_cuda_large_image_and_metric():
    pred, target = make_pair(2, 512, 1024, 19, seed=50)
    metric_cpu, metric_gpu = BoundaryFScore(19), BoundaryFScore(19)
    metric_cpu.update(pred, target)
    metric_gpu.update(pred.cuda(), target.cuda())
    assert torch.equal(metric_cpu.counts(), metric_gpu.counts())
    torch.testing.assert_close(
        metric_cpu.compute()["mean_f"], metric_gpu.compute()["mean_f"], rtol=0, atol=0
    )


@requires_cuda
def test_cuda_strided_inputs_and_bad_labels():
    pred, target = make_pair(2, 40, 90, 4, seed=51)
    p, t = pred.cuda().transpose(1, 2), target.cuda().transpose(1, 2)
    torch.testing.assert_close(
        gscnn_ops.boundary_fscore_counts(p, t, 4, [1, 3], IGNORE).cpu(),
        gscnn_ops.boundary_fscore_counts(p.cpu(), t.cpu(), 4, [1, 3], IGNORE),
        rtol=0,
        atol=0,
    )
    t = target.clone()
    t[1, 3, 5] = 9
    # Found by the kernel without a host sync; raised once the host waits for the device.
    gscnn_ops.boundary_fscore_counts(pred.cuda(), t.cuda(), 4, [1], IGNORE)
    with pytest.raises(RuntimeError, match=r"argument 'target' has label 9 at \[1, 3, 5\]"):
        gscnn_ops.check_errors()


@requires_cuda
def test_cuda_opcheck():
    pred, target = make_pair(2, 19, 70, 4, seed=52)
    opcheck(ops.boundary_fscore_counts.default, (pred.cuda(), target.cuda(), 4, [1, 3], IGNORE))


@requires_cuda
def test_mixed_devices_are_rejected():
    pred, target = make_pair(1, 9, 11, 3, seed=53)
    for p, t in [(pred.cuda(), target), (pred, target.cuda())]:
        with pytest.raises(
            RuntimeError, match=re.escape(OP) + r": argument 'target' is on .* but 'pred' is on"
        ):
            gscnn_ops.boundary_fscore_counts(p, t, 3, [1], IGNORE)


# --- the checks every op gets (op_checks.py) ---------------------------------------------------


class TestBoundaryFscoreCountsChecks(OpChecks):
    name = "boundary_fscore_counts"
    shapes = ((2, 31, 47, 4), (1, 1, 1, 2), (3, 17, 9, 3))  # n, h, w, k

    def inputs(self, shape, dtype, seed=0):
        n, h, w, k = shape
        pred, target = make_pair(n, h, w, k, seed)
        return (pred, target, k, [1, 3], IGNORE)

    def bad_inputs(self):
        pred, target = make_pair(1, 6, 6, 3, 0)
        return [
            ((pred, target[0], 3, [1], IGNORE), "target"),
            ((pred.float(), target, 3, [1], IGNORE), "pred"),
        ]
