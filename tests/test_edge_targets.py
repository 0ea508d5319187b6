"""gscnn_ops.edge_targets: the fused CPU op, the CUDA kernel's own code (emulated on the CPU) and,
with a GPU, the CUDA op, against the plain-PyTorch reference and a brute-force loop written from
the definition:

    edge(n, y, x) = label(n, y, x) != ignore_index and there is (dy, dx) with
                    dy^2 + dx^2 <= radius^2, (y + dy, x + dx) inside the image,
                    label(n, y + dy, x + dx) != ignore_index and != label(n, y, x).
"""

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.library import opcheck

import gscnn_ops
from gscnn_ops import reference

import emulation
from conftest import requires_cuda
from op_checks import OpChecks

ops = torch.ops.gscnn_ops
OP = "gscnn_ops.edge_targets"

RADII = [0, 1, 1.5, 2, 2.9, 5]
SHAPES = [  # N, H, W
    (2, 13, 17),  # odd sizes, a batch
    (1, 1, 1),  # 1x1 image, batch 1
    (1, 1, 9),  # one row
    (1, 8, 1),  # one column
    (3, 5, 4),  # images smaller than the disk at radius 5
    (1, 24, 31),
]
LABEL_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]
# An ignore_index every dtype above can hold, and one per dtype as used in practice.
IGNORE_FOR = {
    torch.uint8: 255,
    torch.int8: -1,
    torch.int16: 255,
    torch.int32: -100,
    torch.int64: 255,
}


def make_labels(N, H, W, num_classes=4, ignore_index=255, dtype=torch.int64, seed=0):
    """A label map with regions (3x3 blocks of one class), isolated pixels of other classes, a
    block of ignored pixels touching the border and scattered ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    cell = 3
    coarse = torch.randint(0, num_classes, (N, H // cell + 1, W // cell + 1), generator=g)
    labels = coarse.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[:, :H, :W].clone()
    speckle = torch.rand(N, H, W, generator=g) < 0.05
    labels[speckle] = torch.randint(0, num_classes, (int(speckle.sum()),), generator=g)
    labels[torch.rand(N, H, W, generator=g) < 0.08] = ignore_index
    labels[:, : H // 3, W - W // 4 :] = ignore_index
    return labels.to(dtype)


def brute_force(labels, radius, ignore_index):
    """The definition, pixel by pixel, in plain Python over a NumPy copy."""
    lab = labels.cpu().numpy().astype(np.int64)  # widening keeps every label distinct
    N, H, W = lab.shape
    out = np.zeros((N, H, W), dtype=bool)
    R = int(min(radius, H + W))
    for n in range(N):
        for y in range(H):
            for x in range(W):
                c = lab[n, y, x]
                if c == ignore_index:
                    continue
                out[n, y, x] = any(
                    (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius
                    and lab[n, yy, xx] != ignore_index
                    and lab[n, yy, xx] != c
                    for yy in range(max(0, y - R), min(H, y + R + 1))
                    for xx in range(max(0, x - R), min(W, x + R + 1))
                )
    return torch.from_numpy(out)


def assert_same(got, want, what=""):
    assert got.dtype == torch.bool, f"{what}: dtype {got.dtype}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got.cpu() != want.cpu()).nonzero().tolist()
    assert not diff, f"{what}: {len(diff)} pixels differ, first (n, y, x): {diff[:5]}"


# --- the op against the definition ---------------------------------------------------------------


@pytest.mark.parametrize("radius", RADII)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference_and_brute_force(shape, radius):
    labels = make_labels(*shape, seed=sum(shape))
    got = gscnn_ops.edge_targets(labels, radius=radius)
    want = brute_force(labels, radius, 255)
    assert_same(reference.edge_targets(labels, radius), want, "reference vs brute force")
    assert_same(got, want, "op vs brute force")
    if shape[1] * shape[2] >= 100:  # the maps are not degenerate: some edges, some interiors
        assert radius < 1 or want.any()
        assert not want.all()


@pytest.mark.parametrize("dtype", LABEL_DTYPES, ids=str)
@pytest.mark.parametrize("radius", [1, 2, 2.9])
def test_label_dtypes(dtype, radius):
    ignore = IGNORE_FOR[dtype]
    labels = make_labels(2, 19, 70, num_classes=5, ignore_index=ignore, dtype=dtype, seed=3)
    got = gscnn_ops.edge_targets(labels, radius, ignore)
    assert_same(got, brute_force(labels, radius, ignore), str(dtype))
    # The same map as int64: the dtype does not matter.
    assert_same(gscnn_ops.edge_targets(labels.long(), radius, ignore), got, "int64 copy")


def test_class_zero_gets_edges():
    # The authors' release gives class 0 (road) no boundary; here every class gets one.
    labels = torch.zeros(1, 6, 10, dtype=torch.int64)
    labels[..., 5:] = 1
    got = gscnn_ops.edge_targets(labels, radius=2)
    want = torch.zeros(1, 6, 10, dtype=torch.bool)
    want[..., 3:7] = True  # columns 3, 4 (class 0) and 5, 6 (class 1): within 2 px of the other
    assert_same(got, want)
    assert got[labels == 0].any()


@pytest.mark.parametrize(
    "radius,count",
    [
        (0.99, 0),
        (1, 5),
        (1.5, 9),
        (math.sqrt(2), 9),
        (2, 13),
        (2.5, 21),
        (2.9, 25),
        (math.sqrt(8), 25),
        (3, 29),
    ],
)
def test_disk_is_exactly_dy2_plus_dx2_at_most_radius2(radius, count):
    # One pixel of class 1 in a field of class 0: the edges are the pixels within `radius` of it
    # (and the pixel itself once anything is within reach).
    labels = torch.zeros(1, 11, 11, dtype=torch.int64)
    labels[0, 5, 5] = 1
    got = gscnn_ops.edge_targets(labels, radius)
    dy = torch.arange(11).view(11, 1) - 5
    dx = torch.arange(11).view(1, 11) - 5
    want = (dy * dy + dx * dx <= radius * radius).unsqueeze(0)
    if count == 0:
        want[:] = False
    assert int(got.sum()) == count
    assert_same(got, want)
    assert_same(emulated_edge_targets(labels, radius, 255, 32, 2), want, "emulated")


def test_ignored_pixels_are_not_edges_and_separate_nothing():
    labels = torch.zeros(1, 7, 12, dtype=torch.int64)
    labels[:, :, 4:7] = 255  # a 3-column ignore band between class 0 and class 1
    labels[:, :, 7:] = 1
    labels[:, 0, 0] = 255  # an isolated ignored pixel inside class 0
    # Radius 3: the classes are 4 columns apart, and ignored pixels do not count.
    assert not gscnn_ops.edge_targets(labels, 3).any()
    # Radius 4: only columns 3 (class 0) and 7 (class 1) see the other class; the ignored
    # pixels themselves never become edges.
    got = gscnn_ops.edge_targets(labels, 4)
    want = torch.zeros_like(got)
    want[:, :, 3] = want[:, :, 7] = True
    assert_same(got, want)


def test_image_border_and_uniform_maps_have_no_edges():
    assert not gscnn_ops.edge_targets(torch.full((2, 9, 7), 3)).any()
    assert not gscnn_ops.edge_targets(torch.full((1, 1, 1), 0), radius=10).any()
    assert not gscnn_ops.edge_targets(torch.full((1, 4, 4), 255)).any()  # all ignored


@pytest.mark.parametrize("radius", [1000.0, math.inf])
def test_radius_beyond_the_image(radius):
    labels = make_labels(2, 9, 11, seed=5)
    got = gscnn_ops.edge_targets(labels, radius)
    # Everything is within reach: every valid pixel of an image with 2+ valid classes is an edge.
    assert_same(got, labels != 255)
    assert_same(reference.edge_targets(labels, radius), got, "reference")
    assert_same(emulated_edge_targets(labels, radius, 255, 16, 3), got, "emulated")
    single = torch.where(labels == 255, labels, torch.zeros_like(labels))
    assert not gscnn_ops.edge_targets(single, radius).any()


def test_ignore_index_the_dtype_cannot_hold_ignores_nothing():
    labels = make_labels(1, 10, 12, ignore_index=255, dtype=torch.uint8, seed=7)
    assert (labels == 255).any()
    got = gscnn_ops.edge_targets(labels, 2, ignore_index=-1)  # 255 is then an ordinary class
    assert_same(got, brute_force(labels, 2, -1))
    assert_same(got, gscnn_ops.edge_targets(labels.long(), 2, ignore_index=-1), "int64")
    assert_same(got, emulated_edge_targets(labels, 2.0, -1, 8, 2), "emulated")
    assert not torch.equal(got, gscnn_ops.edge_targets(labels, 2, ignore_index=255))


def test_negative_labels_are_ordinary_classes():
    g = torch.Generator().manual_seed(11)
    values = torch.tensor([-7, -2, 0, 3, -1])
    labels = values[torch.randint(0, 5, (2, 9, 13), generator=g)]
    got = gscnn_ops.edge_targets(labels, 1.5, ignore_index=-1)
    assert_same(got, brute_force(labels, 1.5, -1))
    assert got[labels == -7].any() and not got[labels == -1].any()


def test_input_left_unchanged_and_output_contiguous_bool():
    labels = make_labels(2, 8, 9)
    before = labels.clone()
    out = gscnn_ops.edge_targets(labels)
    assert torch.equal(labels, before)
    assert out.dtype == torch.bool and out.shape == (2, 8, 9) and out.is_contiguous()
    assert out.device == labels.device


def test_radius_and_ignore_index_defaults_and_int_radius():
    labels = make_labels(1, 12, 12, seed=2)
    default = gscnn_ops.edge_targets(labels)
    assert_same(default, brute_force(labels, 2.0, 255))
    assert_same(ops.edge_targets(labels), default, "schema defaults")
    assert_same(gscnn_ops.edge_targets(labels, 2), default, "int radius")
    assert_same(reference.edge_targets(labels), default, "reference defaults")


@pytest.mark.parametrize("shape", [(0, 4, 5), (2, 0, 5), (2, 3, 0)])
def test_empty_inputs(shape):
    labels = torch.zeros(shape, dtype=torch.int64)
    for out in (
        gscnn_ops.edge_targets(labels),
        emulated_edge_targets(labels, 2.0, 255, 32, 1),
        reference.edge_targets(labels),
    ):
        assert out.shape == shape and out.dtype == torch.bool


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(
    N=st.integers(1, 3),
    H=st.integers(1, 12),
    W=st.integers(1, 12),
    radius=st.floats(0, 6, allow_nan=False),
    num_classes=st.integers(1, 4),
    dtype=st.sampled_from(LABEL_DTYPES),
    layout=st.sampled_from(["contiguous", "transposed"]),
    seed=st.integers(0, 2**16),
)
def test_property_random_maps(N, H, W, radius, num_classes, dtype, layout, seed):
    ignore = IGNORE_FOR[dtype]
    labels = make_labels(
        N, H, W, num_classes=num_classes, ignore_index=ignore, dtype=dtype, seed=seed
    )
    if layout == "transposed":
        labels = labels.transpose(1, 2).contiguous().transpose(1, 2)
    want = brute_force(labels, radius, ignore)
    assert_same(gscnn_ops.edge_targets(labels, radius, ignore), want, "op")
    assert_same(emulated_edge_targets(labels, radius, ignore, 5, 2), want, "emulated")


# --- strides --------------------------------------------------------------------------------------


def strided_variants(N=2, H=11, W=14, dtype=torch.int64):
    """(name, view) pairs: label maps in layouts a user may hand over."""
    base = make_labels(N, H, W, dtype=dtype, seed=13)
    big = make_labels(N, 2 * H, 3 * W, dtype=dtype, seed=14)
    nchw = make_labels(N, 3 * H, W, dtype=dtype, seed=15).view(N, 3, H, W)
    return [
        ("transposed", base.transpose(1, 2).contiguous().transpose(1, 2)),
        ("rows_and_columns_sliced", big[:, 1::2, ::3]),
        ("channel_of_nchw", nchw[:, 1]),
        ("channel_of_nhwc", nchw.permute(0, 2, 3, 1).contiguous()[..., 2]),
        ("expanded_batch", base[:1].expand(3, H, W)),
        ("row_range", base[:, 2:9]),  # unit-stride rows at an offset
    ]


@pytest.mark.parametrize(
    "name,labels", strided_variants(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_non_contiguous_inputs(name, labels):
    want = reference.edge_targets(labels.contiguous(), 2.0)
    assert want.any()
    assert_same(gscnn_ops.edge_targets(labels), want, f"{name}: op")
    # The CUDA kernel reads every stride as it is (no copy): its emulation covers that indexing.
    assert_same(emulated_edge_targets(labels, 2.0, 255, 32, 3), want, f"{name}: emulated")


# --- the CPU builds and threads -----------------------------------------------------------------


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_each_cpu_build_matches_reference(monkeypatch, isa):
    monkeypatch.setenv("GSCNN_CPU_ISA", isa)
    try:
        gscnn_ops.edge_targets(torch.zeros(1, 1, 1, dtype=torch.int64))
    except RuntimeError as e:
        if "lacks" in str(e):
            pytest.skip(f"this CPU has no {isa}")
        raise
    # W = 133: full vectors of every width plus a remainder, for every offset dx.
    for dtype in LABEL_DTYPES:
        ignore = IGNORE_FOR[dtype]
        labels = make_labels(2, 21, 133, num_classes=6, ignore_index=ignore, dtype=dtype, seed=17)
        for radius in (1.5, 2, 5):
            want = reference.edge_targets(labels, radius, ignore)
            assert_same(
                gscnn_ops.edge_targets(labels, radius, ignore), want, f"{isa} {dtype} r={radius}"
            )


def test_result_does_not_depend_on_thread_count(restore_num_threads):
    labels = make_labels(3, 67, 45, num_classes=8, seed=19)
    torch.set_num_threads(1)
    one = gscnn_ops.edge_targets(labels, 2.9)
    torch.set_num_threads(max(2, os.cpu_count() or 2))
    many = gscnn_ops.edge_targets(labels, 2.9)
    assert torch.equal(one, many)
    assert_same(one, reference.edge_targets(labels, 2.9))


# --- the CUDA kernel's code, emulated on the CPU -------------------------------------------------

# (threads, blocks): the production launch (0, 0: the op's own selection for an H100), a full
# block, a grid smaller than the input (grid-stride loop), odd block sizes, one thread per block.
LAUNCHES = [(0, 0), (256, 1024), (32, 1), (7, 3), (64, 2), (1, 5)]


def emulated_edge_targets(labels, radius, ignore_index, threads=0, blocks=0, gpu="sm_90"):
    """The CUDA kernel's block program, run by the emulated GPU (tests/emulation.py)."""
    emulation.load()
    return torch.ops.gscnn_testing.edge_targets(
        labels, float(radius), ignore_index, emulation.gpu(gpu), emulation.launch(threads, blocks)
    )


@pytest.mark.parametrize("threads,blocks", LAUNCHES)
@pytest.mark.parametrize("radius", RADII)
def test_emulated_cuda_kernel_matches_cpu_op(threads, blocks, radius):
    for shape in [(2, 13, 17), (1, 1, 1), (3, 5, 4), (1, 8, 1)]:
        labels = make_labels(*shape, seed=sum(shape))
        got = emulated_edge_targets(labels, float(radius), 255, threads, blocks)
        assert_same(got, gscnn_ops.edge_targets(labels, radius), f"{shape} r={radius}")


@pytest.mark.parametrize("dtype", LABEL_DTYPES, ids=str)
def test_emulated_cuda_kernel_label_dtypes(dtype):
    ignore = IGNORE_FOR[dtype]
    labels = make_labels(2, 15, 22, ignore_index=ignore, dtype=dtype, seed=23)
    got = emulated_edge_targets(labels, 2.0, ignore, 64, 2)
    assert_same(got, brute_force(labels, 2.0, ignore))


# --- registration, opcheck, torch.compile ---------------------------------------------------------


def test_kernels_registered():
    assert torch._C._dispatch_has_kernel_for_dispatch_key("gscnn_ops::edge_targets", "CPU")
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("gscnn_ops::edge_targets", "CUDA")
    assert has_cuda == gscnn_ops.has_cuda_kernels() == bool(gscnn_ops.build_info().get("with_cuda"))


def opcheck_samples(device="cpu"):
    return [
        (make_labels(2, 7, 9).to(device), 2.0, 255),
        (make_labels(1, 5, 6, dtype=torch.uint8).to(device), 1.5, 255),
        (make_labels(2, 6, 5, ignore_index=-1, dtype=torch.int32).to(device), 0.0, -1),
        (make_labels(2, 8, 9).to(device).transpose(1, 2), 3.0, 255),
    ]


@pytest.mark.parametrize("i", range(4))
def test_opcheck(i):
    target, radius, ignore = opcheck_samples()[i]
    opcheck(ops.edge_targets.default, (target, radius, ignore))


def test_torch_compile_fullgraph():
    def f(labels):
        edges = gscnn_ops.edge_targets(labels, radius=2.0)
        return edges, edges.sum()

    compiled = torch.compile(f, fullgraph=True)
    labels = make_labels(2, 16, 20, seed=29)
    edges, count = compiled(labels)
    assert_same(edges, reference.edge_targets(labels, 2.0))
    assert int(count) == int(edges.sum()) > 0


def test_torch_compile_dynamic_shapes_and_radius_argument():
    compiled = torch.compile(
        lambda t, r: gscnn_ops.edge_targets(t, r), fullgraph=True, dynamic=True, backend="aot_eager"
    )
    for shape, radius in [((1, 9, 12), 1.5), ((2, 14, 7), 2.0), ((3, 5, 31), 2.9)]:
        labels = make_labels(*shape, seed=sum(shape))
        assert_same(compiled(labels, radius), reference.edge_targets(labels, radius), str(shape))


# --- bad arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [gscnn_ops.edge_targets, ops.edge_targets], ids=["api", "op"])
def test_bad_arguments_name_op_and_argument(fn):
    good = make_labels(1, 4, 4)
    cases = [
        (good.float(), 2.0, r"argument 'target' must be an integer label map .*got Float"),
        (good.bool(), 2.0, r"argument 'target' must be an integer label map .*got Bool"),
        (good[0], 2.0, r"argument 'target' must be a 3-D \(N, H, W\) label map tensor, got a 2-D"),
        (
            good[None],
            2.0,
            r"argument 'target' must be a 3-D \(N, H, W\) label map tensor, got a 4-D",
        ),
        (good, -1.0, r"argument 'radius' must be a distance in pixels >= 0, got -1"),
        (good, math.nan, r"argument 'radius' must be a distance in pixels >= 0, got nan"),
    ]
    for target, radius, message in cases:
        with pytest.raises(RuntimeError, match=OP.replace(".", r"\.") + ": " + message):
            fn(target, radius)


def test_fake_kernel_checks_like_the_real_one():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = ops.edge_targets(torch.empty(2, 5, 6, dtype=torch.int32), 2.0, 255)
        assert out.shape == (2, 5, 6) and out.dtype == torch.bool and out.is_contiguous()
        with pytest.raises(
            RuntimeError, match=r"gscnn_ops\.edge_targets: argument 'target' must be an integer"
        ):
            ops.edge_targets(torch.empty(2, 5, 6), 2.0, 255)
        with pytest.raises(
            RuntimeError, match=r"gscnn_ops\.edge_targets: argument 'target' must be a 3-D"
        ):
            ops.edge_targets(torch.empty(5, 6, dtype=torch.int64), 2.0, 255)
        with pytest.raises(RuntimeError, match=r"gscnn_ops\.edge_targets: argument 'radius'"):
            ops.edge_targets(torch.empty(1, 5, 6, dtype=torch.int64), -0.5, 255)


# --- CUDA (needs a GPU) ---------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("dtype", LABEL_DTYPES, ids=str)
@pytest.mark.parametrize("radius", RADII)
def test_cuda_matches_cpu(dtype, radius):
    ignore = IGNORE_FOR[dtype]
    for shape in SHAPES + [(2, 97, 131)]:
        labels = make_labels(*shape, ignore_index=ignore, dtype=dtype, seed=sum(shape))
        got = gscnn_ops.edge_targets(labels.cuda(), radius, ignore)
        assert got.is_cuda and got.dtype == torch.bool and got.is_contiguous()
        assert_same(got, gscnn_ops.edge_targets(labels, radius, ignore), f"{shape}")


@requires_cuda
@pytest.mark.parametrize(
    "name,labels", strided_variants(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_cuda_non_contiguous(name, labels):
    assert_same(gscnn_ops.edge_targets(labels.cuda()), gscnn_ops.edge_targets(labels), name)


@requires_cuda
def test_cuda_large_map_side_stream_and_empty():
    labels = make_labels(2, 512, 1024, num_classes=19, seed=31)
    want = gscnn_ops.edge_targets(labels)
    x = labels.cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = gscnn_ops.edge_targets(x)
    stream.synchronize()
    assert_same(got, want)
    empty = gscnn_ops.edge_targets(torch.empty(0, 5, 5, dtype=torch.int64, device="cuda"))
    assert empty.shape == (0, 5, 5) and empty.is_cuda


@requires_cuda
@pytest.mark.parametrize("i", range(4))
def test_cuda_opcheck(i):
    target, radius, ignore = opcheck_samples("cuda")[i]
    opcheck(ops.edge_targets.default, (target, radius, ignore))


@requires_cuda
def test_cuda_torch_compile_fullgraph():
    compiled = torch.compile(lambda t: gscnn_ops.edge_targets(t, 2.0).sum(), fullgraph=True)
    labels = make_labels(2, 40, 50, seed=37)
    assert int(compiled(labels.cuda())) == int(gscnn_ops.edge_targets(labels).sum()) > 0


# --- the checks every op gets (op_checks.py) ---------------------------------------------------


class TestEdgeTargetsChecks(OpChecks):
    name = "edge_targets"
    shapes = ((2, 13, 17), (1, 1, 1), (1, 24, 31))  # N, H, W

    def inputs(self, shape, dtype, seed=0):
        return (make_labels(*shape, seed=seed), 2.0, 255)

    def bad_inputs(self):
        labels = make_labels(1, 5, 5)
        return [
            ((labels[0], 2.0, 255), "target"),
            ((labels.float(), 2.0, 255), "target"),
            ((labels, -1.0, 255), "radius"),
        ]
