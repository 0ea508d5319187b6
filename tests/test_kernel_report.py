"""scripts/kernel_report.py, the static report of the CUDA kernels (no GPU needed): it reads the
built library and lists every kernel's resources and loops, and the benchmark launches."""

import os
import subprocess
import sys

import pytest

import gscnn_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "kernel_report.py")


@pytest.mark.skipif(not gscnn_ops.has_cuda_kernels(), reason="built without CUDA kernels")
def test_kernel_report(emu):
    from test_cuda_build import cuobjdump

    if cuobjdump() is None:
        pytest.skip("cuobjdump not found")
    out = subprocess.run(
        [sys.executable, SCRIPT], capture_output=True, text=True, check=True, timeout=600
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
