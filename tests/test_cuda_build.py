"""Portable CUDA builds: the architecture lists, what a build holds (machine code and PTX, read
from the library with cuobjdump), what `gscnn info` says about each GPU, and that the shipped
library registers no test-only op."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import gscnn_ops
from gscnn_ops import _cuda_archs

EXPECT_CUDA = os.environ.get("GSCNN_EXPECT_CUDA_KERNELS") == "1"


def test_default_list_covers_every_supported_generation_with_ptx_for_the_newest():
    targets = _cuda_archs.nvcc_targets(_cuda_archs.DEFAULT_ARCH_LIST)
    assert targets == [
        "sm_75",
        "sm_80",
        "sm_86",
        "sm_89",
        "sm_90",
        "sm_100",
        "sm_120",
        "compute_120",
    ]
    for cap, how in [
        ((7, 5), "sass"),
        ((8, 0), "sass"),
        ((8, 7), "sass"),
        ((8, 9), "sass"),
        ((9, 0), "sass"),
        ((10, 0), "sass"),
        ((10, 3), "sass"),
        ((12, 1), "sass"),
        ((13, 0), "ptx"),
        ((11, 0), None),
        ((7, 0), None),
    ]:
        assert _cuda_archs.coverage(_cuda_archs.DEFAULT_ARCH_LIST, cap) == how, cap


@pytest.mark.parametrize(
    "arch_list,cap,how",
    [
        ("9.0", (9, 0), "sass"),
        ("9.0", (8, 0), None),
        ("9.0", (10, 0), None),  # CI without PTX
        ("9.0+PTX", (10, 0), "ptx"),
        ("9.0+PTX", (12, 0), "ptx"),
        ("9.0+PTX", (8, 6), None),
        ("8.0 8.6", (8, 9), "sass"),
        ("9.0a", (9, 0), "sass"),
        ("9.0a+PTX", (10, 0), None),
        ("", (9, 0), None),
    ],
)
def test_coverage(arch_list, cap, how):
    assert _cuda_archs.coverage(arch_list, cap) == how


def test_bad_lists_are_errors():
    with pytest.raises(ValueError, match="cannot read 'Hopper'"):
        _cuda_archs.parse("8.0;Hopper")
    assert _cuda_archs.with_ptx_for_newest([(9, 0), (8, 0), (9, 0)]) == "8.0;9.0+PTX"


def test_shipped_library_has_no_test_only_ops():
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("gscnn_ops::")]
    assert sorted(names) == sorted(
        f"gscnn_ops::{op}"
        for op in [
            "gated_conv2d",
            "gated_conv2d_mlp",
            "gated_conv2d_backward",
            "edge_targets",
            "boundary_fscore_counts",
            "boundary_potential",
            "boundary_potential_backward",
            "dual_task_loss",
            "dual_task_loss_backward",
            "_raise_pending_label_errors",
            "_cpu_isa",
        ]
    )


def cuobjdump():
    import triton

    exe = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return exe if os.path.isfile(exe) else shutil.which("cuobjdump")


def library_path():
    return gscnn_ops._C.__file__


@pytest.mark.skipif(not gscnn_ops.has_cuda_kernels(), reason="built without CUDA kernels")
def test_build_holds_machine_code_and_ptx_as_listed():
    exe = cuobjdump()
    if exe is None:
        if EXPECT_CUDA:
            pytest.fail("cuobjdump not found (triton's copy nor on PATH)")
        pytest.skip("cuobjdump not found")
    info = gscnn_ops.build_info()
    targets = info["cuda_targets"]
    elf = subprocess.run(
        [exe, "--list-elf", library_path()], capture_output=True, text=True, check=True
    ).stdout
    ptx = subprocess.run(
        [exe, "--list-ptx", library_path()], capture_output=True, text=True, check=True
    ).stdout
    for target in targets:
        kind, arch = target.split("_")
        listing = elf if kind == "sm" else ptx
        assert f".sm_{arch}." in listing, f"{target} missing from the library:\n{listing}"
    if EXPECT_CUDA:  # CI's forced build: one architecture, with its PTX
        assert any(t.startswith("compute_") for t in targets), targets
        assert ".sm_90." in ptx


def test_gscnn_info_reports_architectures_and_gpus():
    out = subprocess.run(
        [sys.executable, "-m", "gscnn_ops", "info"], capture_output=True, text=True, check=True
    ).stdout
    info = json.loads(out)
    assert info["cuda_kernels_registered"] == gscnn_ops.has_cuda_kernels()
    if gscnn_ops.has_cuda_kernels():
        assert info["cuda_targets"] == _cuda_archs.nvcc_targets(info["cuda_arch_list"])
    assert len(info["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    for gpu in info["gpus"]:
        assert gpu["runs"].startswith("yes")  # the GPU the tests run on is covered
