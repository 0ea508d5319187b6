"""The emulated GPU itself (csrc/testing/emulator.h): what its checks catch, and that every
barrier of every block program is needed -- removing any one of them is a race the emulator
reports. (On a real GPU compute-sanitizer's racecheck and initcheck do the same:
scripts/gpu_check.sh.)"""

import pytest
import torch

from gated_conv2d_cases import make_inputs


def selftest(emu, which, threads=8):
    return torch.ops.gscnn_testing.emulator_selftest(which, threads)


def test_a_correct_program_passes(emu):
    assert selftest(emu, "ok").tolist() == [1, 2, 3, 4, 5, 6, 7, 0]


def test_shared_memory_counts(emu):
    """Every shared load and store a thread executes is counted (scripts/kernel_report.py turns the
    counts into time estimates): 8 threads store one float each, meet a barrier, load one each."""
    selftest(emu, "ok")
    rec = emu.last_launch()
    assert (rec["shared_loads"], rec["shared_stores"]) == (8, 8)
    assert (rec["shared_load_bytes"], rec["shared_store_bytes"], rec["all_barriers"]) == (32, 32, 1)
    # one warp storing 8 consecutive floats, then loading its neighbours' (one wrapping round)
    assert (rec["shared_load_wavefronts"], rec["shared_store_wavefronts"]) == (1, 1)


@pytest.mark.parametrize(
    "stride, width, group, uniform, threads, wavefronts, conflict_free",
    [
        (1, 1, 1, False, 32, 1, 1),  # 32 consecutive floats: one of each bank
        (1, 1, 1, False, 64, 2, 2),  # two warps
        (2, 1, 1, False, 32, 2, 1),  # every other word: two words in each of 16 banks
        (16, 1, 1, False, 32, 16, 1),  # 16 words apart: 16 words in each of two banks
        (33, 1, 1, False, 32, 1, 1),  # an odd stride: one word per bank
        (2, 2, 1, False, 32, 2, 2),  # 8 bytes each, consecutive: two half-warp phases
        (4, 4, 1, False, 32, 4, 4),  # 16 bytes each, consecutive: four quarter-warp phases
        (8, 4, 1, False, 32, 8, 4),  # 16 bytes each, 32 apart: two words per bank in each quarter
        (4, 4, 1, True, 32, 1, 1),  # one address for every lane: a broadcast
        (4, 4, 8, False, 32, 4, 4),  # one address per quarter-warp: a phase each
        (528, 4, 1, False, 8, 4, 1),  # 8 lanes 528 words apart: 4 on banks 0-3, 4 on 16-19
        (8, 8, 1, False, 32, 16, 8),  # 32 bytes each: two 16-byte accesses, each as (8, 4, ...)
    ],
)
def test_shared_memory_wavefronts(
    emu, stride, width, group, uniform, threads, wavefronts, conflict_free
):
    """The wavefronts the emulator counts for a warp's shared accesses (emulator.h, WarpAccesses):
    each group of threads stores `width` floats at (t / group) * stride (or thread 0 alone, then
    everyone loads that address), then loads them back. conflict_free: what the loads would take
    without bank conflicts (per phase its distinct words over 32, rounded up)."""
    loads, stores, ideal = torch.ops.gscnn_testing.bank_pattern(
        stride, width, group, uniform, threads
    )
    assert loads == wavefronts
    assert ideal == 2 * conflict_free  # loads and stores (the same addresses) alike
    # the stores: one thread per address (the group's first, or thread 0)
    one_per_quarter = group == 8
    assert stores == (1 if uniform else wavefronts if not one_per_quarter else 4)
    rec_fields = emu.LAST_LAUNCH_FIELDS
    assert rec_fields[-3:-1] == ("shared_load_wavefronts", "shared_store_wavefronts")
    assert rec_fields[-1] == "shared_conflict_free_wavefronts"


def _pipeline_geometry(n, R, h):
    """The buffers of common/boundary_potential_math.h's Layout for an n x n tile: E's side, the row
    stride of X and B (a multiple of 4, with room for the backward differences' two groups of
    four), the row stride of E's buffers, and the groups of four values the row blur reads per
    four outputs."""
    E = n + 2 * h
    XWs = -(-(E - 2 * R - 2) // 4) * 4 + 4  # Z's width rounded up, and one more group
    EWs = XWs + -(-2 * R // 4) * 4
    return E, XWs, EWs, -(-(4 + 2 * R) // 4)


def _column_blur_loads(BH, XWs, R, rows):
    """The column blur's vector loads: each thread takes `rows` rows of four columns (2, forward
    and backward) and loads the 2R + rows groups of four they need (the last rows of B too: a
    missing row re-reads X's last row)."""
    return XWs // 4 * -(-BH // rows) * (2 * R + rows)


def test_shared_memory_counts_of_the_potential_pipeline(emu):
    """The counts of a real block program against its structure (boundary_potential forward,
    common/boundary_potential_program.h), one 16 x 16 tile, sigma = 1 (R = 3, 7 taps), halo
    h = R + 1: per class, P stored over E = 24 x 24 and its padding columns in groups of four;
    the row blur loads 3 groups of four and stores one per four values of X (24 x 18, rows padded
    to 20), the column blur loads 8 groups per two rows of four values of B (18 x 18) and stores
    one per four; the central differences load 4 values per pixel (scalar in the forward);
    three barriers. Float64: 8-byte values, 32-byte groups."""
    K, n, R, h = 2, 16, 3, 4
    g = torch.Generator().manual_seed(0)
    prob = torch.softmax(torch.randn(1, K, n, n, generator=g, dtype=torch.float64), 1)
    torch.ops.gscnn_testing.boundary_potential(prob, 1.0, emu.gpu(), emu.launch(64, 1, (n, n)))
    E, XWs, EWs, groups = _pipeline_geometry(n, R, h)
    BH = E - 2 * R
    vector_loads = E * XWs // 4 * groups + _column_blur_loads(BH, XWs, R, 2)
    vector_stores = E * EWs // 4 + (E + BH) * XWs // 4
    rec = emu.last_launch()
    assert rec["shared_stores"] == K * vector_stores
    assert rec["shared_loads"] == K * (vector_loads + 4 * n * n)
    assert rec["shared_load_bytes"] == K * (32 * vector_loads + 8 * 4 * n * n)
    assert rec["shared_store_bytes"] == K * 32 * vector_stores
    assert rec["all_barriers"] == 3 * K


def _absent_class_savings(backward, n, R, h):
    """What a class absent from a tile's halo saves: its one-hot's row blur (E x XWs values, the
    row blur's groups per four) and column blur (two rows of four per thread), and zeta_hat's
    central differences: in the forward 4 scalar loads per pixel of the tile (Z = tile); in the
    backward two rows of four pixels of Z = tile + R + 1 per thread, from two groups of four in
    each of the 4 rows of B around them (8 vector loads per 8 pixels). Returns (loads, stores)."""
    E, XWs, EWs, groups = _pipeline_geometry(n, R, h)
    BH = E - 2 * R
    Z = BH - 2
    differences = (Z // 2) * (Z // 4) * 8 if backward else 4 * n * n
    loads = E * XWs // 4 * groups + _column_blur_loads(BH, XWs, R, 2)
    return loads + differences, (E + BH) * XWs // 4


@pytest.mark.parametrize("backward", [False, True])
def test_the_loss_skips_the_blur_of_classes_absent_from_a_tile(emu, backward):
    """The dual-task loss (forward, then backward) on one 16 x 16 tile with two classes, both
    with an edge in the probabilities (no pair skipped whole): when every label is class 0,
    class 1 is absent from the tile's halo, so its one-hot blur and zeta_hat's differences are
    not done. The exact difference against labels with both classes in the halo."""
    K, n, R = 2, 16, 3
    h = 2 * R + 2 if backward else R + 1
    prob = torch.full((1, K, n, n), 0.2, dtype=torch.float64)
    prob[0, 0, :, n // 2 :] = 0.8  # a vertical edge in both channels
    prob[0, 1] = 1 - prob[0, 0]
    both = torch.zeros(1, n, n, dtype=torch.long)
    both[0, :, n // 2 :] = 1
    launch = emu.launch(64, 1, (n, n))
    t = torch.ops.gscnn_testing

    def counts(target):
        args = (1.0, 1e-2, 255, emu.gpu(), launch)
        _, count = t.dual_task_loss(prob, target, *args)
        if backward:
            grad = torch.tensor(1.0, dtype=torch.float64)
            t.dual_task_loss_backward(grad, prob, target, count, *args)
        rec = emu.last_launch()
        return rec["shared_loads"], rec["shared_stores"]

    loads_both, stores_both = counts(both)
    loads_one, stores_one = counts(torch.zeros_like(both))
    assert (loads_both - loads_one, stores_both - stores_one) == _absent_class_savings(
        backward, n, R, h
    )


@pytest.mark.parametrize(
    "which,pattern",
    [
        (
            "missing_barrier",
            r"shared-memory race .* thread 0 reads byte offset 4 that another thread "
            r"wrote in the same barrier interval \(thread 1\)",
        ),
        ("write_write", r"shared-memory race .* writes byte offset 4 that another thread wrote"),
        ("uninitialised", r"uninitialised shared memory .* reads byte offset 4 that no thread"),
        ("out_of_bounds", r"reads bytes \[32, 36\) outside its shared memory of 32 bytes"),
    ],
)
def test_the_emulator_catches(emu, which, pattern):
    with pytest.raises(RuntimeError, match=pattern):
        selftest(emu, which)


def test_registers_start_poisoned(emu):
    assert torch.isnan(selftest(emu, "uninitialised_register")).all()


# Every block program, on an input and a forced launch that give each block several tiles (or
# classes), so that every barrier of the loop bodies is met more than once. The block sizes divide
# no row length of the tiles' buffers: with, say, 16 threads on 16-wide buffers every thread would
# read only the column it wrote itself, and a missing barrier there would go unseen.
def _dual_task_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    prob = torch.softmax(torch.randn(1, 3, 13, 17, generator=g, dtype=torch.float64), 1)
    target = torch.randint(0, 3, (1, 13, 17), generator=g)
    target[0, :2, :3] = 255
    return prob, target


def _gcl_backward(emu, skip):
    s, r, gw, gb, w, _ = make_inputs(1, 4, 1, 3, 5, 7)
    go = torch.randn(1, 3, 5, 7, dtype=torch.float64)
    torch.ops.gscnn_testing.gated_conv2d_backward(
        go, None, s, r, gw, gb, w, emu.gpu(), emu.launch(8, 2), skip
    )


def _gcl_backward_shape_stream(emu, skip):
    # 35 pixels, 13 threads: 3 tiles over 2 blocks, 12 work items of dW (3 pixel groups of 5)
    s, r, gw, gb, w, _ = make_inputs(1, 8, 1, 8, 5, 7)
    go = torch.randn(1, 8, 5, 7, dtype=torch.float64)
    torch.ops.gscnn_testing.gated_conv2d_backward(
        go, None, s, r, gw, gb, w, emu.gpu(), emu.launch(13, 2), skip
    )


def _gcl_backward_shape_stream_nhwc(emu, skip):
    # channels_last s and grad_out: the NHWC backward (s and g staged in shared memory)
    s, r, gw, gb, w, _ = make_inputs(1, 8, 1, 8, 5, 7, channels_last=True)
    go = torch.randn(1, 8, 5, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    torch.ops.gscnn_testing.gated_conv2d_backward(
        go, None, s, r, gw, gb, w, emu.gpu(), emu.launch(13, 2), skip
    )


def _gcl_forward_shape_stream(emu, skip):
    s, r, gw, gb, w, b = make_inputs(1, 8, 1, 8, 5, 7)
    torch.ops.gscnn_testing.gated_conv2d(s, r, gw, gb, w, b, emu.gpu(), emu.launch(13, 2), skip)


def _potential(emu, skip):
    prob, _ = _dual_task_inputs()
    torch.ops.gscnn_testing.boundary_potential(
        prob, 1.0, emu.gpu(), emu.launch(13, 2, (5, 6)), skip
    )


def _potential_backward(emu, skip):
    prob, _ = _dual_task_inputs()
    torch.ops.gscnn_testing.boundary_potential_backward(
        torch.ones_like(prob), prob, 1.0, emu.gpu(), emu.launch(13, 2, (5, 6)), skip
    )


def _loss(emu, skip):
    prob, target = _dual_task_inputs()
    torch.ops.gscnn_testing.dual_task_loss(
        prob, target, 1.0, 1e-2, 255, emu.gpu(), emu.launch(13, 2, (5, 6)), skip
    )


def _loss_backward(emu, skip):
    prob, target = _dual_task_inputs()
    count = torch.tensor(100.0, dtype=torch.float64)
    torch.ops.gscnn_testing.dual_task_loss_backward(
        torch.tensor(1.0, dtype=torch.float64),
        prob,
        target,
        count,
        1.0,
        1e-2,
        255,
        emu.gpu(),
        emu.launch(13, 2, (5, 6)),
        skip,
    )


def _gcl_forward_shape_stream_nhwc(emu, skip):
    # channels_last: the tiles staged in shared memory; 35 pixels, 13 threads, 2 blocks: block 0
    # takes two tiles, the second partial
    s, r, gw, gb, w, b = make_inputs(1, 8, 1, 8, 5, 7, channels_last=True)
    torch.ops.gscnn_testing.gated_conv2d(s, r, gw, gb, w, b, emu.gpu(), emu.launch(13, 2), skip)
    assert emu.last_launch()["barriers"] == 4


def _gcl_forward_shape_stream_nhwc_pairs(emu, skip):
    # bfloat16 at C = 32, channels_last: two pixels per thread (rows t and t + T); 35 pixels, 7
    # threads, 2 blocks: block 0 takes tiles at pixels 0 and 28, the second partial
    s, r, gw, gb, w, b = make_inputs(1, 32, 1, 32, 5, 7, dtype=torch.bfloat16, channels_last=True)
    torch.ops.gscnn_testing.gated_conv2d(s, r, gw, gb, w, b, emu.gpu(), emu.launch(7, 2), skip)
    assert emu.last_launch()["barriers"] == 4


def _fscore(emu, skip):
    g = torch.Generator().manual_seed(1)
    pred = torch.randint(0, 3, (1, 20, 70), generator=g)
    target = torch.randint(0, 3, (1, 20, 70), generator=g)
    torch.ops.gscnn_testing.boundary_fscore_counts(
        pred, target, 3, [1, 3], 255, emu.gpu(), emu.launch(8, 2), 0, skip
    )


PROGRAMS = {
    "gated_conv2d (shape stream widths)": _gcl_forward_shape_stream,
    "gated_conv2d (shape stream widths, NHWC)": _gcl_forward_shape_stream_nhwc,
    "gated_conv2d (shape stream widths, NHWC, two pixels)": _gcl_forward_shape_stream_nhwc_pairs,
    "gated_conv2d_backward": _gcl_backward,
    "gated_conv2d_backward (shape stream widths)": _gcl_backward_shape_stream,
    "gated_conv2d_backward (shape stream widths, NHWC)": _gcl_backward_shape_stream_nhwc,
    "boundary_potential": _potential,
    "boundary_potential_backward": _potential_backward,
    "dual_task_loss": _loss,
    "dual_task_loss_backward": _loss_backward,
    "boundary_fscore_counts": _fscore,  # its boundary and match programs (one barrier each)
}


@pytest.mark.parametrize("name", PROGRAMS)
def test_every_barrier_is_needed(emu, name):
    run = PROGRAMS[name]
    run(emu, -1)  # all barriers in place: no race, no uninitialised read
    barriers = emu.last_launch()["barriers"]
    assert barriers >= 1
    # Remove each barrier that block 0 meets in turn (the first 24: every barrier of a loop body
    # comes around well before that). A vote's barrier (sync_any) may order no data: the
    # dual-task loss's skip test holds its values in registers over it (the emulator says so).
    votes = 0
    for k in range(min(barriers, 24)):
        with pytest.raises(RuntimeError, match="shared-memory race|a vote's") as e:
            run(emu, k)
        votes += "a vote's" in str(e.value)
    assert (votes > 0) == name.startswith("dual_task_loss"), (name, votes)
