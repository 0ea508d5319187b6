"""The CMake build (CMakeLists.txt): libgscnn_ops.so builds, loads with torch.ops.load_library
without the Python package, and computes the Gated Convolutional Layer.

The library is loaded in a subprocess, never here: this pytest process may already hold the
package's own gscnn_ops._C, and a second TORCH_LIBRARY(gscnn_ops) registration aborts the process.

Environment:
  GSCNN_CMAKE_BUILD_DIR  a build folder. If it already holds libgscnn_ops.so, that library is
                         tested as is (no cmake needed here); otherwise the project is configured
                         and built into it. Default: build/cmake-test in the checkout, reused
                         (incrementally rebuilt) from run to run.
  GSCNN_CMAKE_ARGS       extra configure arguments, e.g. "-DGSCNN_WITH_CUDA=ON".
  CMAKE                  the cmake executable to use (>= 3.26).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import missing_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB_NAME = "libgscnn_ops.so"
MIN_CMAKE = (3, 26)


def _cmake_version(exe):
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _find_cmake():
    """A cmake >= 3.26: $CMAKE, the pip `cmake` package, then every cmake on PATH."""
    candidates = [os.environ.get("CMAKE")]
    try:
        import cmake  # the pip package; its bin/ holds a recent cmake

        candidates.append(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))
    except ImportError:
        pass
    for d in os.environ.get("PATH", "").split(os.pathsep):
        candidates.append(os.path.join(d, "cmake"))
    seen = []
    for exe in candidates:
        if not exe or not os.path.isfile(exe) or not os.access(exe, os.X_OK):
            continue
        version = _cmake_version(exe)
        seen.append(f"{exe} ({'.'.join(map(str, version)) if version else '?'})")
        if version and version >= MIN_CMAKE:
            return exe, seen
    return None, seen


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        pytest.fail(
            f"command failed ({proc.returncode}): {shlex.join(cmd)}\n"
            f"--- stdout (tail) ---\n{proc.stdout[-6000:]}\n"
            f"--- stderr (tail) ---\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def cmake_library(tmp_path_factory):
    """Path of a libgscnn_ops.so built with CMake (prebuilt, or built now)."""
    build_dir = os.environ.get("GSCNN_CMAKE_BUILD_DIR")
    if build_dir and os.path.isfile(os.path.join(build_dir, LIB_NAME)):
        return os.path.join(build_dir, LIB_NAME)
    cmake, seen = _find_cmake()
    if cmake is None:
        missing_tool(
            "needs cmake >= 3.26 (pip install 'cmake>=3.26'); found: " + (", ".join(seen) or "none")
        )
    import torch  # only for its CMake prefix; nothing of gscnn_ops is loaded here

    # By default a folder of the checkout, reused between runs: CMake and ninja then rebuild only
    # what changed (a full build takes about a minute on 2 cores).
    build_dir = build_dir or os.path.join(ROOT, "build", "cmake-test")
    configure = [
        cmake,
        "-S",
        ROOT,
        "-B",
        build_dir,
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
    ]
    ninja = shutil.which("ninja")
    if ninja and not os.path.isfile(os.path.join(build_dir, "CMakeCache.txt")):
        configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    configure += shlex.split(os.environ.get("GSCNN_CMAKE_ARGS", ""))
    t0 = time.perf_counter()
    _run(configure)
    t1 = time.perf_counter()
    _run([cmake, "--build", build_dir, "--parallel", str(os.cpu_count() or 2)])
    t2 = time.perf_counter()
    print(f"\nCMake configure {t1 - t0:.1f} s, build {t2 - t1:.1f} s ({build_dir})")
    lib = os.path.join(build_dir, LIB_NAME)
    assert os.path.isfile(lib), f"the build did not produce {lib}"
    return lib


# Runs in a fresh interpreter with a temporary working directory, so that neither the repository's
# gscnn_ops package nor its _C can be imported, even implicitly.
_CHECK = textwrap.dedent(
    """
    import sys
    import torch
    import torch.nn.functional as F

    torch.ops.load_library(sys.argv[1])
    ops = torch.ops.gscnn_ops
    assert "gscnn_ops" not in sys.modules, "the gscnn_ops package was imported"
    for name in ("gated_conv2d", "gated_conv2d_mlp", "gated_conv2d_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key("gscnn_ops::" + name, "CPU"), name
    print("CUDA kernels:", torch._C._dispatch_has_kernel_for_dispatch_key(
        "gscnn_ops::gated_conv2d", "CUDA"))

    torch.manual_seed(0)
    N, C, Cr, H, W, Cout = 2, 3, 2, 5, 7, 4
    t = lambda *shape: torch.randn(*shape, dtype=torch.float64)
    s, r = t(N, C, H, W), t(N, Cr, H, W)
    gate_weight, gate_bias, weight, bias = t(1, C + Cr, 1, 1), t(1), t(Cout, C, 1, 1), t(Cout)

    def formula(s, r, gate_weight, gate_bias, weight, bias):
        alpha = torch.sigmoid(F.conv2d(torch.cat([s, r], 1), gate_weight, gate_bias))
        return F.conv2d(s * alpha + s, weight, bias), alpha

    for b in (bias, None):
        out, alpha = ops.gated_conv2d(s, r, gate_weight, gate_bias, weight, b)
        ref_out, ref_alpha = formula(s, r, gate_weight, gate_bias, weight, b)
        assert out.shape == (N, Cout, H, W), out.shape
        assert alpha.shape == (N, 1, H, W), alpha.shape
        torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(alpha, ref_alpha, rtol=1e-10, atol=1e-10)
        print("forward, bias", "None" if b is None else "given", "max |err|:",
              (out - ref_out).abs().max().item())

    # The fused backward against autograd through the same formula.
    inputs = [x.clone().requires_grad_() for x in (s, r, gate_weight, gate_bias, weight, bias)]
    grad_out, grad_alpha = t(N, Cout, H, W), t(N, 1, H, W)
    ref_out, ref_alpha = formula(*inputs)
    ref_grads = torch.autograd.grad((ref_out, ref_alpha), inputs, (grad_out, grad_alpha))
    grads = ops.gated_conv2d_backward(grad_out, grad_alpha, s, r, gate_weight, gate_bias, weight)
    names = ("s", "r", "gate_weight", "gate_bias", "weight", "bias")
    for name, g, ref in zip(names, grads, ref_grads):
        torch.testing.assert_close(g, ref, rtol=1e-9, atol=1e-9, msg=lambda m: f"grad_{name}: {m}")
    print("backward OK")
    """
)


@pytest.mark.slow
def test_cmake_library_loads_and_computes(cmake_library, tmp_path):
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK, cmake_library],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(proc.stdout)
    assert proc.returncode == 0, (
        f"subprocess failed with return code {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    assert "backward OK" in proc.stdout
