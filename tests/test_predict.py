"""Single-image prediction: the PNGs written (count, size, mode), the baseline, errors that name
the file, and inputs sharing a file-name stem."""

import argparse
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gscnn_ops.data import render_scene
from gscnn_ops.engine import predict as pr
from gscnn_ops.engine.checkpoint import load_model, make_payload, model_config, save_checkpoint
from gscnn_ops.models import GSCNN

CLASSES = ["a", "b", "c"]
PALETTE = [[10, 20, 30], [200, 0, 0], [0, 200, 0]]
FULL = ("seg", "overlay", "edge", "gate1", "gate2", "gate3")


def _checkpoint(path, shape_stream=True):
    torch.manual_seed(0)
    model = GSCNN(3, "resnet18", shape_stream=shape_stream)
    save_checkpoint(path, make_payload(model, model_config(model, "resnet18", 8), CLASSES, PALETTE))
    return str(path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "gscnn.pt")


def _image(path, h, w, seed=0):
    image, _ = render_scene(seed, h, w)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return str(path)


def _run(argv):
    sub = argparse.ArgumentParser().add_subparsers()
    pr.add_parser(sub)
    args = sub.choices["predict"].parse_args(argv)
    return args.fn(args)


def test_predict_writes_readable_pngs_of_the_image_size(ckpt, tmp_path, capsys):
    a = _image(tmp_path / "in" / "a.png", 30, 45, seed=1)
    b = _image(tmp_path / "in" / "b.jpg", 40, 52, seed=2)
    out = tmp_path / "out"
    assert _run([a, b, "--checkpoint", ckpt, "--out", str(out), "--no-progress"]) == 0
    assert "wrote 12 files" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(f"{s}_{k}.png" for s in "ab" for k in FULL)
    for stem, (h, w) in (("a", (30, 45)), ("b", (40, 52))):
        for kind in FULL:
            with Image.open(out / f"{stem}_{kind}.png") as im:
                assert im.size == (w, h)
                assert im.mode == ("RGB" if kind in ("seg", "overlay") else "L")
        seg = np.asarray(Image.open(out / f"{stem}_seg.png"))
        assert {tuple(c) for c in seg.reshape(-1, 3).tolist()} <= {tuple(c) for c in PALETTE}
    # The overlay is the 50/50 blend of the image and the colour segmentation.
    raw = np.asarray(Image.open(a)).astype(float)
    seg = np.asarray(Image.open(out / "a_seg.png")).astype(float)
    overlay = np.asarray(Image.open(out / "a_overlay.png")).astype(float)
    assert np.abs(overlay - (raw + seg) / 2).max() <= 0.5 + 1e-9


def test_gates_and_edges_match_the_model(ckpt, tmp_path):
    a = _image(tmp_path / "x.png", 32, 48)
    model, meta = load_model(ckpt)
    written = pr.predict_images(model, meta, [a], tmp_path / "o", "cpu", progress=False)
    assert [os.path.basename(p) for p in written] == [f"x_{k}.png" for k in FULL]
    from gscnn_ops.data import normalize
    from gscnn_ops.data.io import read_image
    from gscnn_ops.models import canny

    raw = read_image(a)
    with torch.no_grad():
        out = model(normalize(raw)[None], canny(raw)[None], return_alphas=True)
    edge = np.asarray(Image.open(tmp_path / "o" / "x_edge.png")).astype(float)
    assert np.abs(edge - torch.sigmoid(out.edge[0, 0]).numpy() * 255).max() <= 0.5 + 1e-3
    gate2 = np.asarray(Image.open(tmp_path / "o" / "x_gate2.png")).astype(float)
    assert np.abs(gate2 - out.alphas[1][0, 0].numpy() * 255).max() <= 0.5 + 1e-3


def test_tiled_prediction(ckpt, tmp_path):
    a = _image(tmp_path / "big.png", 40, 70)
    assert (
        _run(
            [
                a,
                "--checkpoint",
                ckpt,
                "--out",
                str(tmp_path / "o"),
                "--tile",
                "24",
                "32",
                "--no-progress",
            ]
        )
        == 0
    )
    for kind in FULL:
        with Image.open(tmp_path / "o" / f"big_{kind}.png") as im:
            assert im.size == (70, 40)


def test_baseline_writes_only_seg_and_overlay(tmp_path, capsys):
    ck = _checkpoint(tmp_path / "baseline.pt", shape_stream=False)
    a = _image(tmp_path / "a.png", 32, 40)
    b = _image(tmp_path / "b.png", 32, 40)
    model, meta = load_model(ck)
    with pytest.warns(UserWarning, match="no shape stream") as record:
        written = pr.predict_images(model, meta, [a, b], tmp_path / "o", progress=False)
    assert len(record) == 1
    assert sorted(os.path.basename(p) for p in written) == sorted(
        ["a_seg.png", "a_overlay.png", "b_seg.png", "b_overlay.png"]
    )
    assert _run([a, "--checkpoint", ck, "--out", str(tmp_path / "o2"), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("no shape stream") == 1
    assert sorted(os.listdir(tmp_path / "o2")) == ["a_overlay.png", "a_seg.png"]


def test_missing_or_corrupt_image_names_the_file(ckpt, tmp_path, capsys):
    good = _image(tmp_path / "good.png", 32, 32)
    missing = str(tmp_path / "missing.png")
    model, meta = load_model(ckpt)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        pr.predict_images(model, meta, [good, missing], tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()  # checked before any work
    assert (
        _run([good, missing, "--checkpoint", ckpt, "--out", str(tmp_path / "o"), "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err
    assert missing in err and "Traceback" not in err
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"this is not a PNG")
    assert (
        _run([str(corrupt), "--checkpoint", ckpt, "--out", str(tmp_path / "o"), "--no-progress"])
        == 2
    )
    assert str(corrupt) in capsys.readouterr().err


def test_missing_checkpoint(tmp_path, capsys):
    a = _image(tmp_path / "a.png", 32, 32)
    assert (
        _run(
            [
                a,
                "--checkpoint",
                str(tmp_path / "no.pt"),
                "--out",
                str(tmp_path / "o"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "no.pt" in capsys.readouterr().err


def test_duplicate_stems_do_not_overwrite_each_other(ckpt, tmp_path):
    a = _image(tmp_path / "d1" / "x.png", 32, 40, seed=1)
    b = _image(tmp_path / "d2" / "x.png", 36, 44, seed=2)
    c = _image(tmp_path / "d3" / "x-1.png", 40, 48, seed=3)
    assert pr.output_stems([a, b, c]) == ["x", "x-2", "x-1"]
    model, meta = load_model(ckpt)
    written = pr.predict_images(model, meta, [a, b, c], tmp_path / "o", progress=False)
    assert len(written) == len(set(written)) == 3 * len(FULL)
    for stem, size in (("x", (40, 32)), ("x-2", (44, 36)), ("x-1", (48, 40))):
        with Image.open(tmp_path / "o" / f"{stem}_seg.png") as im:
            assert im.size == size
