"""Launch selection (csrc/common/*_launch.h, plain host code) over the ranges of sizes the API
accepts, checked against the limits of every GPU generation the library supports
(tests/emulation.py: sm_75 ... sm_120): block sizes the kernels' registers allow, shared memory
within the opt-in limit, grids gridDim.x can hold, global scratch memory only where shared memory
cannot do, and never the single-warp blocks of old. The checks here are written independently of
the C++ (launch.h has its own, which the CUDA ops run before every launch)."""

import math
import os
import re
import subprocess
import sys

import pytest
import torch

import gscnn_ops

from emulation import GPUS, WORST_KERNEL, gpu

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
)
import kernel_report  # noqa: E402  (the launch bounds of the programs, by name)

MAX_GRID = 2**31 - 1


def select(emu, op, sizes, gpu_name, **kernel):
    fields = ("blocks", "threads", "shared", "scratch", "tile_h", "tile_w", "variant")
    return dict(
        zip(fields, torch.ops.gscnn_testing.select_launch(op, sizes, gpu(gpu_name, **kernel)))
    )


def problems(launch, gpu_name, kernel=WORST_KERNEL):
    """Why a launch cannot run on this GPU with this kernel (empty: it can)."""
    d = GPUS[gpu_name]
    out = []
    if not 1 <= launch["blocks"] <= MAX_GRID:
        out.append(f"grid of {launch['blocks']} blocks")
    t = launch["threads"]
    if not (32 <= t <= kernel["max_threads_per_block"] and t % 32 == 0):
        out.append(f"{t} threads per block")
    if t * kernel["regs_per_thread"] > d["regs_per_sm"]:
        out.append(f"{t} threads x {kernel['regs_per_thread']} registers")
    most = min(d["smem_per_block_optin"], d["smem_per_sm"] - d["reserved_smem_per_block"])
    if launch["shared"] > most - kernel["static_smem"]:
        out.append(f"{launch['shared']} bytes of shared memory (at most {most})")
    if launch["shared"] and launch["scratch"]:
        out.append("both shared and scratch memory")
    return out


def test_the_checker_can_fail():
    assert problems(dict(blocks=0, threads=48, shared=300 * 1024, scratch=1), "sm_90") != []


CHANNELS = [1, 2, 8, 16, 32, 64, 100, 190, 191, 256, 500, 1000, 1800, 1900, 4096]
PIXELS = [1, 257, 8 * 800 * 800, 2**33]


@pytest.mark.parametrize("name", GPUS)
def test_gated_conv2d_forward(emu, name):
    for C in CHANNELS:
        for Cr in (1, 3):
            for acc in (4, 8):
                for P in PIXELS:
                    l = select(emu, "gated_conv2d", [P, C, Cr, acc], name)
                    assert problems(l, name) == [], (C, Cr, acc, P, l)
                    assert l["threads"] >= 64
                    staged = l["variant"] == 0
                    assert l["shared"] == ((C + Cr) * l["threads"] * acc if staged else 0)
                    assert l["blocks"] <= math.ceil(P / l["threads"])
                    # direct reads from global memory only when no block stages the channels
                    most = GPUS[name]["smem_per_block_optin"]
                    assert staged == (
                        (C + Cr) * 64 * acc <= most - GPUS[name]["reserved_smem_per_block"]
                    )


@pytest.mark.parametrize("name", GPUS)
def test_gated_conv2d_forward_shape_stream_widths(emu, name):
    for C in (8, 16, 32):
        for Cr in (1, 3, 64):
            for P in PIXELS:
                l = select(emu, "gated_conv2d_small_c", [P, C, Cr, 4], name)
                assert problems(l, name) == [] and l["threads"] == 256, (C, Cr, P, l)
                assert l["shared"] == (C * C + 2 * C + Cr + 1) * 4
                # NHWC: the parameters, then the tile of T rows of 16-byte chunks (an odd row
                # stride in chunks: one spare chunk when a pixel takes more than one); two rows
                # per thread for the half types at C = 32
                for elem in (2, 4, 8):
                    l = select(emu, "gated_conv2d_small_c_nhwc", [P, C, Cr, elem], name)
                    assert problems(l, name) == [], (C, Cr, elem, P, l)
                    acc = max(elem, 4)
                    chunks = C * elem // 16
                    row = chunks + 1 if chunks > 1 else 1
                    params = -(-(C * C + 2 * C + Cr + 1) * acc // 16)
                    rows = l["threads"] * (2 if C == 32 and elem == 2 else 1)
                    assert l["shared"] == (params + rows * row) * 16, (C, Cr, elem, l)
                    # 256 threads wherever they fit; float64 at C = 32 on 64 KiB GPUs: 128
                    assert l["threads"] == 256 or (elem == 8 and l["threads"] == 128), l


@pytest.mark.parametrize("name", GPUS)
def test_gated_conv2d_backward_shape_stream_widths(emu, name):
    for C in (8, 16, 32):
        for Cr in (1, 8):
            for acc in (4, 8):
                for P in PIXELS:
                    l = select(emu, "gated_conv2d_backward_small_c", [P, C, Cr, acc], name)
                    assert problems(l, name) == [], (C, Cr, acc, P, l)
                    # 128 threads for float32 everywhere; 32 at the least (float64, small GPUs)
                    assert l["threads"] == 128 or (acc == 8 and l["threads"] >= 32), l
                    entries = C * C + C + C + Cr + 1
                    assert l["blocks"] <= 1024 and l["blocks"] * entries <= max(2**25, entries)
                    # NHWC: the same launch with two PixelTiles (s, g) added where they fit
                    for elem in (2, 4, 8) if acc == 4 else ():
                        n = select(
                            emu, "gated_conv2d_backward_small_c_nhwc", [P, C, Cr, elem], name
                        )
                        assert problems(n, name) == [], (C, Cr, elem, P, n)
                        assert n["blocks"] == l["blocks"] and n["shared"] > l["shared"] // 2
                        # 128 threads on the H100; 64 (32 in float64) where shared memory is small
                        assert n["threads"] >= (64 if elem < 8 else 32), n
                        assert name != "sm_90" or n["threads"] == 128, n


@pytest.mark.parametrize("name", GPUS)
def test_gated_conv2d_backward(emu, name):
    for C in CHANNELS:
        for Cout in (1, 16, 32, 256, 1024, 4096):
            for acc in (4, 8):
                for P in PIXELS:
                    l = select(emu, "gated_conv2d_backward", [P, C, 1, Cout, acc], name)
                    assert problems(l, name) == [], (C, Cout, acc, P, l)
                    assert l["threads"] >= 64
                    tiles = (Cout + C + 1 + 2) * (l["threads"] + 1) * acc
                    assert l["shared"] + l["scratch"] == tiles
                    entries = Cout * C + Cout + C + 1 + 1
                    assert l["blocks"] <= 1024 and l["blocks"] * entries <= max(2**25, entries)
                    if l["scratch"]:  # global memory only when no block size fits
                        assert (
                            tiles * 64 // l["threads"] > GPUS[name]["smem_per_block_optin"] - 1024
                        )


@pytest.mark.parametrize("name", GPUS)
@pytest.mark.parametrize(
    "op",
    [
        "boundary_potential",
        "boundary_potential_backward",
        "dual_task_loss",
        "dual_task_loss_backward",
    ],
)
def test_boundary_potential_family(emu, name, op):
    for R in range(1, 33):  # sigma up to 32/3, the API's limit on every device
        for N, H, W in [(1, 1, 1), (8, 800, 800), (2, 1024, 2048), (64, 4096, 4096)]:
            for acc in (4, 8):
                l = select(emu, op, [N, H, W, R, acc], name)
                assert problems(l, name) == [], (R, N, H, W, l)
                assert l["threads"] == 256
                tiles = N * math.ceil(H / l["tile_h"]) * math.ceil(W / l["tile_w"])
                assert 1 <= l["blocks"] <= min(tiles, MAX_GRID)
                if l["scratch"]:  # bounded global scratch: two blocks per SM
                    assert l["blocks"] <= 2 * GPUS[name]["sm_count"]
                    assert (l["tile_h"], l["tile_w"]) == (32, 32)
    # sigma = 1, the paper's: tiles in shared memory on every GPU, 32x32 but for the backward of
    # the loss on sm_75 (64 KiB per block: 16x32)
    l = select(emu, op, [8, 800, 800, 3, 4], name)
    small = name == "sm_75" and op == "dual_task_loss_backward"
    assert (l["tile_h"], l["tile_w"], l["scratch"]) == ((16, 32, 0) if small else (32, 32, 0))


@pytest.mark.parametrize("name", GPUS)
def test_edge_targets_and_boundary_fscore(emu, name):
    for P in PIXELS:
        for op, sizes in [("edge_targets", [P]), ("boundary_fscore_mask", [P])]:
            l = select(emu, op, sizes, name)
            assert problems(l, name) == [] and l["threads"] == 256 and l["shared"] == 0
    for planes in (1, 19, 2 * 64 * 19, 10**6):
        for cells in (1, 100, 10**7):
            for counters in (4, 1, 32):
                l = select(emu, "boundary_fscore_blocks", [planes, cells, counters], name)
                assert problems(l, name) == [], (planes, cells, counters, l)
                assert l["blocks"] == planes * l["variant"]  # variant: blocks per plane
                assert l["shared"] == counters * l["threads"] * 8


# --- with the registers and static shared memory of the kernels this build compiled -----------


def compiled_kernels():
    """{program type: (registers, static shared bytes)} from cuobjdump, or None."""
    if not gscnn_ops.has_cuda_kernels():
        return None
    from test_cuda_build import cuobjdump

    exe = cuobjdump()
    if exe is None:
        return None
    out = subprocess.run(
        [exe, "--dump-resource-usage", gscnn_ops._C.__file__],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kernels = {}
    for m in re.finditer(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:\d+ SHARED:(\d+)", out):
        kernels[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return kernels


def test_selections_fit_the_compiled_kernels(emu):
    kernels = compiled_kernels()
    if kernels is None:
        if os.environ.get("GSCNN_EXPECT_CUDA_KERNELS") == "1":
            pytest.fail("the CUDA build's kernels could not be read with cuobjdump")
        pytest.skip("no CUDA kernels in this build, or no cuobjdump")
    programs = {
        "ForwardProgramSmallC": ("gated_conv2d_small_c", [10**6, 32, 1, 4]),
        "BackwardProgramSmallC": ("gated_conv2d_backward_small_c", [10**6, 32, 1, 4]),
        "ForwardProgram": ("gated_conv2d", [10**6, 32, 1, 4]),
        "BackwardProgram": ("gated_conv2d_backward", [10**6, 32, 1, 32, 4]),
        "Pipeline": ("dual_task_loss_backward", [8, 800, 800, 3, 4]),
        "EdgeTargetsProgram": ("edge_targets", [10**6]),
        "MaskProgram": ("boundary_fscore_mask", [10**6]),
        "BoundaryProgram": ("boundary_fscore_blocks", [19, 1000, 4]),
        "MatchProgram": ("boundary_fscore_blocks", [38, 1000, 32]),
    }
    seen = set()
    for mangled, (regs, static) in kernels.items():
        program = next((p for p in programs if p in mangled), None)  # SmallC first: a prefix
        assert program is not None, f"a kernel no test knows: {mangled}"
        seen.add(program)
        assert regs <= 255
        op, sizes = programs[program]
        # The NHWC variants of the shape-stream programs (template argument kNhwc = true, "Lb1E"),
        # their own selection for their width and element size, under their launch bounds.
        nhwc = re.search(r"ProgramSmallCI(f|d|N3c104HalfE|N3c108BFloat16E)Li(\d+)ELb1E", mangled)
        if nhwc:
            elem = {"f": 4, "d": 8}.get(nhwc.group(1), 2)
            op, sizes = op + "_nhwc", [10**6, int(nhwc.group(2)), 1, elem]
        threads = kernel_report.max_threads_per_block(mangled)
        kernel = dict(regs_per_thread=regs, max_threads_per_block=threads, static_smem=static)
        for name in GPUS:
            l = select(emu, op, sizes, name, **kernel)
            assert problems(l, name, kernel) == [], (mangled, name, l)
    assert seen == set(programs)
