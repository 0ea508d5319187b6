"""The few device-only code paths of the library (csrc/common/device_intrinsics.h): each CUDA
intrinsic sits next to a host model used by the CPU kernels and the emulator, and every model is
checked here against the semantics NVIDIA documents for the intrinsic (edge cases included)."""

import math
import random

import numpy as np
import pytest
import torch


def as_int64(words):
    return torch.tensor([w - 2**64 if w >= 2**63 else w for w in words], dtype=torch.int64)


WORDS = [0, 1, 2, 3, 2**63, 2**64 - 1, 2**40 + 7, 0x8000000000000001, 0x00F0000000000000]
WORDS += [random.Random(0).getrandbits(64) for _ in range(200)]


def test_ffs_clz_popcount_models(emu):
    ffs, clz, pop = torch.ops.gscnn_testing.intrinsics(as_int64(WORDS))
    for w, f, c, p in zip(WORDS, ffs.tolist(), clz.tolist(), pop.tolist()):
        # __ffsll: position (1-based) of the least significant set bit, 0 for 0.
        assert f == ((w & -w).bit_length() if w else 0), hex(w)
        # __clzll: leading zeros, 64 for 0.
        assert c == 64 - w.bit_length(), hex(w)
        # __popcll: set bits.
        assert p == bin(w).count("1"), hex(w)


def test_exp_model_within_two_ulp_in_float(emu):
    # CUDA's expf is documented at 2 ulp; the host model (a vectorisable polynomial) must be as
    # good on the sigmoid's domain [-87, 0], and about 0 below it (absolute error < 1e-37).
    g = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            -torch.logspace(-8, math.log10(87.0), 20001),
            -87 * torch.rand(20000, generator=g),
            torch.tensor([0.0, -1e-30, -86.99]),
        ]
    ).float()
    got = torch.ops.gscnn_testing.exp_nonpositive(x).double()
    want = torch.exp(x.double())  # of the float argument the model sees
    ulp = torch.from_numpy(np.spacing(want.float().numpy())).double()
    inside = x >= -87
    assert ((got - want).abs() <= 2 * ulp)[inside].all()
    # Far below too: a clamp computed as x - (x + 87) once gave exp(-1e30) = 1 (x + 87 == x in
    # float), so sigmoid(1e30) = 0.5 in the CPU kernels.
    below = torch.ops.gscnn_testing.exp_nonpositive(
        torch.tensor([-87.5, -200.0, -1e10, -1e30, -float("inf")])
    )
    assert (below.abs() < 1e-37).all()
    x64 = -torch.rand(1000, dtype=torch.float64, generator=g) * 50
    torch.testing.assert_close(
        torch.ops.gscnn_testing.exp_nonpositive(x64), torch.exp(x64), rtol=1e-15, atol=0
    )


@pytest.mark.parametrize("threads", [1, 4])
def test_atomic_min_model(emu, threads):
    values = torch.randint(0, 2**62, (20000,), generator=torch.Generator().manual_seed(threads))
    assert torch.ops.gscnn_testing.atomic_min(values, threads) == values.min().item()
    # unsigned order: a "negative" int64 is a large unsigned word
    assert torch.ops.gscnn_testing.atomic_min(torch.tensor([-1, 5, -7]), threads) == 5
