"""Shared machinery of the gscnn_ops benchmarks (pytest-benchmark).

Run the full suite (one JSON, every implementation in the same run, so ratios are comparable):

    python -m pytest benchmarks/ --benchmark-only --benchmark-json=out.json
    python benchmarks/summarize.py out.json

Smoke-run it as a test (each case once, at small shapes, outputs checked against the reference):

    python -m pytest benchmarks/ -q --benchmark-disable

What every benchmark here does, and why:

* Timing: ``benchmark.pedantic`` with an explicit warm-up *outside* the timed rounds, so one-off
  costs (torch.compile's compilation, oneDNN primitive creation, first-touch of the weights) are
  not timed. The compiled reference is compiled once per process (session fixture) and each of its
  graphs (per shape, dtype, grad mode) is compiled and warmed up before its timed rounds.
* CUDA: the timed callable ends with ``torch.cuda.synchronize()``, so each round measures the
  kernels' execution, not only their asynchronous launch (launch + sync overhead, a few µs, is
  included and is the same for every implementation).
* CPU: the development machines are shared and noisy (see GSCNN_BENCH_THREADS below): quote
  medians and the ratios between implementations of one run, not lone absolute numbers. Each
  result records how many cores other processes used during its timing (others_cpu_cores) and
  its minor page faults per call (minflt_per_call). Every call allocates its outputs fresh with
  the default allocator, for all implementations alike: glibc hands blocks above its mmap
  threshold (dynamic, at most 32 MiB) back to the OS when freed, so such tensors page-fault on
  every call. That is part of what a user's call costs too, and it is why implementations that
  allocate more temporaries lose more at C=32 (33.5 MB per NCHW tensor here).
* Peak memory of one call (``extra_info["peak_mem_bytes"]``), measured outside the timed rounds:
  - CUDA: ``max_memory_allocated() - memory_allocated()`` around one synchronised call after
    ``reset_peak_memory_stats()``: bytes the call allocated beyond what was live before it,
    including its outputs (and, for forward+backward, the gradients it returns).
  - CPU: there is no CPU ``max_memory_allocated``. We run one call under
    ``torch.profiler.profile(profile_memory=True)``, which records every allocation and free made
    through c10's CPU allocator (eager ops, our extension's ``at::empty``, Inductor's
    ``empty_strided_cpu`` buffers, oneDNN scratch buffers taken from the ATen allocator) with its
    size and timestamp. Sorting those events by time and taking the maximum of the running sum
    gives the same quantity as on CUDA: the peak of bytes live beyond the call's starting point.
    Checked by hand: for the fused forward it equals exactly bytes(out) + bytes(alpha); for the
    eager forward it shows the cat, conv and s*alpha+s temporaries. Not seen by this method:
    memory a library takes with its own malloc (none of the paths here do this for sizable
    buffers, as far as we checked), and allocator overhead/fragmentation.
"""

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch

try:
    import resource
except ImportError:  # not on Windows
    resource = None

import gscnn_ops

# Graphs compiled in one process: 3 channel counts x 2 grad modes per (device, dtype), 3 such
# (device, dtype) pairs. The default recompile limit (8 per code object) would make Dynamo fall
# back to eager for the later cases, silently timing eager under the "compiled" label.
# Raise it, and make hitting it an error rather than a silent fallback.
torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):
    torch._dynamo.config.fail_on_recompile_limit_hit = True

# CPU threads for the whole run (default: torch's default, one per core). On a shared machine
# a busy core stalls every parallel region of a 2-thread run at its barrier; measured here under
# load, eager forward at C=8 took ~90 ms with 2 threads and ~4 ms with 1. GSCNN_BENCH_THREADS=1
# gives timings that survive such contention; the count is recorded in every result.
if os.environ.get("GSCNN_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["GSCNN_BENCH_THREADS"]))

# Bandwidth roofline for CUDA (H100 device-to-device copy, bytes read + written; see
# /work/shared/notes/toolchain.md). H200 is about 4.3e12; override with GSCNN_BENCH_HBM_BPS.
HBM_BYTES_PER_S = float(os.environ.get("GSCNN_BENCH_HBM_BPS", "3.0e12"))


@dataclass(frozen=True)
class Setting:
    """Sizes and timing budget for one device, for the real run or the smoke run."""

    n: int
    h: int
    w: int
    seconds_per_case: float  # target timed seconds per benchmark (rounds follow from it)
    min_rounds: int
    max_rounds: int
    warmup_rounds: int


# Real runs: the shapes of the task. CPU: 18 cases x ~2 s of timed rounds, plus warm-up,
# reference checks and (cold-cache) compilation: ~40 s on the 2-core development machine when it
# is quiet, ~60 s under contention. Environment knobs: GSCNN_BENCH_CPU_S / GSCNN_BENCH_CUDA_S
# (timed seconds per case), GSCNN_BENCH_THREADS, GSCNN_BENCH_HBM_BPS.
_CPU_S = float(os.environ.get("GSCNN_BENCH_CPU_S", "2.0"))
_CUDA_S = float(os.environ.get("GSCNN_BENCH_CUDA_S", "1.0"))
_REAL = {
    "cpu": Setting(
        n=2, h=256, w=512, seconds_per_case=_CPU_S, min_rounds=7, max_rounds=60, warmup_rounds=2
    ),
    "cuda": Setting(
        n=8, h=800, w=800, seconds_per_case=_CUDA_S, min_rounds=20, max_rounds=400, warmup_rounds=5
    ),
}
# --benchmark-disable (smoke test): each case runs once, so keep the tensors small.
_SMOKE = {
    "cpu": Setting(
        n=1, h=16, w=24, seconds_per_case=0.0, min_rounds=1, max_rounds=1, warmup_rounds=0
    ),
    "cuda": Setting(
        n=1, h=32, w=48, seconds_per_case=0.0, min_rounds=1, max_rounds=1, warmup_rounds=0
    ),
}


def peak_memory_bytes(fn: Callable[[], object], device: str) -> Optional[int]:
    """Peak bytes allocated by one call of fn beyond what was live before it (see module doc)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        result = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del result
        return int(peak)
    if device == "cpu":
        return _cpu_peak_memory_bytes(fn)
    return None


def _cpu_peak_memory_bytes(fn):
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
    except ImportError:  # pragma: no cover - profiler internals moved
        return None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    del result
    events = []

    def walk(node):
        if node.tag == _EventType.Allocation and str(node.extra_fields.device) == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)

    try:
        for root in prof.profiler.kineto_results.experimental_event_tree():
            walk(root)
    except AttributeError:  # pragma: no cover - profiler internals moved
        return None
    if not events:
        return None
    events.sort(key=lambda e: e[0])
    live = peak = 0
    for _, size in events:
        live += size
        peak = max(peak, live)
    return int(peak)


# --- timing shared by every benchmark file -----------------------------------------------------


def _cpu_counters():
    """(busy seconds of all CPUs, CPU seconds of this process, wall seconds); None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy, own.user + own.system, time.monotonic()


def _others_cpu_cores(before, after):
    """Average number of cores used by everything but this process between two counters."""
    if before is None or after is None or after[2] <= before[2]:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / (after[2] - before[2]))


def _run_timed(benchmark, call, device, *, warmup_rounds, min_rounds, max_rounds, seconds_per_case):
    """Warm-up (which also sets the number of rounds from the fastest call), then the timed
    rounds of ``call`` with ``benchmark.pedantic``. Records in extra_info: rounds, torch_threads,
    others_cpu_cores (the machines are shared: cores other processes used while timing;
    summarize.py flags groups where it is not ~0) and, on CPU, minflt_per_call (minor page faults
    per call: fresh memory the allocator had to map, which can dominate a memory-bound op and
    makes some medians bimodal across runs). Results are dropped inside each round, so a round's
    outputs are never alive during the next one. Returns the number of rounds."""
    info = benchmark.extra_info
    rounds = 1
    if not benchmark.disabled:
        per_call = float("inf")
        for _ in range(max(1, warmup_rounds)):
            t0 = time.perf_counter()
            call()
            per_call = min(per_call, time.perf_counter() - t0)
        rounds = int(min(max_rounds, max(min_rounds, math.ceil(seconds_per_case / per_call))))
    info["rounds"] = rounds

    def timed():
        call()

    cpu_before = _cpu_counters()
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else None
    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=0)
    info["torch_threads"] = torch.get_num_threads()
    if not benchmark.disabled:
        info["others_cpu_cores"] = _others_cpu_cores(cpu_before, _cpu_counters())
        if faults_before is not None and device == "cpu":
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
            info["minflt_per_call"] = faults / rounds
    return rounds


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smoke(request):
    """True under --benchmark-disable: run each case once at small sizes, as a test."""
    return bool(request.config.getoption("benchmark_disable", default=False))


@pytest.fixture(scope="session")
def settings(smoke):
    return _SMOKE if smoke else _REAL


@pytest.fixture(scope="session")
def compiled_gated_conv2d():
    """torch.compile of the reference, made once per process. dynamic=False: one specialised
    graph per shape/dtype/grad mode (what a user with fixed-size inputs gets); default Inductor
    mode. Each graph compiles on its first call, which the benchmarks make before timing."""
    return torch.compile(gscnn_ops.reference.gated_conv2d, dynamic=False)


@pytest.fixture(scope="session")
def hbm_bytes_per_s():
    return HBM_BYTES_PER_S


@pytest.fixture(scope="session")
def run_timed():
    """run_timed(benchmark, call, device, warmup_rounds=, min_rounds=, max_rounds=,
    seconds_per_case=) -> rounds: see _run_timed."""
    return _run_timed


@pytest.fixture(scope="session")
def peak_memory():
    """peak_memory(fn, device) -> bytes (or None): see peak_memory_bytes."""
    return peak_memory_bytes


@pytest.fixture(scope="session")
def impls(compiled_gated_conv2d):
    return {
        "fused": gscnn_ops.gated_conv2d,
        "eager": gscnn_ops.reference.gated_conv2d,
        "compiled": compiled_gated_conv2d,
    }


def pytest_report_header(config):
    lines = [
        f"gscnn_ops benchmarks: torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"cuda available: {torch.cuda.is_available()}, "
        f"gscnn_ops CUDA kernels: {gscnn_ops.has_cuda_kernels()}"
    ]
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name()}; roofline {HBM_BYTES_PER_S:.3g} B/s")
    return lines
