"""The emulated GPU of the tests: builds and loads the test extension (csrc/testing, never part of
the installed package) and describes the GPUs it can emulate.

`torch.ops.gscnn_testing.<op>` runs the CUDA kernels' block programs on the CPU for a GPU given
by its limits (GPUS below), with the op's own launch selection, or with parts of the launch
forced (`force=launch(threads=7, blocks=3)`), and fails on shared-memory races and reads of
uninitialised shared memory (csrc/testing/emulator.h).
"""

import glob
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Limits of each GPU generation the library supports, from the CUDA C++ Programming Guide's
# table of compute capabilities (one representative GPU each; only the SM count differs within a
# generation). Order: the C++ DeviceLimits (csrc/common/launch.h).
KIB = 1024
DEVICE_FIELDS = (
    "sm_count",
    "max_threads_per_sm",
    "max_blocks_per_sm",
    "regs_per_sm",
    "smem_per_block",
    "smem_per_block_optin",
    "smem_per_sm",
    "reserved_smem_per_block",
)
GPUS = {
    "sm_75": dict(
        sm_count=40,
        max_threads_per_sm=1024,
        max_blocks_per_sm=16,
        regs_per_sm=65536,
        smem_per_block=48 * KIB,
        smem_per_block_optin=64 * KIB,
        smem_per_sm=64 * KIB,
        reserved_smem_per_block=0,
    ),  # T4, RTX 20
    "sm_80": dict(
        sm_count=108,
        max_threads_per_sm=2048,
        max_blocks_per_sm=32,
        regs_per_sm=65536,
        smem_per_block=48 * KIB,
        smem_per_block_optin=163 * KIB,
        smem_per_sm=164 * KIB,
        reserved_smem_per_block=KIB,
    ),  # A100
    "sm_86": dict(
        sm_count=72,
        max_threads_per_sm=1536,
        max_blocks_per_sm=16,
        regs_per_sm=65536,
        smem_per_block=48 * KIB,
        smem_per_block_optin=99 * KIB,
        smem_per_sm=100 * KIB,
        reserved_smem_per_block=KIB,
    ),  # A10, RTX 30
    "sm_89": dict(
        sm_count=58,
        max_threads_per_sm=1536,
        max_blocks_per_sm=24,
        regs_per_sm=65536,
        smem_per_block=48 * KIB,
        smem_per_block_optin=99 * KIB,
        smem_per_sm=100 * KIB,
        reserved_smem_per_block=KIB,
    ),  # L4, L40S, RTX 40
    "sm_90": dict(
        sm_count=132,
        max_threads_per_sm=2048,
        max_blocks_per_sm=32,
        regs_per_sm=65536,
        smem_per_block=48 * KIB,
        smem_per_block_optin=227 * KIB,
        smem_per_sm=228 * KIB,
        reserved_smem_per_block=KIB,
    ),  # H100, H200
    "sm_100": dict(
        sm_count=148,
        max_threads_per_sm=2048,
        max_blocks_per_sm=32,
        regs_per_sm=65536,
        smem_per_block=48 * KIB,
        smem_per_block_optin=227 * KIB,
        smem_per_sm=228 * KIB,
        reserved_smem_per_block=KIB,
    ),  # B200
    "sm_120": dict(
        sm_count=170,
        max_threads_per_sm=1536,
        max_blocks_per_sm=32,
        regs_per_sm=65536,
        smem_per_block=48 * KIB,
        smem_per_block_optin=99 * KIB,
        smem_per_sm=100 * KIB,
        reserved_smem_per_block=KIB,
    ),  # RTX 50
}

# What a compiled kernel can need: every program is compiled with __launch_bounds__(256), so at
# most 255 registers per thread and blocks of at most 256 threads (the worst case, used by
# default); the real kernels' figures come from the build (tests/test_launch_selection.py).
KERNEL_FIELDS = ("regs_per_thread", "max_threads_per_block", "static_smem")
WORST_KERNEL = dict(regs_per_thread=255, max_threads_per_block=256, static_smem=0)

PRODUCTION_GPU = "sm_90"  # the lent GPUs, and the architecture CI compiles


def gpu(name=PRODUCTION_GPU, **kernel):
    """The `gpu` argument of the emulation ops: the device limits of `name`, then the kernel's."""
    k = dict(WORST_KERNEL, **kernel)
    return [GPUS[name][f] for f in DEVICE_FIELDS] + [k[f] for f in KERNEL_FIELDS]


def launch(threads=0, blocks=0, tile=(0, 0), memory=-1):
    """A forced launch (0 / -1: left to the op's selection). memory: 0 shared, 1 global."""
    return [threads, blocks, tile[0], tile[1], memory]


LAST_LAUNCH_FIELDS = (
    "blocks",
    "threads",
    "shared_bytes",
    "scratch_bytes",
    "tile_h",
    "tile_w",
    "barriers",
    "variant",
    # shared-memory accesses of the whole launch (every block and thread): element loads and
    # stores, their bytes, and the barriers met
    "shared_loads",
    "shared_stores",
    "shared_load_bytes",
    "shared_store_bytes",
    "all_barriers",
    # the 128-byte wavefronts those loads and stores take on a GPU's shared memory (bank
    # conflicts counted; csrc/testing/emulator.h, WarpAccesses)
    "shared_load_wavefronts",
    "shared_store_wavefronts",
    # what they would take free of bank conflicts (loads and stores; one per phase of up to 32
    # distinct words)
    "shared_conflict_free_wavefronts",
)


def last_launch():
    """The last emulated launch, as a dict."""
    return dict(zip(LAST_LAUNCH_FIELDS, torch.ops.gscnn_testing.last_launch()))


def last_launch_passes():
    """The shared-memory wavefronts of the last emulated launch per pass site (one
    for_each_thread call of the program: a phase), in the order the sites first ran:
    [(site, wavefronts, conflict-free wavefronts)], site being the pass's lambda's ordinal in
    the program's source (from 1)."""
    flat = torch.ops.gscnn_testing.last_launch_passes()
    return [tuple(flat[i : i + 3]) for i in range(0, len(flat), 3)]


_loaded = False


def load():
    """Builds (once; ninja rebuilds only what changed) and loads the test extension."""
    global _loaded
    if _loaded:
        return
    from torch.utils.cpp_extension import load as load_extension

    import gscnn_ops  # noqa: F401  (the ops' own library first)

    build = os.path.join(ROOT, "build", "testing")
    os.makedirs(build, exist_ok=True)
    load_extension(
        name="gscnn_ops_testing",
        sources=sorted(glob.glob(os.path.join(ROOT, "csrc", "testing", "*.cpp"))),
        extra_include_paths=[os.path.join(ROOT, "csrc")],
        extra_cflags=["-O2"],
        build_directory=build,
        is_python_module=False,
        verbose=os.environ.get("GSCNN_TESTING_VERBOSE") == "1",
    )
    _loaded = True
