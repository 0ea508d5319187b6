"""boundary_potential and dual_task_loss (Gated-SCNN eq. 4-5): fused CPU kernels, the CUDA
kernels' code emulated on the CPU, and CUDA (when a GPU is there), against the pure-PyTorch
reference (gscnn_ops/reference.py), plus the properties the loss must have."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import gscnn_ops
from gscnn_ops import reference
from gscnn_ops.ops import DUAL_TASK_THRESHOLD

import emulation
from conftest import LOW_PRECISION_EPS, TIGHT_TOL, requires_cuda
from op_checks import OpChecks

ops = torch.ops.gscnn_ops
IGN = 255


def blob_labels(N, H, W, K, seed=0, ignore_frac=0.0):
    """Piecewise-constant labels (upsampled coarse random classes: regions with boundaries),
    optionally with rectangular ignore regions."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, K, (N, 1, max(1, H // 4 + 1), max(1, W // 4 + 1)), generator=g)
    y = F.interpolate(coarse.double(), size=(H, W), mode="nearest").long()[:, 0]
    if ignore_frac > 0:
        for n in range(N):
            h0 = int(torch.randint(0, H, (1,), generator=g))
            w0 = int(torch.randint(0, W, (1,), generator=g))
            hh = max(1, int(H * ignore_frac))
            ww = max(1, int(W * ignore_frac))
            y[n, h0 : h0 + hh, w0 : w0 + ww] = IGN
    return y


def rand_prob(N, K, H, W, seed=0, dtype=torch.float64, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, K, H, W, generator=g, dtype=torch.float64) * scale
    return logits.softmax(1).to(dtype)


def ref_loss_and_grad(prob, target, sigma=1.0, threshold=DUAL_TASK_THRESHOLD, ignore_index=IGN):
    p = prob.detach().double().requires_grad_()
    loss = reference.dual_task_loss(p, target, sigma, threshold, ignore_index)
    (g,) = torch.autograd.grad(loss, p)
    return loss.detach(), g


def fused_loss_and_grad(prob, target, sigma=1.0, threshold=DUAL_TASK_THRESHOLD, ignore_index=IGN):
    p = prob.detach().clone().requires_grad_()
    loss = gscnn_ops.dual_task_loss(p, target, sigma, threshold, ignore_index)
    (g,) = torch.autograd.grad(loss, p)
    return loss.detach(), g


SHAPES = [  # N, K, H, W
    (2, 3, 13, 17),
    (1, 4, 40, 300),  # wider than a CPU tile (256 columns): tiles meet inside the image
    (1, 3, 36, 600),  # a CPU tile whose halo is inside the columns: its rows read in place
    (1, 2, 70, 9),  # taller than a CPU tile (32 rows)
    (2, 2, 1, 1),
    (1, 3, 1, 12),  # one row: the halo is all replicate border
    (1, 3, 5, 2),  # smaller than the Gaussian radius
]


# --- reference sanity -----------------------------------------------------------------------


def test_reference_taps():
    g = reference.gaussian_taps(1.0)
    assert g.numel() == 7 and abs(g.sum().item() - 1) < 1e-15
    assert reference.gaussian_taps(0.4).numel() == 5  # R = ceil(1.2) = 2
    torch.testing.assert_close(g, g.flip(0))


def test_reference_step_edge_peak():
    # A vertical one-hot step edge between columns 9 and 10: zeta = 0.2267 at the two pixels
    # beside the edge (central differences of the blurred step, / sqrt 2), symmetric.
    p = torch.zeros(1, 1, 9, 20, dtype=torch.float64)
    p[..., 10:] = 1
    z = reference.boundary_potential(p, 1.0)[0, 0, 4]
    # The two peaks are equal up to rounding (the last bit differs between CPU instruction sets).
    assert 0.22 < z.max().item() < 0.23
    torch.testing.assert_close(z[9], z.max(), rtol=1e-12, atol=0)
    torch.testing.assert_close(z[:10], z[10:].flip(0))
    assert z[:6].abs().max() == 0 and z[14:].abs().max() == 0  # beyond R + 1: exactly 0


# --- fused vs reference ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sigma", [1.0, 0.6])
def test_boundary_potential_matches_reference(shape, dtype, sigma):
    prob = rand_prob(*shape, dtype=dtype)
    gz = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    p = prob.clone().requires_grad_()
    zeta = gscnn_ops.boundary_potential(p, sigma)
    (g,) = torch.autograd.grad(zeta, p, gz.to(dtype))
    p64 = prob.double().requires_grad_()
    zref = reference.boundary_potential(p64, sigma)
    (gref,) = torch.autograd.grad(zref, p64, gz)
    assert zeta.dtype == dtype and g.dtype == dtype
    torch.testing.assert_close(zeta.double(), zref, **TIGHT_TOL[dtype])
    torch.testing.assert_close(g.double(), gref, **TIGHT_TOL[dtype])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("ignore_frac", [0.0, 0.3])
def test_dual_task_loss_matches_reference(shape, dtype, ignore_frac):
    N, K, H, W = shape
    prob = rand_prob(*shape, dtype=dtype)
    target = blob_labels(N, H, W, K, ignore_frac=ignore_frac)
    loss, g = fused_loss_and_grad(prob, target)
    rloss, rg = ref_loss_and_grad(prob, target)
    assert loss.dtype == dtype and g.dtype == dtype
    torch.testing.assert_close(loss.double(), rloss, **TIGHT_TOL[dtype])
    torch.testing.assert_close(g.double(), rg, **TIGHT_TOL[dtype])


@pytest.mark.parametrize("sigma,threshold", [(1.0, 0.0), (2.0, 0.05), (0.5, 1e-3)])
def test_dual_task_loss_other_parameters(sigma, threshold):
    prob = rand_prob(2, 3, 30, 41)
    target = blob_labels(2, 30, 41, 3, ignore_frac=0.2, seed=5)
    target[0, 0, 0] = 7  # another ignore label
    target[target == IGN] = 7
    loss, g = fused_loss_and_grad(prob, target, sigma, threshold, 7)
    rloss, rg = ref_loss_and_grad(prob, target, sigma, threshold, 7)
    torch.testing.assert_close(loss, rloss, **TIGHT_TOL[torch.float64])
    torch.testing.assert_close(g, rg, **TIGHT_TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype):
    # Inputs rounded to dtype; the kernels accumulate in float32 and round each output once, so
    # against the float64 reference of the same rounded inputs an element is off by about one
    # epsilon of the dtype relative to itself, plus one epsilon of the largest magnitude.
    N, K, H, W = 2, 3, 24, 37
    prob = rand_prob(N, K, H, W, dtype=dtype)
    target = blob_labels(N, H, W, K, ignore_frac=0.2)
    eps = LOW_PRECISION_EPS[dtype]
    zeta = gscnn_ops.boundary_potential(prob)
    zref = reference.boundary_potential(prob.double())
    assert zeta.dtype == dtype
    torch.testing.assert_close(zeta.double(), zref, rtol=eps, atol=eps * zref.abs().max().item())
    loss, g = fused_loss_and_grad(prob, target)
    rloss, rg = ref_loss_and_grad(prob, target)
    assert loss.dtype == dtype and g.dtype == dtype
    torch.testing.assert_close(loss.double(), rloss, rtol=eps, atol=0)
    torch.testing.assert_close(g.double(), rg, rtol=eps, atol=eps * rg.abs().max().item())


def test_strided_and_channels_last_inputs():
    prob = rand_prob(2, 3, 11, 14)
    target = blob_labels(2, 11, 14, 3, ignore_frac=0.2)
    want_loss, want_g = ref_loss_and_grad(prob, target)
    cl = prob.contiguous(memory_format=torch.channels_last)
    loss, g = fused_loss_and_grad(cl, target)
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(g, want_g)
    # A channel slice of a wider tensor and a transposed target view are read through strides.
    wide = torch.cat([prob, prob[:, :1]], 1)[:, :3]
    tt = target.transpose(1, 2).contiguous().transpose(1, 2)
    loss2, g2 = fused_loss_and_grad(wide, tt)
    torch.testing.assert_close(loss2, want_loss)
    torch.testing.assert_close(g2, want_g)
    z = gscnn_ops.boundary_potential(cl)
    assert z.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(z, reference.boundary_potential(prob))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_reads_equal_copies_bit_for_bit(dtype):
    """The CPU kernel reads unit-stride rows inside the image in place (the skip test's range in
    vectors, interior rows blurred where they are) and copies the rest (any other stride: the
    scalar range, clamped row copies); both must give the same values bit for bit. Classes 3 .. 5
    are in no label (their pairs take the range test; most are skipped), the others cover part
    of each tile (rows of the one-hot labels without the class), and 600 columns give tiles whose
    halo is inside the image."""
    N, K, H, W = 1, 6, 40, 600
    target = blob_labels(N, H, W, 3, seed=7, ignore_frac=0.1)
    prob = peaked_prob(target, K, dtype=dtype, noise=1e-3, seed=7)
    loss, g = fused_loss_and_grad(prob, target)
    loss_cl, g_cl = fused_loss_and_grad(prob.contiguous(memory_format=torch.channels_last), target)
    assert loss.item() > 0
    assert torch.equal(loss, loss_cl) and torch.equal(g, g_cl)
    z = gscnn_ops.boundary_potential(prob)
    z_cl = gscnn_ops.boundary_potential(prob.contiguous(memory_format=torch.channels_last))
    assert torch.equal(z, z_cl)


def test_deterministic():
    prob = rand_prob(2, 5, 50, 300, dtype=torch.float32)
    target = blob_labels(2, 50, 300, 5, ignore_frac=0.1)
    a = fused_loss_and_grad(prob, target)
    b = fused_loss_and_grad(prob, target)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --- gradcheck, opcheck, compile ------------------------------------------------------------


def test_gradcheck_dual_task_loss():
    # Random softmax maps: with this seed no zeta sits within the finite-difference step of the
    # threshold or of zeta_hat (checked), so the loss is smooth around the input.
    prob = rand_prob(1, 3, 7, 8, seed=1)
    target = blob_labels(1, 7, 8, 3, seed=1)
    target[0, 0, 0] = IGN
    z = reference.boundary_potential(prob)
    onehot = (
        F.one_hot(target.clamp_max(2), 3).permute(0, 3, 1, 2).double() * (target != IGN)[:, None]
    )
    zh = reference.boundary_potential(onehot)
    assert (z - DUAL_TASK_THRESHOLD).abs().min() > 1e-5 and (z - zh).abs().min() > 1e-5  # step 1e-6
    p = prob.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda q: ops.dual_task_loss(q, target, 1.0, DUAL_TASK_THRESHOLD, IGN)[0], (p,)
    )


def test_opcheck():
    prob = rand_prob(2, 3, 9, 10, dtype=torch.float32).requires_grad_()
    target = blob_labels(2, 9, 10, 3, ignore_frac=0.2)
    torch.library.opcheck(ops.boundary_potential, (prob, 1.0))
    torch.library.opcheck(ops.dual_task_loss, (prob, target, 1.0, 0.01, IGN))
    gz = torch.randn(2, 3, 9, 10)
    torch.library.opcheck(ops.boundary_potential_backward, (gz, prob.detach(), 1.0))
    count = ops.dual_task_loss(prob.detach(), target, 1.0, 0.01, IGN)[1]
    torch.library.opcheck(
        ops.dual_task_loss_backward,
        (torch.tensor(1.0), prob.detach(), target, count, 1.0, 0.01, IGN),
    )


def test_torch_compile_fullgraph():
    prob = rand_prob(2, 3, 12, 15, dtype=torch.float32)
    target = blob_labels(2, 12, 15, 3, ignore_frac=0.2)

    def f(logits, y):
        p = logits.softmax(1)
        return gscnn_ops.dual_task_loss(p, y) + gscnn_ops.boundary_potential(p).mean()

    logits = prob.log().requires_grad_()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(logits, target)
    (g,) = torch.autograd.grad(out, logits)
    l2 = logits.detach().clone().requires_grad_()
    want = f(l2, target)
    (gw,) = torch.autograd.grad(want, l2)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(g, gw)


# --- the CUDA kernels' block program, on the emulated GPU (tests/emulation.py) ----------------

# (tile_h, tile_w, threads): the production launch (0: the op's own selection for an H100), tiles
# smaller than the image with halos crossing borders, tiles larger than the image, a thread count
# that divides nothing, one thread, a full block.
LAUNCHES = [
    (0, 0, 0),
    (4, 5, 7),
    (8, 8, 32),
    (3, 16, 1),
    (32, 32, 256),
    (1, 1, 3),
    (16, 8, 64),
    (8, 22, 64),  # the conflict-free strides with an odd XG: the two-row walk wider than XG
]


def emulated(op, *args, tile=(0, 0), threads=0, blocks=0, memory=-1, gpu="sm_90"):
    emulation.load()
    return getattr(torch.ops.gscnn_testing, op)(
        *args, emulation.gpu(gpu), emulation.launch(threads, blocks, tile, memory)
    )


def emulated_loss_and_grad(
    prob, target, sigma, grad=1.0, grad_dtype=torch.float64, between=None, **launch
):
    """The emulated GPU's dual-task loss forward, then its backward for d loss = grad: (loss, count,
    gradient). between(prob) runs between the two launches."""
    loss, count = emulated(
        "dual_task_loss", prob, target, sigma, DUAL_TASK_THRESHOLD, IGN, **launch
    )
    if between is not None:
        between(prob)
    g = emulated(
        "dual_task_loss_backward",
        torch.tensor(grad, dtype=grad_dtype),
        prob,
        target,
        count,
        sigma,
        DUAL_TASK_THRESHOLD,
        IGN,
        **launch,
    )
    return loss, count, g


@pytest.mark.parametrize("tile_h,tile_w,threads", LAUNCHES)
@pytest.mark.parametrize("shape", [(2, 3, 13, 17), (1, 2, 1, 9), (1, 2, 6, 2)])
def test_emulated_cuda_potential(tile_h, tile_w, threads, shape):
    prob = rand_prob(*shape)
    gz = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    launch = dict(tile=(tile_h, tile_w), threads=threads, blocks=3 if threads else 0)
    zeta = emulated("boundary_potential", prob, 1.0, **launch)
    g = emulated("boundary_potential_backward", gz, prob, 1.0, **launch)
    p = prob.clone().requires_grad_()
    zref = reference.boundary_potential(p, 1.0)
    (gref,) = torch.autograd.grad(zref, p, gz)
    torch.testing.assert_close(zeta, zref, **TIGHT_TOL[torch.float64])
    torch.testing.assert_close(g, gref, **TIGHT_TOL[torch.float64])


@pytest.mark.parametrize("tile_h,tile_w,threads", LAUNCHES)
@pytest.mark.parametrize("shape", [(2, 3, 13, 17), (1, 2, 1, 9)])
@pytest.mark.parametrize("sigma", [1.0, 0.5])
def test_emulated_cuda_dual_task_loss(tile_h, tile_w, threads, shape, sigma):
    N, K, H, W = shape
    prob = rand_prob(*shape)
    target = blob_labels(N, H, W, K, ignore_frac=0.25)
    launch = dict(tile=(tile_h, tile_w), threads=threads, blocks=2 if threads else 0)
    loss, count, grad = emulated_loss_and_grad(prob, target, sigma, grad=2.0, **launch)
    rloss, rg = ref_loss_and_grad(prob, target, sigma)
    torch.testing.assert_close(loss, rloss, **TIGHT_TOL[torch.float64])
    torch.testing.assert_close(grad, 2 * rg, **TIGHT_TOL[torch.float64])
    # |P+| agrees with the CPU kernel's
    assert (
        ops.dual_task_loss(prob, target, sigma, DUAL_TASK_THRESHOLD, IGN)[1].item() == count.item()
    )


@pytest.mark.parametrize("W", [70, 72])
@pytest.mark.parametrize("tile_h,tile_w,threads", [(0, 0, 0), (8, 8, 32), (16, 8, 64), (3, 16, 1)])
def test_emulated_cuda_skipping_is_exact(tile_h, tile_w, threads, W):
    """The block program skips (tile, class) pairs that cannot reach P+ (a barrier that ORs the
    threads' verdicts): most pairs here, next to pairs only one condition would skip. W = 72:
    rows 4-aligned, a skipped pair's zeros are stored four at a time (70: pixel by pixel)."""
    N, K, H = 2, 5, 40
    labels = blob_labels(N, H, W, 2, seed=3, ignore_frac=0.2)
    prob = peaked_prob(labels, K, noise=1e-3)
    prob[0, 4, 20:, 50:] += 0.1  # class 4: in no label, but with an edge
    prob[1] = 1 / K  # a flat prediction: the labels' boundaries alone are in P+
    launch = dict(tile=(tile_h, tile_w), threads=threads, blocks=2 if threads else 0)
    dirty_heap(prob)
    loss, count, grad = emulated_loss_and_grad(prob, labels, 1.0, **launch, between=dirty_heap)
    rloss, rg = ref_loss_and_grad(prob, labels)
    torch.testing.assert_close(loss, rloss, **TIGHT_TOL[torch.float64])
    torch.testing.assert_close(grad, rg, **TIGHT_TOL[torch.float64])


@pytest.mark.parametrize("K", [40, 70])
@pytest.mark.parametrize("tile_h,tile_w,threads", [(0, 0, 0), (8, 8, 32), (5, 7, 13)])
def test_emulated_cuda_many_classes(K, tile_h, tile_w, threads):
    """Classes present in a tile are a 64-bit mask in the block program: labels of classes past 31
    (the mask's second word) and past 63 (beyond the mask: every class counts as present) must
    give the reference's loss and gradient, like the first 32."""
    N, H, W = 1, 19, 23
    g = torch.Generator().manual_seed(5)
    pool = torch.tensor([0, 3, 31, 32, 39] + ([63, 64, 69] if K > 64 else []))
    blocks = pool[torch.randint(0, len(pool), (N, 4, 5), generator=g)]
    target = blocks.repeat_interleave(5, 1).repeat_interleave(5, 2)[:, :H, :W].contiguous()
    target[0, :2, :2] = IGN
    prob = peaked_prob(target.clamp(0, K - 1), K, noise=1e-2)
    launch = dict(tile=(tile_h, tile_w), threads=threads, blocks=2 if threads else 0)
    loss, count, grad = emulated_loss_and_grad(prob, target, 1.0, **launch)
    rloss, rg = ref_loss_and_grad(prob, target)
    assert rloss > 0
    torch.testing.assert_close(loss, rloss, **TIGHT_TOL[torch.float64])
    torch.testing.assert_close(grad, rg, **TIGHT_TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_emulated_cuda_vector_loads_and_stores(dtype):
    """Rows of P that are contiguous and 4-aligned (W = 44) are read four pixels at a time where
    a group of four lies inside the image (16 x 16 tiles: the halo starts on a multiple of 4),
    clamped pixel by pixel at the image's left and right edges; the gradient is written four
    pixels at a time likewise. Bit for bit the loss and gradient of the same probabilities with
    columns not contiguous (every group read pixel by pixel), and the reference's."""
    N, K, H, W = 2, 3, 21, 44
    prob = rand_prob(N, K, H, W, dtype=dtype)
    target = blob_labels(N, H, W, K, ignore_frac=0.1)
    strided = prob.transpose(2, 3).contiguous().transpose(2, 3)  # stride 1 along H, not W
    launch = dict(tile=(16, 16), threads=64, blocks=3, grad_dtype=dtype)
    loss, count, grad = emulated_loss_and_grad(prob, target, 1.0, **launch)
    loss_s, count_s, grad_s = emulated_loss_and_grad(strided, target, 1.0, **launch)
    assert torch.equal(loss, loss_s) and torch.equal(count, count_s) and torch.equal(grad, grad_s)
    rloss, rg = ref_loss_and_grad(prob.double(), target)
    assert rloss > 0
    tol = TIGHT_TOL[torch.float64 if dtype == torch.float64 else torch.float32]
    if dtype != torch.bfloat16:
        torch.testing.assert_close(loss.double(), rloss, **tol)
        torch.testing.assert_close(grad.double(), rg, **tol)


def test_emulated_cuda_64_bit_plane_offsets():
    """The block program addresses an image plane with 32-bit offsets when the plane's strides
    allow, with 64-bit ones otherwise (common/boundary_potential_math.h, with_plane_offsets). A
    stride of 2^40 on a dimension of size 1 takes the 64-bit code without a 2^40-element tensor:
    the same loss and gradient as the contiguous inputs. (It runs the 64-bit instantiation; a
    plane whose offsets really pass 2^31 needs a tensor of 8 GB, too large for the tests.)"""
    prob = rand_prob(1, 3, 1, 37)
    target = blob_labels(1, 1, 37, 3)
    huge = 2**40
    prob_s = torch.as_strided(prob.clone(), prob.shape, (3 * 37, 37, huge, 1))
    target_s = torch.as_strided(target.clone(), target.shape, (37, huge, 1))
    loss, count, grad = emulated_loss_and_grad(prob, target, 1.0, tile=(8, 8), threads=32)
    loss_s, count_s, grad_s = emulated_loss_and_grad(prob_s, target_s, 1.0, tile=(8, 8), threads=32)
    assert loss > 0
    assert torch.equal(loss, loss_s) and torch.equal(count, count_s)
    assert torch.equal(grad, grad_s)


def test_emulated_cuda_row_strides_free_of_bank_conflicts():
    """The loss kernels at the paper's sigma with 32 x 32 tiles, float32: on an H100 their buffers
    take the conflict-free row strides (common/boundary_potential_math.h, Layout), on an sm_89
    (99 KiB per block) the backward's take the compact ones. Both give bit-identical results, and
    the emulator's wavefronts (bank conflicts counted) stay near what the same accesses take free
    of conflicts with the first (forward 2.9 %, backward 14 % over: the row blur's stores of X
    and the loads of the labels and probabilities are left; 19 % while the adjoint of the
    differences walked one row of 10 groups, and in the forward while its two-row column blur
    walked XG = 9 groups, not W2 = 10), not with the second (42 %)."""
    g = torch.Generator().manual_seed(0)
    N, K, H, W = 1, 3, 64, 64
    prob = torch.softmax(3 * torch.randn(N, K, H, W, generator=g), 1)
    blocks = torch.randint(0, K, (N, H // 16, W // 16), generator=g)
    target = blocks.repeat_interleave(16, 1).repeat_interleave(16, 2)
    excess, results = {}, {}
    for gpu in ("sm_90", "sm_89"):
        loss, count = emulated(
            "dual_task_loss", prob, target, 1.0, DUAL_TASK_THRESHOLD, IGN, gpu=gpu
        )
        fwd = emulation.last_launch()
        grad = emulated(
            "dual_task_loss_backward",
            torch.tensor(1.0, dtype=torch.float64),
            prob,
            target,
            count,
            1.0,
            DUAL_TASK_THRESHOLD,
            IGN,
            gpu=gpu,
        )
        bwd = emulation.last_launch()
        results[gpu] = (loss, count, grad)
        excess[gpu] = [
            (r["shared_load_wavefronts"] + r["shared_store_wavefronts"])
            / r["shared_conflict_free_wavefronts"]
            - 1
            for r in (fwd, bwd)
        ]
        assert (fwd["tile_h"], fwd["tile_w"], bwd["tile_h"], bwd["tile_w"]) == (32, 32, 32, 32)
    for a, b in zip(results["sm_90"], results["sm_89"]):
        assert torch.equal(a, b)
    assert excess["sm_90"][0] < 0.05 and excess["sm_89"][0] < 0.05
    assert excess["sm_90"][1] < 0.16
    assert excess["sm_89"][1] > 0.35


@pytest.mark.parametrize("gpu", ["sm_75", "sm_86", "sm_90"])
def test_emulated_cuda_large_sigma_runs_from_global_memory(gpu):
    # sigma = 10: a halo of 62 pixels in the backward. Its buffers fit no GPU's shared memory at
    # any tile, so the selection puts them in global scratch memory instead of failing (as the
    # old kernels did for sigma > 8 on an H100, > 5 on sm_86/89).
    prob = rand_prob(1, 2, 9, 11)
    target = blob_labels(1, 9, 11, 2)
    loss, count, grad = emulated_loss_and_grad(prob, target, 10.0, gpu=gpu)
    assert emulation.last_launch()["scratch_bytes"] > 0
    rloss, rg = ref_loss_and_grad(prob, target, 10.0)
    torch.testing.assert_close(loss, rloss, **TIGHT_TOL[torch.float64])
    torch.testing.assert_close(grad, rg, **TIGHT_TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_emulated_cuda_reduced_precision(dtype):
    # Against the float64 reference of the same (rounded) probabilities. The loss accumulates in
    # float32 then float64 and is rounded once to the dtype; the gradient is a float32 sum of at
    # most (2R + 1)^2 products rounded once: within an epsilon of the dtype of the largest value.
    prob = rand_prob(1, 3, 20, 33, dtype=dtype)
    target = blob_labels(1, 20, 33, 3, ignore_frac=0.2)
    loss, count, grad = emulated_loss_and_grad(prob, target, 1.0, grad_dtype=dtype)
    rloss, rg = ref_loss_and_grad(prob.double(), target)
    if dtype == torch.float32:
        torch.testing.assert_close(loss.double(), rloss, **TIGHT_TOL[torch.float32])
        torch.testing.assert_close(grad.double(), rg, **TIGHT_TOL[torch.float32])
        return
    eps = LOW_PRECISION_EPS[dtype]
    assert loss.dtype == grad.dtype == dtype
    torch.testing.assert_close(loss.double(), rloss, rtol=eps, atol=0)
    torch.testing.assert_close(grad.double(), rg, rtol=eps, atol=eps * rg.abs().max().item())


# --- properties -----------------------------------------------------------------------------


def one_hot_of(target, K, dtype=torch.float64):
    valid = target != IGN
    return (
        F.one_hot(torch.where(valid, target, 0), K).permute(0, 3, 1, 2).to(dtype) * valid[:, None]
    )


def test_perfect_prediction_gives_zero():
    target = blob_labels(2, 30, 40, 4, ignore_frac=0.2)
    prob = one_hot_of(target, 4)
    prob[:, 0][target == IGN] = 1  # anything at ignore pixels
    loss, g = fused_loss_and_grad(prob, target)
    assert loss.item() == 0
    assert (
        ops.dual_task_loss(prob, target, 1.0, DUAL_TASK_THRESHOLD, IGN)[1].item() > 0
    )  # P+ not empty


def test_shifted_boundary_loss_grows_with_shift():
    H, W, K = 16, 40, 2
    target = torch.zeros(1, H, W, dtype=torch.long)
    target[..., 20:] = 1
    losses = []
    for shift in range(0, 5):
        pred = torch.zeros(1, H, W, dtype=torch.long)
        pred[..., 20 + shift :] = 1
        losses.append(gscnn_ops.dual_task_loss(one_hot_of(pred, K), target).item())
    assert losses[0] == 0
    assert all(b > a for a, b in zip(losses, losses[1:])), losses


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ignore_pixels_do_not_matter(dtype):
    N, K, H, W = 2, 3, 25, 31
    prob = rand_prob(N, K, H, W, dtype=dtype)
    target = blob_labels(N, H, W, K, ignore_frac=0.3, seed=2)
    ign = (target == IGN)[:, None].expand(N, K, H, W)
    other = rand_prob(N, K, H, W, seed=9, dtype=dtype)
    prob2 = torch.where(ign, other, prob)
    assert not torch.equal(prob, prob2)
    l1, g1 = fused_loss_and_grad(prob, target)
    l2, g2 = fused_loss_and_grad(prob2, target)
    assert torch.equal(l1, l2)
    assert g1[ign].abs().max() == 0 and g2[ign].abs().max() == 0
    assert g1.abs().max() > 0


@pytest.mark.parametrize("case", ["constant", "one_hot", "1x1", "all_ignore", "zeros"])
def test_no_nan_or_inf(case):
    K = 3
    if case == "1x1":
        prob, target = rand_prob(2, K, 1, 1), torch.tensor([[[1]], [[IGN]]])
    else:
        target = blob_labels(2, 10, 12, K)
        if case == "all_ignore":
            target.fill_(IGN)
        prob = {
            "constant": torch.full((2, K, 10, 12), 1 / K, dtype=torch.float64),
            "one_hot": one_hot_of(blob_labels(2, 10, 12, K, seed=4), K),
            "all_ignore": rand_prob(2, K, 10, 12),
            "zeros": torch.zeros(2, K, 10, 12, dtype=torch.float64),
        }[case]
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        loss, g = fused_loss_and_grad(prob.to(dtype), target)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
        z = prob.to(dtype).requires_grad_()
        (gz,) = torch.autograd.grad(gscnn_ops.boundary_potential(z).sum(), z)
        assert torch.isfinite(gz).all()
        if case == "all_ignore":
            assert loss.item() == 0 and g.abs().max() == 0
        if case in ("constant", "zeros"):
            assert g.abs().max() == 0  # zeta = 0 everywhere: gradient taken as 0


def test_default_threshold_keeps_the_boundary_band():
    # One-hot step edge, sigma = 1: zeta_hat = 0.227, 0.105, 0.021 at 1, 2, 3 px from the edge
    # and 1.6e-3 at 4 px (the last taps of the Gaussian); 1e-2 keeps exactly the 3 columns on
    # each side and leaves the tails and the flat regions out.
    target = torch.zeros(1, 8, 30, dtype=torch.long)
    target[..., 15:] = 1
    zh = reference.boundary_potential(one_hot_of(target, 2))[0, 0, 4]
    band = (zh > DUAL_TASK_THRESHOLD).nonzero().flatten().tolist()
    assert band == [12, 13, 14, 15, 16, 17], band
    assert 0 < zh[11].item() < DUAL_TASK_THRESHOLD / 5  # the tail exists but is left out
    assert zh[:11].max() == 0


def test_default_threshold_excludes_flat_noise():
    # A flat prediction with rounding-level noise (bfloat16-sized, 4e-3) has zeta far below 1e-2,
    # so flat regions do not enter P+ and dilute the mean.
    g = torch.Generator().manual_seed(0)
    prob = 0.5 + 4e-3 * (torch.rand(1, 2, 64, 64, generator=g, dtype=torch.float64) - 0.5)
    assert gscnn_ops.boundary_potential(prob).max() < DUAL_TASK_THRESHOLD / 4
    count = ops.dual_task_loss(
        prob, torch.zeros(1, 64, 64, dtype=torch.long), 1.0, DUAL_TASK_THRESHOLD, IGN
    )[1]
    assert count.item() == 0


# --- exact skipping (CPU kernels) -------------------------------------------------------------
# The CPU kernels skip a (tile, class) pair whose halo holds no label of the class and whose
# probabilities vary by at most 2 * threshold: nothing of it can be in P+. Skipping must be exact:
# these inputs make most pairs skippable (a confident, piecewise-flat softmax) next to pairs that
# only one of the two conditions would skip.


def dirty_heap(like):
    """Allocates and frees a NaN-filled tensor the size of `like`, so that the next output of that
    size likely reuses its memory: a kernel that skips writing part of its output then returns
    NaNs instead of the zeros a fresh allocation may happen to hold."""
    torch.full_like(like, float("nan"))


def peaked_prob(target, K, dtype=torch.float64, noise=0.0, seed=0):
    """A confident softmax: flat away from the label boundaries, smooth across them."""
    logits = 12.0 * F.one_hot(target.clamp(0, K - 1), K).permute(0, 3, 1, 2).double()
    logits = F.avg_pool2d(logits, 5, 1, 2, count_include_pad=False)
    if noise:
        g = torch.Generator().manual_seed(seed)
        logits = logits + noise * torch.randn(logits.shape, generator=g, dtype=torch.float64)
    return logits.softmax(1).to(dtype)


@settings(max_examples=25, deadline=None)
@given(
    N=st.integers(1, 2),
    K=st.integers(2, 7),
    H=st.integers(1, 90),
    W=st.integers(1, 600),
    seed=st.integers(0, 10**6),
    noise=st.sampled_from([0.0, 1e-3, 0.3]),
    ignore=st.booleans(),
)
def test_skipping_is_exact(N, K, H, W, seed, noise, ignore):
    target = blob_labels(N, H, W, K, seed=seed, ignore_frac=0.3 if ignore else 0.0)
    # classes above K // 2 never appear in the labels: their channels are skippable where flat
    labels = torch.where(target == IGN, target, target.clamp(max=K // 2))
    prob = peaked_prob(labels, K, noise=noise, seed=seed)
    dirty_heap(prob)
    loss, g = fused_loss_and_grad(prob, labels)
    rloss, rg = ref_loss_and_grad(prob, labels)
    torch.testing.assert_close(loss, rloss, **TIGHT_TOL[torch.float64])
    torch.testing.assert_close(g, rg, **TIGHT_TOL[torch.float64])


@pytest.mark.parametrize(
    "case",
    [
        "absent_class_varying_prob",
        "present_class_flat_prob",
        "negative_threshold",
        "range_just_over",
    ],
)
def test_skipping_only_what_cannot_reach_p_plus(case):
    """Each input has pairs that one skip condition alone would drop although they are in P+."""
    K, H, W = 3, 40, 300
    target = torch.zeros(1, H, W, dtype=torch.long)
    threshold = DUAL_TASK_THRESHOLD
    if case == "absent_class_varying_prob":
        # class 2 is in no label, but its probability has an edge: zeta > threshold there
        prob = torch.full((1, K, H, W), 0.05, dtype=torch.float64)
        prob[:, 2, :, 150:] = 0.25
    elif case == "present_class_flat_prob":
        # a flat prediction, while the labels have a class-1 square: zeta_hat > threshold
        target[:, 10:20, 100:130] = 1
        prob = torch.full((1, K, H, W), 1 / K, dtype=torch.float64)
    elif case == "negative_threshold":
        # every kept pixel is in P+ (zeta_hat = 0 > threshold), flat or not
        prob = torch.full((1, K, H, W), 1 / K, dtype=torch.float64)
        prob[:, 2, 5:9, 7:11] += 1e-4
        threshold = -1e-3
    else:
        # a step of 2.2 * threshold: not skippable by the bound, and a step of 5 * threshold
        # in another tile, which reaches P+ (zeta ~ 0.27 * step)
        prob = torch.full((1, K, H, W), 0.3, dtype=torch.float64)
        prob[:, 2, :, 40:] += 2.2 * threshold
        prob[:, 2, :, 290:] += 5 * threshold
    loss, g = fused_loss_and_grad(prob, target, threshold=threshold)
    rloss, rg = ref_loss_and_grad(prob, target, threshold=threshold)
    count = ops.dual_task_loss(prob, target, 1.0, threshold, IGN)[1]
    assert count.item() > 0
    torch.testing.assert_close(loss, rloss, **TIGHT_TOL[torch.float64])
    torch.testing.assert_close(g, rg, **TIGHT_TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_skipping_keeps_nan_and_inf(dtype):
    """A non-finite probability in an otherwise skippable tile is not skipped: the result is what
    the unskipped computation gives (the reference's), NaN gradients included."""
    target = torch.zeros(1, 40, 300, dtype=torch.long)
    for bad in (float("nan"), float("inf")):
        prob = torch.full((1, 3, 40, 300), 0.1, dtype=torch.float64)
        prob[0, 2, 20, 270] = bad
        _, g = fused_loss_and_grad(prob.to(dtype), target)
        _, rg = ref_loss_and_grad(prob, target)
        assert torch.equal(torch.isnan(g), torch.isnan(rg))


# --- errors ---------------------------------------------------------------------------------


def test_errors():
    prob = rand_prob(1, 3, 5, 6)
    y = torch.zeros(1, 5, 6, dtype=torch.long)
    with pytest.raises(RuntimeError, match=r"dual_task_loss: argument 'target' must be an int64"):
        gscnn_ops.dual_task_loss(prob, y.int())
    with pytest.raises(
        RuntimeError,
        match=r"'prob' must be a float32, float16, bfloat16 or float64 tensor, got Long",
    ):
        gscnn_ops.dual_task_loss(prob.long(), y)
    with pytest.raises(RuntimeError, match=r"'prob' must be a 4-D"):
        gscnn_ops.dual_task_loss(prob[0], y)
    with pytest.raises(RuntimeError, match=r"'target' must have shape \(N, H, W\) = \(1, 5, 6\)"):
        gscnn_ops.dual_task_loss(prob, y[:, :4])
    with pytest.raises(RuntimeError, match=r"'target' must be a 3-D"):
        gscnn_ops.dual_task_loss(prob, y[0])
    bad = y.clone()
    bad[0, 2, 3] = 3
    with pytest.raises(
        RuntimeError,
        match=r"dual_task_loss: argument 'target' has label 3 at \[0, 2, 3\]; expected a class in "
        r"\[0, 3\) or ignore_index 255",
    ):
        gscnn_ops.dual_task_loss(prob, bad)
    bad[0, 2, 3] = -1
    with pytest.raises(RuntimeError, match=r"'target' has label -1 at \[0, 2, 3\]"):
        gscnn_ops.dual_task_loss(prob, bad)
    # -1 is fine when it is the ignore index
    gscnn_ops.dual_task_loss(prob, bad, ignore_index=-1)
    for s in (0.0, -1.0, float("nan")):
        with pytest.raises(RuntimeError, match=r"'sigma' must be a positive finite number"):
            gscnn_ops.dual_task_loss(prob, y, sigma=s)
        with pytest.raises(RuntimeError, match=r"boundary_potential: argument 'sigma'"):
            gscnn_ops.boundary_potential(prob, sigma=s)
    with pytest.raises(RuntimeError, match=r"'sigma' must be at most"):
        gscnn_ops.boundary_potential(prob, sigma=11.0)
    with pytest.raises(
        RuntimeError, match=r"boundary_potential_backward: argument 'grad_zeta' must have shape"
    ):
        ops.boundary_potential_backward(prob[:, :2], prob, 1.0)


def test_empty_inputs():
    prob = torch.zeros(0, 3, 5, 6)
    loss = gscnn_ops.dual_task_loss(prob, torch.zeros(0, 5, 6, dtype=torch.long))
    assert loss.item() == 0
    assert gscnn_ops.boundary_potential(torch.zeros(1, 2, 0, 4)).shape == (1, 2, 0, 4)


# --- module ---------------------------------------------------------------------------------


def test_module_eval_is_softmax_loss():
    logits = torch.randn(2, 4, 12, 13, dtype=torch.float64)
    target = blob_labels(2, 12, 13, 4, ignore_frac=0.2)
    m = gscnn_ops.DualTaskLoss().eval()
    torch.testing.assert_close(
        m(logits, target), reference.dual_task_loss(logits.softmax(1), target)
    )
    ref_m = gscnn_ops.DualTaskLoss(fused=False).eval()
    torch.testing.assert_close(ref_m(logits, target), m(logits, target))


def test_module_train_uses_gumbel_softmax():
    logits = torch.randn(2, 4, 12, 13, dtype=torch.float64, requires_grad=True)
    target = blob_labels(2, 12, 13, 4)
    m = gscnn_ops.DualTaskLoss(tau=0.5).train()
    torch.manual_seed(0)
    got = m(logits, target)
    torch.manual_seed(0)
    want = reference.dual_task_loss(F.gumbel_softmax(logits, tau=0.5, hard=False, dim=1), target)
    torch.testing.assert_close(got, want)
    got.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().max() > 0
    assert not torch.allclose(got, m.eval()(logits, target))
    with pytest.raises(ValueError, match="tau must be positive"):
        gscnn_ops.DualTaskLoss(tau=0)


# --- CUDA -----------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    N, K, H, W = 2, 5, 70, 90
    prob = rand_prob(N, K, H, W, dtype=dtype)
    target = blob_labels(N, H, W, K, ignore_frac=0.2)
    l_cpu, g_cpu = fused_loss_and_grad(prob, target)
    l_gpu, g_gpu = fused_loss_and_grad(prob.cuda(), target.cuda())
    eps = LOW_PRECISION_EPS.get(dtype, 1e-5)
    torch.testing.assert_close(l_gpu.cpu().double(), l_cpu.double(), rtol=eps, atol=eps)
    torch.testing.assert_close(
        g_gpu.cpu().double(), g_cpu.double(), rtol=eps, atol=eps * g_cpu.abs().max().item()
    )
    z = gscnn_ops.boundary_potential(prob.cuda())
    torch.testing.assert_close(
        z.cpu().double(), gscnn_ops.boundary_potential(prob).double(), rtol=eps, atol=eps
    )
    a = fused_loss_and_grad(prob.cuda(), target.cuda())
    assert torch.equal(a[0], l_gpu) and torch.equal(a[1], g_gpu)  # deterministic


# --- the checks every op gets (op_checks.py) ---------------------------------------------------


class TestBoundaryPotentialChecks(OpChecks):
    name = "boundary_potential"
    shapes = ((2, 3, 9, 11), (1, 2, 1, 1), (1, 4, 13, 5))  # N, K, H, W
    differentiable = (0,)

    def inputs(self, shape, dtype, seed=0):
        return (rand_prob(*shape, seed=seed, dtype=dtype), 1.0)

    def _op_args(self, args):
        return args

    def bad_inputs(self):
        prob = rand_prob(1, 2, 4, 4, dtype=torch.float32)
        return [((prob[0], 1.0), "prob"), ((prob, 0.0), "sigma"), ((prob.int(), 1.0), "prob")]


class TestDualTaskLossChecks(OpChecks):
    name = "dual_task_loss"
    shapes = ((2, 3, 12, 15), (1, 2, 1, 1), (1, 4, 17, 6))  # N, K, H, W
    # Its gradcheck needs inputs away from the threshold: test_gradcheck_dual_task_loss above.
    differentiable = ()

    def inputs(self, shape, dtype, seed=0):
        n, k, h, w = shape
        return (
            rand_prob(n, k, h, w, seed=seed, dtype=dtype),
            blob_labels(n, h, w, k, seed=seed, ignore_frac=0.2),
        )

    def fused(self, prob, target):
        return gscnn_ops.dual_task_loss(prob, target)

    def reference(self, prob, target):
        return reference.dual_task_loss(prob, target)

    def _op_args(self, args):
        return (*args, 1.0, DUAL_TASK_THRESHOLD, IGN)

    def bad_inputs(self):
        prob, target = self.inputs((1, 3, 5, 5), torch.float32)
        return [
            ((prob[0], target), "prob"),
            ((prob, target.float()), "target"),
            ((prob, target[:, :4]), "target"),
        ]
