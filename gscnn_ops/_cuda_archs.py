"""CUDA architecture lists: what a build without a GPU compiles for, how nvcc names the result,
and whether a given GPU can run it.

Plain Python without imports of torch or of the package, so that setup.py can load this file
before anything is built (and the tests can check it on machines without a GPU).

A list is what TORCH_CUDA_ARCH_LIST takes: compute capabilities separated by ';' or spaces, each
optionally followed by '+PTX', e.g. "8.0;9.0+PTX". For each entry nvcc writes machine code (SASS,
sm_XY); '+PTX' adds the PTX of that architecture (compute_XY), which the driver compiles at first
use for any GPU of an equal or higher compute capability. Machine code runs on GPUs of the same
major version and an equal or higher minor one ('a'/'f' variants such as 9.0a only on their own
family, which we never build).
"""

import re

# The data-centre and desktop GPUs CUDA 13 supports: T4/RTX 20 (7.5), A100 (8.0), A10/A40/RTX 30
# (8.6), L4/L40S/RTX 40 (8.9), H100/H200 (9.0), B200/GB200 (10.0), RTX 50 / RTX PRO 6000 (12.0),
# with the PTX of the newest so that later GPUs JIT-compile it. (Jetson Orin 8.7 and Thor 11.0
# are left out; add them to TORCH_CUDA_ARCH_LIST to build for them.)
DEFAULT_ARCH_LIST = "7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"

_ENTRY = re.compile(r"^(\d+)\.(\d+)([af]?)(\+PTX)?$")


def parse(arch_list):
    """[(major, minor, variant, ptx)] of a TORCH_CUDA_ARCH_LIST string; ValueError if malformed."""
    entries = []
    for token in re.split(r"[;\s]+", (arch_list or "").strip()):
        if not token:
            continue
        m = _ENTRY.match(token)
        if m is None:
            raise ValueError(
                f"TORCH_CUDA_ARCH_LIST: cannot read '{token}' (expected entries such "
                f"as 8.6, 9.0 or 12.0+PTX, separated by ';')"
            )
        entries.append((int(m.group(1)), int(m.group(2)), m.group(3), bool(m.group(4))))
    return entries


def nvcc_targets(arch_list):
    """What nvcc is asked to write, e.g. ['sm_80', 'sm_90', 'compute_90'] for '8.0;9.0+PTX'."""
    out = []
    for major, minor, variant, ptx in parse(arch_list):
        out.append(f"sm_{major}{minor}{variant}")
        if ptx:
            out.append(f"compute_{major}{minor}{variant}")
    return out


def coverage(arch_list, capability):
    """How a GPU of compute capability (major, minor) runs a build for arch_list: 'sass' (machine
    code for it), 'ptx' (PTX that the driver JIT-compiles at first use) or None (it cannot)."""
    major, minor = capability
    entries = parse(arch_list)
    for m, n, variant, _ in entries:
        if m == major and (n == minor if variant else n <= minor):
            return "sass"
    for m, n, variant, ptx in entries:
        if ptx and not variant and (m, n) <= (major, minor):
            return "ptx"
    return None


def with_ptx_for_newest(capabilities):
    """The list for the GPUs of this machine: their capabilities, PTX for the newest."""
    caps = sorted(set(capabilities))
    return ";".join(f"{m}.{n}" for m, n in caps) + "+PTX" if caps else ""
