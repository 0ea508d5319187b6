"""A static report of the CUDA kernels of the built library, no GPU needed.

For every kernel (one per block program and dtype; see csrc/cuda/launch.cuh):
  * resources: registers, stack frame, static shared memory, local memory (spills), from
    `cuobjdump --dump-resource-usage`;
  * the instruction mix of its innermost loops, from the SASS (`cuobjdump -sass`): a loop is the
    range between a branch target and a later branch back to it; an innermost loop holds no other.
    Per loop: instructions, global loads/stores (LDG/STG), shared loads/stores (LDS/STS), constant
    loads (LDC/ULDC), float arithmetic (FFMA/FADD/FMUL/...), barriers (BAR).
Then, for the benchmark shapes, the launch each op's own selection makes on an H100 (through the
test extension, tests/emulation.py), the resident blocks per SM and the number of waves, and the
HBM floor: the time to read every input and write every output once.

    python scripts/kernel_report.py [--library PATH] [--kernels REGEX] [--measured BENCH.json]

--measured takes the pytest-benchmark JSON of the CUDA benchmarks (scripts/gpu_check.sh writes
it) and adds the measured median of the fused op next to each estimate.

Estimated times (the forward kernels of the shape stream's layers, one pixel per thread per
iteration of a grid-stride loop, NCHW and NHWC; two for the half types' programs at C = 32):
from the SASS of the pixel loop, whose static counts divided by its pixels per thread are the
per-pixel counts (the loop over the Cr = 1 gating channel inside it runs once), with the model
written in ISSUE_MODEL below:
    load/store time = warps x wavefronts / (SMs x LSU_PER_CLOCK x clock)
    issue time      = warps x instructions / (SMs x ISSUE_PER_CLOCK x clock)
    estimate        = max(HBM floor at the specification bandwidth, load/store time, issue time)
warps = pixels / 32. wavefronts: what the load/store instructions (global, shared, local) move
in units of 128 bytes per warp: one for a 32- or 16-bit access of 32 consecutive values and for
a broadcast (every lane the same address: the weights the programs read from shared memory),
two for a 64-bit and four for a 128-bit access of 32 different, consecutive or conflict-free
addresses. Which shared loads are per-thread rather than broadcasts the SASS does not say: the
NHWC program's are counted from its structure (2 x chunks per pixel: its row read, then the
store phase's read), every other shared load is a broadcast. It assumes whole waves (the
grid-stride launch fills the GPU exactly) and the memory system reaching its specified
bandwidth; real kernels reach 85-95 % of it, so read the estimate as "about", never as a bound.
The dual-task kernels run phases with loops whose trip counts (and the compiler's unrolling of
them) the SASS does not tell: their load/store count comes from the emulator instead, which runs
the same block program on the benchmark's inputs at a reduced size and counts every shared load
and store (pipeline_counts, pipeline_estimate: the global accesses from the tile geometry, issue
from the instructions per load/store of their innermost loops, every loop weighted alike; code
called rather than inlined -- the cold image-edge paths, GSCNN_HD_COLD -- is a function of its own
and outside the mix; shared wavefronts counted by the emulator, bank conflicts included; a
table after the launches splits them by phase, PIPELINE_PHASES). The
shape stream's backward (BackwardProgramSmallC, NCHW and NHWC) is estimated from its phases: the
SASS between its barriers, the trip counts of its reduction's loops, and the emulator's
shared-memory wavefronts (gcl_backward_estimate, gcl_backward_shared_wavefronts).

What this is not: a measurement. The floors are arithmetic; the occupancy is an upper bound
(register allocation granularity ignored). Measured times come with a GPU (scripts/gpu_check.sh).
"""

import argparse
import os
import re
import subprocess
import sys
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# H100 SXM (sm_90): what the floors and occupancy assume.
HBM_BYTES_PER_S = {"H100 SXM spec": 3.35e12, "H100 measured copy": 3.0e12}
SM_COUNT = 132
# The issue model of the estimates (H100 SXM, sm_90): boost clock, warp-instructions per SM per
# clock through the load/store units (one 128-byte wavefront) and through the four schedulers.
ISSUE_MODEL = {"clock_hz": 1.98e9, "lsu_per_clock": 1, "issue_per_clock": 4}

CLASSES = {
    "LDG": re.compile(r"^LDG\b"),
    "STG": re.compile(r"^STG\b"),
    "LDS": re.compile(r"^LDS\b"),
    "STS": re.compile(r"^STS\b"),
    "LDC": re.compile(r"^U?LDC\b"),
    "FP32": re.compile(r"^(FFMA|FADD|FMUL|FMNMX|FSETP|FSEL|MUFU)\b"),
    "BAR": re.compile(r"^BAR\b"),
    "LDL": re.compile(r"^(LDL|STL)\b"),  # local memory: register spills and stack frames
}
MEMORY = ("LDG", "STG", "LDS", "STS", "LDL")
INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def cuobjdump():
    try:
        import triton

        exe = os.path.join(
            os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"
        )
        if os.path.isfile(exe):
            return exe
    except ImportError:
        pass
    from shutil import which

    return which("cuobjdump")


def demangle(names):
    try:
        out = subprocess.run(
            ["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True
        ).stdout.splitlines()
        return dict(zip(names, out))
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}


def short_name(demangled):
    """program_kernel<gscnn::gcl::ForwardProgram<float, ...>> -> gcl::ForwardProgram<float, ...>"""
    m = re.search(r"program_kernel<gscnn::(.*)>\(", demangled)
    name = m.group(1) if m else demangled
    name = re.sub(r"gscnn::|c10::", "", name)
    # program_kernel<Program, kScratch>: buffers in shared memory, or in global scratch memory
    return re.sub(r",\s*false$", " [shared]", re.sub(r",\s*true$", " [global scratch]", name))


def resources(exe, library):
    out = subprocess.run(
        [exe, "--dump-resource-usage", library], capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for m in re.finditer(
        r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out
    ):
        found[m.group(1)] = dict(
            regs=int(m.group(2)),
            stack=int(m.group(3)),
            shared=int(m.group(4)),
            local=int(m.group(5)),
        )
    return found


def sass_functions(exe, library):
    out = subprocess.run([exe, "-sass", library], capture_output=True, text=True, check=True).stdout
    functions = {}
    for chunk in re.split(r"\n\s*Function : ", out)[1:]:
        name, body = chunk.split("\n", 1)
        code = []
        for m in INSTRUCTION.finditer(body):
            code.append((int(m.group(1), 16), m.group(3), m.group(4)))
        functions[name.strip()] = code
    return functions


def loops(code):
    """[(start, end)] of every loop: a branch back to an earlier target, and that target."""
    found = []
    for address, opcode, operands in code:
        if opcode.startswith("BRA"):
            target = re.search(r"0x([0-9a-f]+)", operands)
            if target and int(target.group(1), 16) <= address:
                found.append((int(target.group(1), 16), address))
    return found


def opcodes(code, start, end):
    return [op for address, op, _ in code if start <= address <= end]


def innermost_loops(code):
    """[(start, end, [opcodes])] of the loops no other loop is inside of."""
    loops_ = loops(code)
    inner = [
        (a, b)
        for a, b in loops_
        if not any((c, d) != (a, b) and a <= c and d <= b for c, d in loops_)
    ]
    return [(a, b, opcodes(code, a, b)) for a, b in sorted(set(inner))]


def store_loop(code):
    """Opcodes of the loop (at any depth) with the most global stores, or None: the pixel loop of
    a grid-stride kernel that stores one pixel per iteration."""
    best = None
    for start, end in loops(code):
        ops = opcodes(code, start, end)
        stores = sum(op.startswith("STG") for op in ops)
        if stores and (best is None or stores > best[0]):
            best = (stores, ops)
    return best[1] if best else None


def wavefronts(opcodes, per_thread_lds=0):
    """128-byte wavefronts per warp of the load/store instructions in `opcodes` (see the module's
    docstring): 1, 2 or 4 by width, shared loads 1 (broadcasts) except per_thread_lds of them,
    which are 128-bit per-thread loads (4)."""
    total = 0
    for op in opcodes:
        if not any(CLASSES[k].match(op) for k in MEMORY):
            continue
        width = 4 if ".128" in op else 2 if ".64" in op else 1
        total += 1 if op.startswith("LDS") else width
    return total + 3 * per_thread_lds


def estimate_ms(pixel_mix, pixels, floor_s):
    """(load/store ms, issue ms, estimate ms) of a kernel running pixel_mix once per pixel
    (pixel_mix["wavefronts"]: its load/store wavefronts, pixel_mix["all"]: its instructions)."""
    m = ISSUE_MODEL
    warps = pixels / 32
    lsu = warps * pixel_mix["wavefronts"]
    lsu_s = lsu / (SM_COUNT * m["lsu_per_clock"] * m["clock_hz"])
    issue_s = warps * pixel_mix["all"] / (SM_COUNT * m["issue_per_clock"] * m["clock_hz"])
    return lsu_s * 1e3, issue_s * 1e3, max(floor_s, lsu_s, issue_s) * 1e3


def mix(opcodes):
    counts = Counter()
    for op in opcodes:
        for cls, pattern in CLASSES.items():
            if pattern.match(op):
                counts[cls] += 1
    counts["all"] = len(opcodes)
    return counts


# --- the benchmark shapes: launches, occupancy, floors -----------------------------------------


def benchmark_rows():
    """(name, op for select_launch, sizes, bytes read + written once) of the benchmark shapes."""
    rows = []
    P = 8 * 800 * 800
    for C in (8, 16, 32):
        for dtype, b in (("fp32", 4), ("bf16", 2)):
            rows.append(
                (
                    f"gated_conv2d fwd C={C} {dtype}",
                    "gated_conv2d_small_c",
                    [P, C, 1, 4],
                    P * ((C + 1) + (C + 1)) * b,
                )
            )
            rows.append(
                (
                    f"gated_conv2d fwd C={C} {dtype} NHWC",
                    "gated_conv2d_small_c_nhwc",
                    [P, C, 1, b],
                    P * ((C + 1) + (C + 1)) * b,
                )
            )
            # backward reads grad_out, grad_alpha (the benchmark's loss uses both outputs), s,
            # r (and recomputes alpha), writes grad_s, grad_r
            for layout, op, size in (("", "", 4), (" NHWC", "_nhwc", b)):
                rows.append(
                    (
                        f"gated_conv2d bwd C={C} {dtype}{layout}",
                        "gated_conv2d_backward_small_c" + op,
                        [P, C, 1, size],
                        P * (C + 1 + C + 1 + C + 1) * b,
                    )
                )
    # The dual-task rows on the benchmark's noisy softmax ("loss" group), and in float32 on its
    # street scenes ("loss_scene": the inputs the exact skip is for; same launch and floor).
    K, N, H, W = 19, 8, 800, 800
    for dtype, b, inputs in (("fp32", 4, ""), ("bf16", 2, ""), ("fp32", 4, " scene")):
        rows.append(
            (
                f"dual_task_loss fwd {dtype}{inputs}",
                "dual_task_loss",
                [N, H, W, 3, 4],
                N * K * H * W * b + N * H * W * 8,
            )
        )
        rows.append(
            (
                f"dual_task_loss bwd {dtype}{inputs}",
                "dual_task_loss_backward",
                [N, H, W, 3, 4],
                2 * N * K * H * W * b + N * H * W * 8,
            )
        )
    return rows


# --- the dual-task kernels: estimates from the emulator's shared-memory counts ------------------

# The benchmark's own inputs at a reduced size: one 160 x 160 image, 25 tiles of 32 x 32 (the same
# 16 x 16 label blocks, ignore stripe and softmax statistics; counts per tile scale to 800 x 800).
PIPELINE_SAMPLE = (1, 160, 160)
# The street scene of the benchmark's "loss_scene" group at its size (its first image, 800 x 800):
# its tiles at the report's sample size would see a scene shrunk five times, many more classes
# per tile. The sample is instead the scene's five 160 x 160 crops on its diagonal (sky,
# buildings, the horizon, road; 125 tiles of the real scale: only the crops' edges replicate).
SCENE_SAMPLE = (1, 800, 800)


def pipeline_counts(op, bf16, tile, threads, gpu, scene=False):
    """(shared-memory accesses, their bytes, tiles, their wavefronts, the wavefronts per pass site
    (emulation.last_launch_passes)) of one emulated launch of a dual-task kernel
    on the inputs of benchmarks/test_bench_dual_task_loss.py at PIPELINE_SAMPLE: its "loss"
    group's noisy softmax (every class varies in every tile: no (tile, class) is skipped whole;
    classes absent from a tile's halo skip their one-hot blur), or (scene) its "loss_scene"
    group's street scene (most (tile, class) pairs skipped whole), with the tile and
    block size the op chose for the benchmark shape. The emulator counts every shared load and
    store instruction a thread executes, a vector access of four values as one, their bytes, and
    the wavefronts a warp's instruction takes, bank conflicts and idle lanes included
    (csrc/testing/emulator.h, SharedCounts and WarpAccesses)."""
    import torch

    import emulation

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import test_bench_dual_task_loss as bench

    from gscnn_ops.ops.dual_task_loss import DUAL_TASK_THRESHOLD

    dtype = torch.bfloat16 if bf16 else torch.float32
    if scene:
        labels = bench.scene_labels(1, *SCENE_SAMPLE[1:])[0]
        c = PIPELINE_SAMPLE[1]
        crops = torch.stack([labels[i * c : (i + 1) * c, i * c : (i + 1) * c] for i in range(5)])
        g = torch.Generator().manual_seed(0)
        prob, target, _ = bench.inputs_from_labels(crops, "cpu", dtype, g, confident=True)
    else:
        prob, target, _ = bench.make_inputs("cpu", dtype, *PIPELINE_SAMPLE)
    n, _, h, w = prob.shape
    args = (bench.SIGMA, DUAL_TASK_THRESHOLD, bench.IGNORE, gpu, emulation.launch(threads, 0, tile))
    t = torch.ops.gscnn_testing
    _, count = t.dual_task_loss(prob, target, *args)
    if op == "dual_task_loss_backward":
        t.dual_task_loss_backward(
            torch.tensor(1.0, dtype=torch.float64), prob, target, count, *args
        )
    rec = emulation.last_launch()
    tiles = n * -(-h // tile[0]) * -(-w // tile[1])
    return (
        rec["shared_loads"] + rec["shared_stores"],
        rec["shared_load_bytes"] + rec["shared_store_bytes"],
        tiles,
        rec["shared_load_wavefronts"] + rec["shared_store_wavefronts"],
        emulation.last_launch_passes(),
    )


# The dual-task program's phases (dtl::Pipeline::operator(), common/boundary_potential_program.h)
# by the ordinal of their lambda in its source (emulation.last_launch_passes: ordinals 5 and 9 are
# a barrier's predicate and a helper, not passes). tests/test_kernel_report.py checks that the
# forward and the backward run the phases named here.
PIPELINE_PHASES = {
    1: "labels into E (per tile)",
    2: "keep rows, class groups (per tile)",
    3: "keep mask, the tile's classes (per tile)",
    4: "skip test (probabilities a thread does not hold into E)",
    6: "zeros for a skipped class (backward)",
    7: "probabilities into E (held over the skip test)",
    8: "probabilities into E (potential)",
    10: "row blur",
    11: "column blur",
    12: "zeta (forward)",
    13: "zeta and its adjoint (backward)",
    14: "adjoint of the differences",
    15: "adjoint of the column blur",
    16: "adjoint of the row blur",
    17: "the threads' sums (per tile, forward)",
    18: "block reduction (per tile, forward)",
}


def phase_table(phases):
    """Markdown lines: the emulated shared-memory wavefronts per tile of each dual-task kernel's
    phases, with what they would take free of bank conflicts. phases: {case: (passes, tiles)}."""
    cases = list(phases)
    sites = []
    for passes, _ in phases.values():
        sites += [p[0] for p in passes if p[0] not in sites]
    lines = [
        "| phase | " + " | ".join(f"{c} (free of conflicts)" for c in cases) + " |",
        "|---|" + "---:|" * len(cases),
    ]
    for site in sorted(sites):
        cells = []
        for passes, tiles in phases.values():
            p = next((p for p in passes if p[0] == site), None)
            cells.append(f"{p[1] / tiles:,.0f} ({p[2] / tiles:,.0f})" if p else "–")
        name = PIPELINE_PHASES.get(site, f"pass {site}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def pipeline_estimate(
    op,
    sizes,
    tile,
    shared_accesses_per_tile,
    code,
    floor_s,
    shared_bytes_per_tile=None,
    shared_wavefronts_per_tile=None,
):
    """(load/store ms, issue ms, estimate ms) of a dual-task kernel at the benchmark shape sizes =
    [N, H, W, ...] (K = 19), from:
      shared accesses: the emulator's count per tile (pipeline_counts) times the tiles, one
        warp-instruction per 32, and the emulator's wavefronts per tile (bank conflicts and
        partly idle warps included); without them, their bytes (default: 4 per access) in
        128-byte wavefronts per warp (a 16-byte access of 32 lanes is four);
      global accesses: per (tile, class) the probabilities over the tile and its halo E (loaded
        whether or not the class is then skipped), the backward's gradient over the tile (zeros
        for a skipped class), one access per group of four values (the kernels' 16-byte loads
        and stores: the clamped groups at the image's left and right edges, scalar, are under 2 %
        of them at the benchmark shape and counted as one); per tile (loss) the int64 labels
        over E, one access each, two wavefronts per 32;
    one warp-instruction per 32 accesses, one 128-byte wavefront per 32 values (coalesced); issue
    time: those load/store instructions times the instructions per load/store of the kernel's
    innermost loops in the SASS (`code`), at ISSUE_MODEL's rates. For the issue time every warp
    is taken as full (regions 34 or 42 values wide leave some lanes idle: instructions
    undercounted), and barriers and the grid's last partial wave are not counted."""
    N, H, W = sizes[:3]
    K, R = 19, 3
    h = 2 * R + 2 if op.endswith("backward") else R + 1
    th, tw = tile
    tiles = N * -(-H // th) * -(-W // tw)
    e = (th + 2 * h) * (tw + 2 * h)
    tile_values = th * tw if op.endswith("backward") else 0
    global_values = tiles * K * (e + tile_values)
    global_accesses = tiles * K * ((th + 2 * h) * -(-(tw + 2 * h) // 4) + -(-tile_values // 4))
    label_wavefronts = tiles * 2 * e / 32
    shared = tiles * shared_accesses_per_tile
    if shared_bytes_per_tile is None:
        shared_bytes_per_tile = 4 * shared_accesses_per_tile
    memory_instructions = (shared + global_accesses) / 32 + tiles * e / 32
    if shared_wavefronts_per_tile is None:
        shared_wavefronts_per_tile = shared_bytes_per_tile / 128
    wavefronts_total = tiles * shared_wavefronts_per_tile + global_values / 32 + label_wavefronts
    per_memory = 1.0
    if code is not None:
        counts = Counter()
        for _, _, ops in innermost_loops(code):
            c = mix(ops)
            if any(c[k] for k in ("LDG", "STG", "LDS", "STS")):  # not address loops
                counts.update(c)
        mem = sum(counts[k] for k in ("LDG", "STG", "LDS", "STS"))
        per_memory = counts["all"] / mem if mem else 1.0
    m = ISSUE_MODEL
    lsu_s = wavefronts_total / (SM_COUNT * m["lsu_per_clock"] * m["clock_hz"])
    issue_s = memory_instructions * per_memory / (SM_COUNT * m["issue_per_clock"] * m["clock_hz"])
    return lsu_s * 1e3, issue_s * 1e3, max(floor_s, lsu_s, issue_s) * 1e3


# --- the shape stream's backward (BackwardProgramSmallC, NCHW): estimates from its phases --------


# The backward's sample for the emulator: one 64 x 64 image (32 tiles of 128 pixels in one block).
GCL_BACKWARD_SAMPLE = (1, 64, 64)


def gcl_backward_shared_wavefronts(C, bf16, threads, gpu, nhwc=False):
    """Shared-memory wavefronts per tile of `threads` pixels of the shape-stream backward (NCHW,
    or NHWC: channels_last s and gradients), emulated on the benchmark's inputs at
    GCL_BACKWARD_SAMPLE in one block (the per-block staging and end phase shared by its 32 tiles,
    about as in the benchmark's ~39 per block)."""
    import torch

    import emulation

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import test_bench_gated_conv2d as bench

    n, h, w = GCL_BACKWARD_SAMPLE
    dtype = torch.bfloat16 if bf16 else torch.float32
    layout = "nhwc" if nhwc else "nchw"
    s, r, gw, gb, weight = bench.make_inputs("cpu", dtype, n, C, h, w, False, layout=layout)
    g_out, g_alpha = bench.make_grads((s,))
    torch.ops.gscnn_testing.gated_conv2d_backward(
        g_out, g_alpha, s, r, gw, gb, weight, gpu, emulation.launch(threads, 1)
    )
    rec = emulation.last_launch()
    tiles = -(-n * h * w // threads)
    return (rec["shared_load_wavefronts"] + rec["shared_store_wavefronts"]) / tiles


def gcl_backward_estimate(code, C, T, pixels, floor_s, shared_wavefronts_per_tile=None):
    """(load/store ms, issue ms, estimate ms) of BackwardProgramSmallC (Cr = 1) at `pixels`
    pixels in tiles of T (one pixel per thread), or None where its SASS is not laid out as
    expected. Per tile, in warp-instructions and 128-byte wavefronts (csrc/common/
    gated_conv2d_program.h gives the trip counts; the SASS the instructions per trip):
      pixel phase  the code between the loop's first two barriers, less the padding pixels'
                   path (the first branch after the barrier jumps over it), and the tile loop's
                   code before them (NHWC: the staging of s and g, unrolled), once per warp:
                   its static count is its dynamic one at Cr = 1 (the loops over Cr run once);
      reduce       the 4 x 4 dW tile loop (9 LDS.128 per four pixels) span / 4 times per work
                   item, one item per lane; the sums of db, dw_g, db_g (their most unrolled
                   loops: one LDS.128 per four pixels for a plain sum, two for a sum of
                   products) T / (pixels per trip) times by each warp holding such an entry (a
                   warp holding both kinds runs both loops; T a multiple of the unrolling); the
                   reduce's code outside loops once per warp (it includes untaken paths: an
                   over-count);
    wavefronts: shared loads of the pixel phase one each (broadcasts of W or the thread's own
    column), 16-byte per-thread loads four (the tile loop; the sums' rows; their DZ row, a
    broadcast, is counted as four too: an over-count), other accesses by width; shared
    accesses free of bank conflicts, global ones coalesced. Where the emulator's count is given
    (shared_wavefronts_per_tile, from gcl_backward_shared_wavefronts: bank conflicts and the
    per-block phases included) it replaces every shared access's wavefronts, and only the global
    accesses come from the SASS. Not counted: the once-per-block
    staging of the parameters and the end phase (a grid-stride block runs ~39 tiles at the
    benchmark shape), barrier waits, the idle lanes while a few warps sum db, dw_g, db_g
    (latency that other resident blocks can hide)."""
    bars = [a for a, op, _ in code if op.startswith("BAR")]
    if len(bars) != 3:
        return None
    b1, b2, b3 = bars
    branch = next(((a, ops) for a, op, ops in code if b1 < a < b2 and op.startswith("BRA")), None)
    target = re.search(r"0x([0-9a-f]+)", branch[1]) if branch else None
    if target is None or not branch[0] < int(target.group(1), 16) < b2:
        return None
    skip = (branch[0], int(target.group(1), 16))
    pixel = [op for a, op, _ in code if b1 < a < b2 and not skip[0] < a < skip[1]]
    # the tile loop's code before its first barrier (NHWC: staging s and g in shared memory)
    head = min((a for a, b in loops(code) if a < b1 and b > b2), default=b1)
    pixel += [op for a, op, _ in code if head <= a < b1]
    inner = [(a, b, ops) for a, b, ops in innermost_loops(code) if b2 < a and b < b3]

    def lds128(ops):
        return sum(op.startswith("LDS.128") for op in ops)

    def has(ops, kind):
        return any(op.startswith(kind) for op in ops)

    # the dW tile loop: 9 LDS.128 and its FMAs; the sums' main loops (nvcc unrolls them): the
    # plain sum's has FADDs and no FFMA, one LDS.128 per 4 pixels, the sum of products's FFMAs
    # and two per 4 pixels (x and DZ); the most unrolled of each (the others are remainders)
    tile_loop = next((ops for _, _, ops in inner if lds128(ops) == 9 and has(ops, "FFMA")), None)
    sums = [ops for _, _, ops in inner if lds128(ops) and has(ops, "FADD") and not has(ops, "FFMA")]
    dots = [ops for _, _, ops in inner if lds128(ops) and has(ops, "FFMA") and ops is not tile_loop]
    if tile_loop is None or not sums or not dots:
        return None
    sum_loop, dot_loop = max(sums, key=lds128), max(dots, key=lds128)
    straight = [
        op for a, op, _ in code if b2 < a < b3 and not any(s <= a <= e for s, e, _ in inner)
    ]
    # BackwardSmallCShared's geometry
    kEB = (C // 4) ** 2
    groups = T // kEB if T >= kEB else 1
    span = -(-T // groups)
    items = kEB * groups
    n_small = 2 * C + 2  # db (C), dw_g (C + Cr), db_g (1) at Cr = 1
    warps = T / 32
    issue = warps * (len(pixel) + len(straight))
    waves = warps * (wavefronts(pixel) + wavefronts(straight))
    item_warps = -(-items // 32)
    issue += item_warps * (span / 4) * len(tile_loop)
    waves += item_warps * (span / 4) * 4 * lds128(tile_loop)
    for w in range(-(-n_small // 32)):
        entries = range(32 * w, min(32 * w + 32, n_small))
        # pixels per trip: 4 per LDS.128 for a plain sum, 2 for a sum of products (x and DZ)
        for loop, pixels_per_trip, present in (
            (sum_loop, 4 * lds128(sum_loop), any(e < C or e == n_small - 1 for e in entries)),
            (dot_loop, 2 * lds128(dot_loop), any(C <= e < n_small - 1 for e in entries)),
        ):
            if present:
                trips = T / pixels_per_trip
                issue += trips * len(loop)
                waves += trips * 4 * lds128(loop)
    if shared_wavefronts_per_tile is not None:
        global_ops = [op for op in pixel + straight if op.startswith(("LDG", "STG"))]
        waves = warps * wavefronts(global_ops) + shared_wavefronts_per_tile
    tiles = -(-pixels // T)
    m = ISSUE_MODEL
    lsu_s = tiles * waves / (SM_COUNT * m["lsu_per_clock"] * m["clock_hz"])
    issue_s = tiles * issue / (SM_COUNT * m["issue_per_clock"] * m["clock_hz"])
    return lsu_s * 1e3, issue_s * 1e3, max(floor_s, lsu_s, issue_s) * 1e3


def max_threads_per_block(program):
    """The launch bound (kMaxThreads) of a program, from its name (short or mangled): 256, but 128
    for the NHWC programs that take more registers (the backward at C = 32, the half types'
    two-pixel forward at C = 32); mirrors csrc/common/gated_conv2d_program.h."""
    short = re.search(r"(Forward|Backward)ProgramSmallC<(\w+), 32, true>", program)
    mangled = re.search(r"(Forward|Backward)ProgramSmallCI(\w+?)Li32ELb1E", program)
    m = short or mangled
    if m is None:
        return 256
    half = m.group(2) in ("BFloat16", "Half", "N3c108BFloat16E", "N3c104HalfE")
    return 128 if m.group(1) == "Backward" or half else 256


def measured_medians(path):
    """{(direction, C, dtype): median seconds} of the fused gated_conv2d in a pytest-benchmark
    JSON (groups "cuda-<fwd|fwdbwd>-C<C>-<f32|bf16>[-nhwc]", see
    benchmarks/test_bench_gated_conv2d.py); dtype "fp32", "bf16", "fp32-nhwc" or "bf16-nhwc"."""
    import json

    with open(path) as f:
        data = json.load(f)
    found = {}
    for b in data.get("benchmarks", []):
        m = re.fullmatch(r"cuda-(fwd|fwdbwd)-C(\d+)-(f32|bf16)(-nhwc)?", b.get("group") or "")
        if m and b.get("params", {}).get("impl") == "fused":
            dtype = ("fp32" if m.group(3) == "f32" else "bf16") + (m.group(4) or "")
            found[(m.group(1), int(m.group(2)), dtype)] = b["stats"]["median"]
    return found


def launch_table(kernel_limits, sass=None, measured=None, phases=None):
    """The launch table's lines; phases, if given, receives the float32 dual-task kernels'
    per-phase wavefronts ({case: (passes, sample tiles)}, for phase_table)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import torch

    import emulation

    emulation.load()
    lines = []
    for name, op, sizes, nbytes in benchmark_rows():
        C = sizes[1]
        program = {
            "gated_conv2d": "gcl::ForwardProgram<float, gcl::LinearGate",
            "gated_conv2d_small_c": f"gcl::ForwardProgramSmallC<float, {C}, false>",
            "gated_conv2d_small_c_nhwc": f"gcl::ForwardProgramSmallC<float, {C}, true>",
            "gated_conv2d_backward": "gcl::BackwardProgram<float>",
            "gated_conv2d_backward_small_c": f"gcl::BackwardProgramSmallC<float, {C}, false>",
            "gated_conv2d_backward_small_c_nhwc": f"gcl::BackwardProgramSmallC<float, {C}, true>",
            "dual_task_loss": "dtl::Pipeline<float, true, false, 3>",
            "dual_task_loss_backward": "dtl::Pipeline<float, true, true, 3>",
        }[op]
        # the row's own dtype's kernel (the NHWC kernels' registers differ between dtypes); the
        # bf16 NCHW forward at C = 32 is the two-pixel program (800 x 800 images: an even count)
        bf16 = "bf16" in name.split()
        pairs = op == "gated_conv2d_small_c" and C == 32 and bf16
        if pairs:
            program = "gcl::ForwardProgramSmallCPairs<float, 32>"
        program = program.replace("<float", "<BFloat16" if bf16 else "<float")
        regs, static = next(
            (
                (r["regs"], r["shared"])
                for n, r in kernel_limits.items()
                if n.startswith(program) and n.endswith("[shared]")
            ),
            (255, 0),
        )
        gpu = emulation.gpu(
            "sm_90",
            regs_per_thread=regs,
            static_smem=static,
            max_threads_per_block=max_threads_per_block(program),
        )
        blocks, threads, shared, scratch, th, tw, _ = torch.ops.gscnn_testing.select_launch(
            op, sizes, gpu
        )
        d = emulation.GPUS["sm_90"]
        per_sm = min(
            d["max_blocks_per_sm"],
            d["max_threads_per_sm"] // threads,
            d["regs_per_sm"] // max(1, regs * threads),
            d["smem_per_sm"] // (shared + static + d["reserved_smem_per_block"]),
        )
        waves = blocks / (SM_COUNT * per_sm)
        floors = " / ".join(f"{nbytes / bw * 1e3:.3f}" for bw in HBM_BYTES_PER_S.values())
        tile = f" tile {th}x{tw}" if th else ""
        est = "– | – | –"
        forward, nhwc = op.startswith("gated_conv2d_small_c"), op.endswith("_nhwc")
        if forward and sass is not None:
            code = next((c for n, c in sass.items() if n.startswith(program)), None)
            ops = store_loop(code) if code else None
            c = mix(ops) if ops else None
            # Global stores per pixel: NCHW C + 1 (out, alpha; an unrolled loop holds several
            # pixels; the two-pixel program's stores hold two each); NHWC the out's 16-byte
            # chunks and alpha, one pixel per thread per tile.
            chunks = C * (2 if "bf16" in name else 4) // 16
            per_iteration = c["STG"] / (chunks + 1 if nhwc else C + 1) if c else 0
            if per_iteration >= 1 and per_iteration == int(per_iteration):
                # NHWC: each pixel of the loop reads its row and the store phase reads it back
                c["wavefronts"] = wavefronts(ops, 2 * chunks * per_iteration if nhwc else 0)
                pixels = per_iteration * (2 if pairs else 1)  # the pair program: 2 per store
                per_pixel = Counter({k: v / pixels for k, v in c.items()})
                lsu, issue, total = estimate_ms(
                    per_pixel, sizes[0], nbytes / HBM_BYTES_PER_S["H100 SXM spec"]
                )
                est = f"{lsu:.3f} | {issue:.3f} | {total:.3f}"
        if op.startswith("gated_conv2d_backward_small_c") and sass is not None:
            code = next((c for n, c in sass.items() if n.startswith(program)), None)
            found = (
                gcl_backward_estimate(
                    code,
                    C,
                    threads,
                    sizes[0],
                    nbytes / HBM_BYTES_PER_S["H100 SXM spec"],
                    gcl_backward_shared_wavefronts(C, bf16, threads, gpu, nhwc),
                )
                if code
                else None
            )
            if found:
                est = " | ".join(f"{x:.3f}" for x in found)
        if op.startswith("dual_task_loss") and sass is not None:
            code = next(
                (c for n, c in sass.items() if n.startswith(program) and n.endswith("[shared]")),
                None,
            )
            scene = "scene" in name.split()
            accesses, access_bytes, sample_tiles, wavefront_count, passes = pipeline_counts(
                op, bf16, (th, tw), threads, gpu, scene
            )
            if phases is not None and not bf16:
                phases[name] = (passes, sample_tiles)
            lsu, issue, total = pipeline_estimate(
                op,
                sizes,
                (th, tw),
                accesses / sample_tiles,
                code,
                nbytes / HBM_BYTES_PER_S["H100 SXM spec"],
                access_bytes / sample_tiles,
                wavefront_count / sample_tiles,
            )
            est = f"{lsu:.3f} | {issue:.3f} | {total:.3f}"
        if measured is not None:
            seconds = None
            if forward:  # "gated_conv2d fwd C=<C> <dtype>[ NHWC]"
                direction, dtype = name.split()[1], name.split()[3]
                seconds = measured.get((direction, C, dtype + ("-nhwc" if nhwc else "")))
            est += f" | {seconds * 1e3:.3f}" if seconds else " | –"
        lines.append(
            f"| {name} | {blocks} x {threads}{tile} | {shared // 1024} KiB"
            f"{' + scratch' if scratch else ''} | {regs} | {per_sm} "
            f"({per_sm * threads} threads) | {waves:.2f} | {nbytes / 1e9:.2f} GB | "
            f"{floors} | {est} |"
        )
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--library", help="the built library (default: gscnn_ops._C)")
    p.add_argument(
        "--kernels",
        default=r"<float.*\[shared\]|MaskProgram<long, long>|Boundary|"
        r"Match|EdgeTargetsBlock<long, true>",
        help="regex on the kernel names whose loops to list",
    )
    p.add_argument(
        "--no-launches",
        action="store_true",
        help="skip the launch table (it builds the test extension)",
    )
    p.add_argument(
        "--measured",
        help="pytest-benchmark JSON of the CUDA benchmarks: adds the measured fused medians",
    )
    args = p.parse_args(argv)
    library = args.library
    if library is None:
        import gscnn_ops

        library = gscnn_ops._C.__file__
    exe = cuobjdump()
    if exe is None:
        print(
            "kernel_report: cuobjdump not found (triton ships one; or install "
            "nvidia-cuda-cuobjdump)",
            file=sys.stderr,
        )
        return 2
    res = resources(exe, library)
    if not res:
        print(f"kernel_report: no CUDA kernels in {library}", file=sys.stderr)
        return 2
    funcs = sass_functions(exe, library)
    names = demangle(sorted(res))
    short = {m: short_name(names[m]) for m in res}

    print(f"# CUDA kernel report: {os.path.basename(library)}\n")
    print("## Resources (sm_90; every kernel __launch_bounds__(256))\n")
    print("| kernel | registers | stack B | static shared B | spills (local B) |")
    print("|---|---:|---:|---:|---:|")
    for m in sorted(res, key=lambda m: short[m]):
        r = res[m]
        print(f"| {short[m]} | {r['regs']} | {r['stack']} | {r['shared']} | {r['local']} |")

    print("\n## Innermost loops (static instruction counts per iteration)\n")
    print(
        "| kernel | loop (SASS offsets) | instructions | LDG | STG | LDS | STS | LDC | FP32 | BAR |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    pattern = re.compile(args.kernels)
    for m in sorted(res, key=lambda m: short[m]):
        if not pattern.search(short[m]) or m not in funcs:
            continue
        for start, end, ops in innermost_loops(funcs[m]):
            c = mix(ops)
            if c["LDG"] + c["STG"] + c["LDS"] + c["STS"] == 0:
                continue  # address arithmetic and the like
            print(
                f"| {short[m]} | {start:#x}-{end:#x} | {c['all']} | {c['LDG']} | {c['STG']} | "
                f"{c['LDS']} | {c['STS']} | {c['LDC']} | {c['FP32']} | {c['BAR']} |"
            )

    if not args.no_launches:
        print("\n## Benchmark shapes on an H100 (the ops' own launch selection)\n")
        print(
            "HBM floor: every input read and every output written once, at "
            + " / ".join(f"{k} {v / 1e12:.2f} TB/s" for k, v in HBM_BYTES_PER_S.items())
            + ". Resident blocks per SM: an upper bound (no register allocation granularity).\n"
        )
        m = ISSUE_MODEL
        print(
            "Estimates (**not measurements**; see the docstring): load/store issue at "
            f"{m['lsu_per_clock']} and all issue at {m['issue_per_clock']} warp-instructions "
            f"per SM per clock, {m['clock_hz'] / 1e9:.2f} GHz, {SM_COUNT} SMs; estimate = the "
            "largest of those and the floor at the specification bandwidth.\n"
        )
        measured = measured_medians(args.measured) if args.measured else None
        print(
            "| case | grid | shared / block | registers | blocks per SM | waves | bytes | "
            "HBM floor ms | est. load/store ms | est. issue ms | estimate ms |"
            + (" measured ms |" if measured is not None else "")
        )
        extra = "---:|" if measured is not None else ""
        print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|" + extra)
        by_short = {short[m]: r for m, r in res.items()}
        sass = {short[m]: funcs[m] for m in res if m in funcs}
        phases = {}
        for line in launch_table(by_short, sass, measured, phases):
            print(line)
        if phases:
            print(
                "\n## Dual-task kernels: shared-memory wavefronts per phase\n\n"
                "Emulated on the benchmark's inputs at the report's sample size (the launches "
                'above; "scene": the street scene\'s crops, where most (tile, class) pairs are '
                "skipped), per tile, summed over the classes; in brackets what the same accesses "
                "would take free of bank conflicts (partly idle quarter-warps count whole).\n"
            )
            for line in phase_table(phases):
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
