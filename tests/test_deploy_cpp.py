"""Deployment without Python: `gscnn export --aoti` packages run from Python and from the C++
example (examples/cpp, built with CMake against the CMake build of our ops), against eager.

Each package is compiled once per module (about a minute each on 2 cores); the example links the
libgscnn_ops.so of test_cmake_build's fixture (built there, or $GSCNN_CMAKE_BUILD_DIR's).
"""

import os
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from gscnn_ops.cli import main
from gscnn_ops.data import normalize, render_scene
from gscnn_ops.engine.checkpoint import load_model, make_payload, model_config, save_checkpoint
from gscnn_ops.models import GSCNN, canny, release_canny

from test_cmake_build import _find_cmake, _run, cmake_library  # noqa: F401 - a fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["gscnn_ops", "release"])
def package(request, tmp_path_factory):
    """(checkpoint, AOTInductor package) of a small model with each head."""
    folder = tmp_path_factory.mktemp(f"aoti-{request.param}")
    torch.manual_seed(0)
    model = GSCNN(3, "resnet18", head=request.param)
    ckpt = str(folder / "m.pt")
    save_checkpoint(
        ckpt,
        make_payload(model, model_config(model, "resnet18", 8), ["a", "b", "c"], [[0, 0, 0]] * 3),
    )
    out = str(folder / "model.pt2")
    assert main(["export", "--checkpoint", ckpt, "--out", out, "--aoti"]) == 0
    return ckpt, out


def test_aoti_package_equals_eager(package):
    ckpt, path = package
    runner = torch._inductor.aoti_load_package(path)
    model, _ = load_model(ckpt)
    for n, h, w in ((1, 64, 96), (2, 45, 70)):
        image, edges = torch.randn(n, 3, h, w), torch.rand(n, 1, h, w).round()
        with torch.no_grad():
            seg, edge = runner(image, edges)
            ref = model(image, edges)
        torch.testing.assert_close(seg, ref.seg, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(edge, ref.edge, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def segment_exe(cmake_library, tmp_path_factory):  # noqa: F811 - the fixture imported above
    cmake, seen = _find_cmake()
    if cmake is None:
        pytest.skip("needs cmake >= 3.26; found: " + (", ".join(seen) or "none"))
    build = str(tmp_path_factory.mktemp("example-build"))
    _run(
        [
            cmake,
            "-S",
            os.path.join(ROOT, "examples", "cpp"),
            "-B",
            build,
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DGSCNN_OPS_LIBRARY={cmake_library}",
        ]
    )
    _run([cmake, "--build", build, "--parallel", str(os.cpu_count() or 2)])
    exe = os.path.join(build, "segment")
    assert os.access(exe, os.X_OK)
    return exe


def _read_pgm(path):
    with Image.open(path) as im:
        assert im.mode == "L"
        return torch.from_numpy(np.array(im))


def test_cpp_example_segments_an_image_file(package, segment_exe, tmp_path):
    ckpt, path = package
    raw, _ = render_scene(5, 61, 83)
    Image.fromarray(raw.permute(1, 2, 0).numpy()).save(tmp_path / "scene.ppm")
    proc = subprocess.run(
        [
            segment_exe,
            path,
            str(tmp_path / "scene.ppm"),
            str(tmp_path / "labels.pgm"),
            "--canny-out",
            str(tmp_path / "canny.pgm"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model, meta = load_model(ckpt)
    image = normalize(raw).unsqueeze(0)
    release = meta["model_config"]["head"] == "release"
    assert f"Canny: {'release' if release else 'image'}" in proc.stdout
    edges = release_canny(image) if release else canny(raw.unsqueeze(0))
    assert edges.sum() > 0
    assert torch.equal(_read_pgm(tmp_path / "canny.pgm").float() / 255, edges[0, 0])
    with torch.no_grad():
        expected = model(image, edges).seg.argmax(1)[0]
    labels = _read_pgm(tmp_path / "labels.pgm").long()
    assert labels.shape == (61, 83)
    assert (labels == expected).float().mean() > 0.999


def test_cpp_example_reports_bad_input(package, segment_exe, tmp_path):
    _, path = package
    (tmp_path / "bad.ppm").write_bytes(b"P3\n2 2\n255\n")
    proc = subprocess.run(
        [segment_exe, path, str(tmp_path / "bad.ppm"), str(tmp_path / "o.pgm")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1 and "bad.ppm" in proc.stderr and "P6" in proc.stderr
    proc = subprocess.run([segment_exe, path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr
