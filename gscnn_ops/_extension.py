"""Loads the compiled library gscnn_ops._C and explains what went wrong when it cannot.

The usual failures: the extension was built against another torch than the one importing it
(an ABI mismatch shows up as an 'undefined symbol' error), it was never built (a source checkout
without `pip install`), or its CUDA kernels were not compiled although a GPU is there.
"""

import json
import os
import warnings

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
REBUILD = "pip install --no-build-isolation --force-reinstall --no-deps ."


def build_info():
    """What the extension was built against (written by setup.py), or {} when unknown.

    Examples:
        >>> import gscnn_ops
        >>> info = gscnn_ops.build_info()
        >>> "torch_version" in info
        True
    """
    try:
        with open(os.path.join(_HERE, "_build_info.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def load():
    info = build_info()
    built = info.get("torch_version")
    if built and built != torch.__version__:
        raise ImportError(
            f"gscnn_ops was built against torch {built} but torch {torch.__version__} is "
            f"installed; C++ extensions only work with the torch they were compiled for. "
            f"Rebuild it from the source folder with:\n    {REBUILD}"
        )
    try:
        from . import _C  # noqa: F401  (loading it registers the ops)
    except ImportError as e:
        raise ImportError(
            f"gscnn_ops: the compiled extension gscnn_ops._C could not be loaded ({e}). "
            f"If you are running from a source checkout, build it first; if torch was upgraded "
            f"since it was built, rebuild it. From the source folder:\n    {REBUILD}"
        ) from e
    if torch.cuda.is_available() and info and not info.get("with_cuda"):
        warnings.warn(
            "gscnn_ops was built without its CUDA kernels although a GPU is available; its ops "
            "will raise an error on CUDA tensors. Rebuild with CUDA (needs nvcc):\n"
            f"    FORCE_CUDA=1 {REBUILD}",
            stacklevel=3,
        )
    return info


def gpu_coverage(info=None):
    """For each visible GPU: its name, compute capability, and how this build runs on it
    (machine code, PTX compiled by the driver at first use, or not at all)."""
    from . import _cuda_archs

    info = build_info() if info is None else info
    arch_list = info.get("cuda_arch_list") if info.get("with_cuda") else None
    gpus = []
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        cap = torch.cuda.get_device_capability(i)
        how = _cuda_archs.coverage(arch_list, cap) if arch_list else None
        gpus.append(
            {
                "index": i,
                "name": torch.cuda.get_device_name(i),
                "compute_capability": f"{cap[0]}.{cap[1]}",
                "runs": {
                    "sass": "yes, machine code",
                    "ptx": "yes, PTX compiled by the driver at first use (slow first call)",
                    None: (
                        f'no: rebuild with TORCH_CUDA_ARCH_LIST="{cap[0]}.{cap[1]}" '
                        f"FORCE_CUDA=1 {REBUILD}"
                    ),
                }[how],
            }
        )
    return gpus


def has_cuda_kernels():
    """True when the CUDA kernels were compiled in (checkable without a GPU).

    Examples:
        >>> import gscnn_ops
        >>> isinstance(gscnn_ops.has_cuda_kernels(), bool)
        True
    """
    return torch._C._dispatch_has_kernel_for_dispatch_key("gscnn_ops::gated_conv2d", "CUDA")
