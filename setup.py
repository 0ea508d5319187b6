"""Build of gscnn_ops._C: the C++ (CPU) kernels always, the CUDA kernels when CUDA can be built.

Environment switches:
  FORCE_CUDA=1          build the CUDA kernels even without a GPU (CI, wheels, Docker); needs nvcc.
  FORCE_CUDA=0          never build the CUDA kernels.
  TORCH_CUDA_ARCH_LIST  GPU architectures, e.g. "8.0;9.0+PTX" (honoured by torch's cpp_extension).
                        Default without a GPU: every data-centre and desktop architecture CUDA 13
                        supports, 7.5 ... 12.0, with PTX for the newest so that later GPUs
                        JIT-compile it (gscnn_ops/_cuda_archs.py); with GPUs: theirs, with PTX.
  MAX_JOBS              parallel compile jobs (honoured by ninja through cpp_extension).
  CUDA_HOME             the CUDA toolkit root; found from `nvcc` on PATH when unset.
  GSCNN_DEBUG=1         -O0 -g builds.
"""

import glob
import importlib.util
import json
import os
import shutil
import subprocess

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _load_cuda_archs():
    # The package's own module, loaded by path: importing gscnn_ops would load the extension that
    # this script is about to build.
    spec = importlib.util.spec_from_file_location(
        "_gscnn_cuda_archs", os.path.join(ROOT, "gscnn_ops", "_cuda_archs.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cuda_archs = _load_cuda_archs()


def _toolkit_root_from_nvcc(nvcc):
    """The toolkit root for an nvcc on PATH, seeing through one-line wrapper scripts."""
    real = os.path.realpath(nvcc)
    try:
        with open(real, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(b"#!"):  # a wrapper script: look for the real compiler it execs
        for token in head.decode(errors="ignore").split():
            if token.endswith("/bin/nvcc") and os.path.isfile(token) and token != real:
                return os.path.dirname(os.path.dirname(os.path.realpath(token)))
        return None
    return os.path.dirname(os.path.dirname(real))


def _find_cuda_home():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = _toolkit_root_from_nvcc(nvcc)
        if root and os.path.isdir(os.path.join(root, "include")):
            return root
    for candidate in sorted(glob.glob("/usr/local/cuda*"), reverse=True):
        if os.path.isfile(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    return None


# cpp_extension reads CUDA_HOME when it is imported: settle it first.
_cuda_home = _find_cuda_home()
if _cuda_home:
    os.environ["CUDA_HOME"] = _cuda_home

import torch  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _want_cuda():
    force = os.environ.get("FORCE_CUDA", "").strip().lower()
    if force in ("0", "false", "no", "off"):
        return False
    forced = force in ("1", "true", "yes", "on")
    usable = torch.version.cuda is not None and _cuda_home is not None
    if forced and not usable:
        raise RuntimeError(
            "FORCE_CUDA=1 but CUDA cannot be built: "
            + ("this torch is a CPU-only build" if torch.version.cuda is None else "")
            + ("no CUDA toolkit (nvcc) was found; set CUDA_HOME" if _cuda_home is None else "")
        )
    want = forced or (usable and torch.cuda.is_available())
    if want and not os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip():
        # Set it ourselves (cpp_extension would guess only from the GPUs here, without PTX, and
        # crash without one), so that the build info records exactly what nvcc built.
        if torch.cuda.is_available():
            caps = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
            os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_archs.with_ptx_for_newest(caps)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_archs.DEFAULT_ARCH_LIST
    if want:
        cuda_archs.parse(os.environ["TORCH_CUDA_ARCH_LIST"])  # a clear error for a bad list
    return want


def _extension():
    debug = os.environ.get("GSCNN_DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # -fno-math-errno: our code never reads errno, and without it GCC keeps a scalar libm call
    # per sqrt / exp to set errno, which blocks the vectorisation of the CPU kernels' loops.
    # -fno-trapping-math: our code never unmasks or reads the floating-point exception flags,
    # and without it GCC will not turn a comparison or division under a select into branch-free
    # vector code ("control flow in loop"): the loss's masks and zeta's adjoint stayed scalar.
    # (Neither changes a value: errno and the exception flags only.)
    cxx = opt + ["-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-DGSCNN_OPS_PYTHON_MODULE"]
    sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    if _want_cuda():
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        nvcc = opt + ["--expt-relaxed-constexpr", "-lineinfo"]
        # The architectures, for the "no kernel for this GPU" error (cuda/device.cpp), as one
        # preprocessor token: sm_80__sm_90__compute_90.
        targets = "__".join(cuda_archs.nvcc_targets(os.environ["TORCH_CUDA_ARCH_LIST"]))
        return CUDAExtension(
            "gscnn_ops._C",
            sources,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=["-fopenmp"],
            define_macros=[("GSCNN_WITH_CUDA", "1"), ("GSCNN_CUDA_ARCHS", targets)],
        ), True
    return CppExtension(
        "gscnn_ops._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"]
    ), False


EXTENSION, WITH_CUDA = _extension()


class BuildWithInfo(BuildExtension):
    """Builds the extension, then records what it was built against next to it, so that the
    package can explain at import time a torch upgrade or a missing CUDA part."""

    def run(self):
        super().run()
        info = {
            "torch_version": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "with_cuda": WITH_CUDA,
            "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if WITH_CUDA else None,
            "cuda_targets": (
                cuda_archs.nvcc_targets(os.environ["TORCH_CUDA_ARCH_LIST"]) if WITH_CUDA else []
            ),
            "nvcc": _nvcc_version() if WITH_CUDA else None,
        }
        target = os.path.join(
            os.path.dirname(self.get_ext_fullpath("gscnn_ops._C")), "_build_info.json"
        )
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            json.dump(info, f, indent=1)


def _nvcc_version():
    try:
        out = subprocess.run(
            [os.path.join(_cuda_home, "bin", "nvcc"), "--version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.strip().splitlines()[-1]
    except (OSError, subprocess.CalledProcessError, TypeError):
        return None


setup(
    packages=find_packages(include=["gscnn_ops", "gscnn_ops.*"]),
    ext_modules=[EXTENSION],
    cmdclass={"build_ext": BuildWithInfo.with_options(use_ninja=True)},
)
