"""scripts/kernel_report.py, the static report of the CUDA kernels (no GPU needed): it reads the
built library and lists every kernel's resources and loops, and the benchmark launches."""

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

import gscnn_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "kernel_report.py")


def _estimate_rows(table, prefix):
    """(cells, HBM floor, load/store, issue, estimate) of the launch table's rows starting with
    `prefix` (the floor at the specification bandwidth, the estimates in ms)."""
    for line in table.splitlines():
        if line.startswith(prefix):
            cells = [c.strip() for c in line.strip("|").split("|")]
            yield (cells, float(cells[7].split("/")[0]), *(float(c) for c in cells[8:11]))


@pytest.mark.skipif(not gscnn_ops.has_cuda_kernels(), reason="built without CUDA kernels")
def test_kernel_report(emu, tmp_path):
    from test_cuda_build import cuobjdump

    if cuobjdump() is None:
        pytest.skip("cuobjdump not found")
    # A benchmark JSON as scripts/gpu_check.sh writes it: one measured fused forward.
    bench = tmp_path / "bench_cuda.json"
    bench.write_text(
        json.dumps(
            {
                "benchmarks": [
                    {
                        "group": "cuda-fwd-C32-f32",
                        "params": {"impl": "fused"},
                        "stats": {"median": 0.000512},
                    },
                    {
                        "group": "cuda-fwd-C32-f32",
                        "params": {"impl": "eager"},
                        "stats": {"median": 0.009},
                    },
                    {
                        "group": "cuda-fwd-C32-f32-nhwc",
                        "params": {"impl": "fused"},
                        "stats": {"median": 0.000625},
                    },
                ]
            }
        )
    )
    out = subprocess.run(
        [sys.executable, SCRIPT, "--measured", str(bench)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    resources = out.split("## Innermost loops")[0]
    for program in (
        "gcl::ForwardProgram<float",
        "gcl::BackwardProgram<float> [shared]",
        "gcl::BackwardProgram<float> [global scratch]",
        "dtl::Pipeline<float, true, true, 3> [shared]",
        "et::EdgeTargetsProgram",
        "bfs::MatchProgram",
    ):
        assert program in resources, program
    rows = [line for line in resources.splitlines() if line.startswith("| ") and "[" in line]
    assert all(line.split("|")[5].strip() == "0" for line in rows), "a kernel spills registers"
    # the shared-memory kernels address shared memory (LDS/STS), not generic pointers
    loops = out.split("## Innermost loops")[1].split("## Benchmark")[0]
    lds = [line for line in loops.splitlines() if "Pipeline<float, true, true, 3> [shared]" in line]
    assert lds and sum(int(line.split("|")[6]) for line in lds) > 0
    table = out.split("## Benchmark shapes")[1]
    assert "gated_conv2d fwd C=32 fp32" in table and "dual_task_loss bwd bf16" in table
    # The forward rows carry an estimate from their pixel loop's SASS: per-pixel counts (the loop
    # over Cr = 1 is not unrolled), never below the HBM floor; the other rows none.
    for cells, floor, lsu, issue, estimate in _estimate_rows(table, "| gated_conv2d fwd"):
        assert 0 < lsu and 0 < issue and estimate == pytest.approx(max(floor, lsu, issue), abs=2e-3)
        # the measured column: the fused median where the JSON has one, else a dash
        measured = {"C=32 fp32": "0.512", "C=32 fp32 NHWC": "0.625"}
        assert cells[11] == measured.get(cells[0].split("fwd ")[1], "–"), cells
    # NCHW and NHWC forward rows for every width and dtype
    for C in (8, 16, 32):
        for dtype in ("fp32", "bf16"):
            for layout in ("", " NHWC"):
                assert f"| gated_conv2d fwd C={C} {dtype}{layout} |" in table
    assert "| gated_conv2d bwd C=32 fp32 |" in table
    # The backward rows (NCHW and NHWC) carry an estimate from their phases
    # (gcl_backward_estimate), wider layers costing more.
    bwd = {}
    for cells, floor, lsu, issue, estimate in _estimate_rows(table, "| gated_conv2d bwd"):
        assert 0 < lsu and 0 < issue and estimate == pytest.approx(max(floor, lsu, issue), abs=2e-3)
        bwd[cells[0]] = issue
    assert len(bwd) == 12
    for layout in ("", " NHWC"):
        assert (
            bwd[f"gated_conv2d bwd C=32 fp32{layout}"]
            > 2 * bwd[f"gated_conv2d bwd C=8 fp32{layout}"]
        )
    # The dual-task rows carry estimates from the emulator's shared-memory counts: the backward
    # (a halo of 2R + 2, four adjoint phases) moves more than the forward, on the noisy softmax
    # both above the floor.
    lsu = {}
    for cells, floor, l, issue, estimate in _estimate_rows(table, "| dual_task_loss"):
        assert estimate == pytest.approx(max(floor, l, issue), abs=2e-3), cells
        assert l > floor or cells[0].endswith(" scene"), cells
        lsu[cells[0]] = l
    assert len(lsu) == 6 and lsu["dual_task_loss bwd fp32"] > 1.5 * lsu["dual_task_loss fwd fp32"]
    # On street scenes (the "loss_scene" inputs) the exact skip leaves most (tile, class) pairs
    # out: less than half the shared traffic of the noisy softmax, where nothing is skipped.
    for direction in ("fwd", "bwd"):
        noisy = lsu[f"dual_task_loss {direction} fp32"]
        assert lsu[f"dual_task_loss {direction} fp32 scene"] < 0.5 * noisy


def test_pipeline_estimate_model():
    """pipeline_estimate on hand-made counts: one 32 x 32 image, one 32 x 32 tile, the forward
    (halo R + 1 = 4: E = 40 x 40), 3200 shared accesses, no SASS (one instruction per load/store):
    wavefronts = (3200 shared + 19 x 1600 probabilities) / 32 + 2 x 1600 / 32 for the int64
    labels; load/store instructions = (3200 + 19 x 400 groups of four probabilities) / 32 + one
    per 32 labels."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import kernel_report as kr

    m = kr.ISSUE_MODEL
    per_clock = kr.SM_COUNT * m["clock_hz"]
    lsu, issue, est = kr.pipeline_estimate("dual_task_loss", [1, 32, 32], (32, 32), 3200, None, 0)
    wavefronts = (3200 + 19 * 1600) / 32 + 100
    assert lsu == pytest.approx(wavefronts * 1e3 / (per_clock * m["lsu_per_clock"]))
    issue_per_clock = per_clock * m["issue_per_clock"]
    assert issue == pytest.approx(((3200 + 19 * 400) / 32 + 50) * 1e3 / issue_per_clock)
    assert est == max(lsu, issue)
    # the backward: halo 2R + 2 = 8 (E = 48 x 48) and the gradient written over the tile
    lsu_b, issue_b, _ = kr.pipeline_estimate(
        "dual_task_loss_backward", [1, 32, 32], (32, 32), 0, None, 0
    )
    wavefronts_b = 19 * (2304 + 1024) / 32 + 2 * 2304 / 32
    assert lsu_b == pytest.approx(wavefronts_b * 1e3 / (per_clock * m["lsu_per_clock"]))
    # 48 rows of 12 groups loaded, 256 groups of the gradient stored
    instructions_b = 19 * (48 * 12 + 256) / 32 + 2304 / 32
    assert issue_b == pytest.approx(instructions_b * 1e3 / issue_per_clock)
    # vector accesses: 800 instructions moving 16 bytes each are 3200 / 32 wavefronts (four per
    # warp-instruction) but 800 / 32 instructions
    lsu_v, issue_v, _ = kr.pipeline_estimate(
        "dual_task_loss", [1, 32, 32], (32, 32), 800, None, 0, shared_bytes_per_tile=16 * 800
    )
    assert lsu_v == pytest.approx(lsu)
    # the emulator's wavefronts, where given, replace the bytes (bank conflicts, idle lanes)
    lsu_w, issue_w, _ = kr.pipeline_estimate(
        "dual_task_loss", [1, 32, 32], (32, 32), 3200, None, 0, shared_wavefronts_per_tile=250
    )
    assert lsu_w == pytest.approx(
        (250 + 19 * 1600 / 32 + 100) * 1e3 / (per_clock * m["lsu_per_clock"])
    )
    assert issue_w == pytest.approx(issue)
    assert issue_v == pytest.approx(((800 + 19 * 400) / 32 + 50) * 1e3 / issue_per_clock)


def test_gcl_backward_estimate_model():
    """gcl_backward_estimate on hand-made SASS: a pixel phase of 6 instructions between the first
    two barriers (less the 2 of the padding pixels' path the first branch jumps over), the dW tile
    loop (9 LDS.128, 11 instructions), 2 instructions of straight reduce code, the sums' loops (4
    and 8 LDS.128; 6 and 10 instructions). C = 8, T = 128: 4 warps, 128 work items of span 4 (one
    trip each), 18 entries of db, dw_g, db_g in one warp holding both kinds (8 trips of each)."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import kernel_report as kr

    ops = ["BAR", "BRA", "STS", "STS", "LDG.E", "FFMA", "STS", "LDS", "STG.E", "BAR"]
    ops += ["LDS.128"] * 9 + ["FFMA", "BRA"] + ["LDS", "STS"]
    ops += ["LDS.128"] * 4 + ["FADD", "BRA"] + ["LDS.128"] * 8 + ["FFMA", "BRA", "BAR", "EXIT"]
    code = [(16 * i, op, "") for i, op in enumerate(ops)]
    branch = {1: 4, 20: 10, 28: 23, 38: 29}  # instruction index -> target index
    code = [
        (a, op, f" {16 * branch[a // 16]:#x}" if a // 16 in branch else "") for a, op, _ in code
    ]
    pixels = 128 * kr.SM_COUNT * 10
    lsu, issue, est = kr.gcl_backward_estimate(code, 8, 128, pixels, 0.0)
    m = kr.ISSUE_MODEL
    per_clock = kr.SM_COUNT * m["clock_hz"]
    tiles = pixels // 128
    issue_per_tile = 4 * (6 + 2) + 4 * 1 * 11 + 8 * (6 + 10)
    waves_per_tile = 4 * (4 + 2) + 4 * 1 * 9 * 4 + 8 * (4 + 8) * 4
    assert lsu == pytest.approx(tiles * waves_per_tile * 1e3 / (per_clock * m["lsu_per_clock"]))
    assert issue == pytest.approx(tiles * issue_per_tile * 1e3 / (per_clock * m["issue_per_clock"]))
    assert est == max(lsu, issue)
    # not the program's layout (a barrier missing): no estimate
    assert kr.gcl_backward_estimate([c for c in code if c[0] != 0], 8, 128, pixels, 0.0) is None
    # the emulator's shared wavefronts, where given, replace the shared accesses' (the pixel
    # phase's LDG.E and STG.E, one each per warp, stay)
    lsu_e, issue_e, _ = kr.gcl_backward_estimate(code, 8, 128, pixels, 0.0, 1000.0)
    assert lsu_e == pytest.approx(tiles * (4 * 2 + 1000) * 1e3 / (per_clock * m["lsu_per_clock"]))
    assert issue_e == pytest.approx(issue)


def test_gcl_backward_shared_wavefronts(emu):
    """The shape stream's NCHW backward at the benchmark's block of 128 threads, emulated: shared
    wavefronts per tile of 128 pixels. Its reduce reads, per quarter-warp, row i of up to 8 blocks
    of four rows of G and S at one pixel; the rows' slots (BackwardSmallCShared::row) put those in
    8 different bank groups. With the rows in order it took 7495 wavefronts per tile at C = 32
    (the S loads 4 per quarter-warp), with item-major dW slots as well ~9400 (16-way conflicts); now
    4417: the pixel phase 1816 (W's rows as broadcasts), the reduce ~2600 (the dW tile loop's 33
    per four pixels per warp, the sums, the slots)."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import kernel_report as kr

    gpu = emu.gpu("sm_90", regs_per_thread=128, static_smem=1024, max_threads_per_block=256)
    per_tile = {C: kr.gcl_backward_shared_wavefronts(C, False, 128, gpu) for C in (8, 16, 32)}
    assert per_tile[32] < 4500, per_tile
    assert per_tile[8] < per_tile[16] < per_tile[32]


def test_pipeline_phases(emu):
    """The emulator's wavefronts per pass site (emulation.last_launch_passes) add up to the
    launch's, and the dual-task kernels run the phases kernel_report.PIPELINE_PHASES names them
    by (the ordinals of the program's lambdas: adding one shifts them, and this goes red). At the
    benchmark's launch on an H100, the adjoint of the differences is free of bank conflicts."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import kernel_report as kr

    gpu = emu.gpu("sm_90", regs_per_thread=128, static_smem=1024, max_threads_per_block=256)
    sites = {}
    for op in ("dual_task_loss", "dual_task_loss_backward"):
        kr.pipeline_counts(op, False, (32, 32), 256, gpu)
        rec, passes = emu.last_launch(), emu.last_launch_passes()
        total = rec["shared_load_wavefronts"] + rec["shared_store_wavefronts"]
        assert sum(p[1] for p in passes) == total
        assert sum(p[2] for p in passes) == rec["shared_conflict_free_wavefronts"]
        assert all(p[1] >= p[2] >= 0 for p in passes), passes
        named = {name: site for site, name in kr.PIPELINE_PHASES.items()}
        # the skip test stores nothing at this launch: every thread holds its groups of E in
        # registers over the vote
        skip_test = [p for p in passes if p[0] == named[kr.PIPELINE_PHASES[4]]]
        assert [p[1] for p in skip_test] == [0], passes
        sites[op] = {p[0]: p for p in passes if p[1] > 0}
    shared = (  # the phases both run: the tile's labels and masks, the class's blurs
        "labels into E (per tile)",
        "keep rows, class groups (per tile)",
        "keep mask, the tile's classes (per tile)",
        "probabilities into E (held over the skip test)",
        "row blur",
        "column blur",
    )
    forward_only = (
        "zeta (forward)",
        "the threads' sums (per tile, forward)",
        "block reduction (per tile, forward)",
    )
    backward_only = (
        "zeta and its adjoint (backward)",
        "adjoint of the differences",
        "adjoint of the column blur",
        "adjoint of the row blur",
    )
    assert set(sites["dual_task_loss"]) == {named[n] for n in shared + forward_only}
    backward = sites["dual_task_loss_backward"]
    assert set(backward) == {named[n] for n in shared + backward_only}
    _, taken, free = backward[named["adjoint of the differences"]]
    assert taken < 1.01 * free
    lines = kr.phase_table({"bwd": (list(backward.values()), 25)})
    assert any(line.startswith("| adjoint of the differences | ") for line in lines)


def test_estimate_model():
    """estimate_ms on a hand-made mix (3 loads/stores, 40 instructions per pixel-warp)."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import kernel_report as kr

    m = kr.ISSUE_MODEL
    per_clock = kr.SM_COUNT * m["clock_hz"]
    pixels = 32 * kr.SM_COUNT * 1000  # 1000 warps per SM
    mix = Counter({"LDG": 2, "STG": 1, "wavefronts": 3, "all": 40})
    lsu, issue, est = kr.estimate_ms(mix, pixels, floor_s=0.0)
    assert lsu == pytest.approx(3 * 1000 * kr.SM_COUNT / (per_clock * m["lsu_per_clock"]) * 1e3)
    issue_clocks = 40 * 1000 * kr.SM_COUNT / (per_clock * m["issue_per_clock"])
    assert issue == pytest.approx(issue_clocks * 1e3)
    assert est == max(lsu, issue)
    assert kr.estimate_ms(mix, pixels, floor_s=1.0)[2] == 1000.0  # memory-bound: the floor


def test_wavefronts():
    """128-byte wavefronts per warp by access width; shared loads are broadcasts (1) unless
    named per-thread (128-bit: 4)."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import kernel_report as kr

    ops = ["LDG.E.128", "STS.128", "LDS.128", "LDS", "STG.E.U16", "LDG.E.64", "FFMA", "LDL", "BAR"]
    assert kr.wavefronts(ops) == 4 + 4 + 1 + 1 + 1 + 2 + 1
    assert kr.wavefronts(ops, per_thread_lds=1) == 14 + 3
