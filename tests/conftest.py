"""What every test file may use: the tolerances and comparisons, fixtures (thread count, the
emulated GPU), the CUDA skip and the independent oracles. gated_conv2d's inputs and runner are in
gated_conv2d_cases.py; the checks every op gets are in op_checks.py."""

import os

import pytest
import torch

import gscnn_ops

# float64 and float32 results are compared elementwise with these (absolute and relative) bounds.
# The kernels accumulate in the input precision for float64 and in float32 for float32, in a
# different order than the reference (cat + F.conv2d), so only rounding noise remains.
TIGHT_TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
}

# Low precision. The kernels read float16/bfloat16 values, accumulate in float32 and round each
# result to the storage type exactly once. Compared with the float64 reference computed from the
# same (already rounded) inputs, an element is therefore off by at most half an ulp of itself
# plus float32 accumulation noise: we allow one machine epsilon of the dtype relative to the
# element (rtol) plus one epsilon of the largest magnitude of the tensor (atol, for elements that
# are near zero because of cancellation in a sum of larger terms).
LOW_PRECISION_EPS = {
    torch.float16: 2.0**-10,  # 9.8e-4
    torch.bfloat16: 2.0**-7,  # 7.8e-3
}


def assert_all_close(actual, expected, names, **tol):
    """assert_close on parallel lists (None must match None), naming the failing entry."""
    assert len(actual) == len(expected) == len(names)
    for a, e, name in zip(actual, expected, names):
        if e is None:
            assert a is None, f"{name}: expected None, got a tensor"
            continue
        assert a is not None, f"{name}: got None"
        torch.testing.assert_close(a, e, msg=lambda m, name=name: f"{name}: {m}", **tol)


def assert_low_precision_close(actual, expected64, dtype, name=""):
    """actual (float16/bfloat16) against a float64 reference, with LOW_PRECISION_EPS."""
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype}, expected {dtype}"
    eps = LOW_PRECISION_EPS[dtype]
    scale = expected64.abs().max().item() if expected64.numel() else 0.0
    torch.testing.assert_close(
        actual.double(), expected64, rtol=eps, atol=eps * scale, msg=lambda m: f"{name}: {m}"
    )


@pytest.fixture
def restore_num_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def cuda_skip_reason():
    """Why the CUDA tests cannot run here, or None when they can. With
    GSCNN_EXPECT_CUDA_KERNELS=1 a GPU build without CUDA kernels is not a reason to skip."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if not gscnn_ops.has_cuda_kernels() and os.environ.get("GSCNN_EXPECT_CUDA_KERNELS") != "1":
        return "gscnn_ops was built without its CUDA kernels"
    return None


requires_cuda = pytest.mark.skipif(cuda_skip_reason() is not None, reason=str(cuda_skip_reason()))


# CI (.ci/run) sets GSCNN_REQUIRE_ORACLES=1: there a missing independent implementation that a
# test compares against (OpenCV's Canny, torchvision's ResNets, cmake for the CMake build) fails
# the test instead of silently skipping the only check of that code.
REQUIRE_ORACLES = os.environ.get("GSCNN_REQUIRE_ORACLES") == "1"


def oracle(module_name):
    """The module, or a skip (a failure under GSCNN_REQUIRE_ORACLES=1) when it is missing."""
    if REQUIRE_ORACLES:
        import importlib

        try:
            return importlib.import_module(module_name)
        except ImportError as e:
            pytest.fail(
                f"the test oracle '{module_name}' is missing ({e}); it is in the test "
                "extras: pip install -e '.[test]'"
            )
    return pytest.importorskip(module_name)


def missing_tool(reason):
    """Skip, or fail under GSCNN_REQUIRE_ORACLES=1."""
    if REQUIRE_ORACLES:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def emu():
    """The emulated GPU (tests/emulation.py): builds the test extension once per session."""
    import emulation

    emulation.load()
    return emulation
