"""The authors' checkpoints on the command line (eval, predict, convert-release, predict
--format cityscapes) and deployment (gscnn export: the torch.export program against eager; the
AOTInductor package in test_deploy_cpp.py)."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gscnn_ops.cli import main
from gscnn_ops.data import render_scene
from gscnn_ops.data.cityscapes import LABELID_TO_TRAINID, trainids_to_labelids
from gscnn_ops.engine.checkpoint import (
    load_checkpoint,
    load_model,
    make_payload,
    model_config,
    save_checkpoint,
)
from gscnn_ops.engine.export import Deployable, export_program
from gscnn_ops.models import GSCNN, load_release, release_canny

from test_release import random_release_state


@pytest.fixture(scope="module")
def release_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("release") / "best_cityscapes_checkpoint.pth"
    torch.save(
        {"state_dict": random_release_state(seed=11), "epoch": 174, "mean_iu": np.float64(0.808)},
        path,
    )
    return str(path)


def _image(path, h, w, seed=0):
    image, _ = render_scene(seed, h, w)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return str(path)


def test_load_model_recognises_a_release_checkpoint(release_file):
    model, meta = load_model(release_file)
    assert model.head == "release" and not model.training
    assert meta["source"] == "release" and meta["classes"][5] == "pole"
    assert meta["model_config"] == {
        "num_classes": 19,
        "backbone": "wrn38",
        "output_stride": 8,
        "shape_stream": True,
        "shape_stride": 1,
        "head": "release",
    }


def test_convert_release_round_trip(release_file, tmp_path, capsys):
    out = tmp_path / "converted.pt"
    assert main(["convert-release", release_file, str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    payload = load_checkpoint(str(out))
    assert payload["model_config"]["head"] == "release" and len(payload["classes"]) == 19
    a, _ = load_model(str(out))
    b = load_release(release_file)
    image = torch.randn(1, 3, 40, 56)
    canny = release_canny(image)
    with torch.no_grad():
        torch.testing.assert_close(a(image, canny).seg, b(image, canny).seg, rtol=0, atol=0)
    # A gscnn_ops checkpoint is not a release checkpoint: named, one line, exit code 2.
    assert main(["convert-release", str(out), str(tmp_path / "again.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gscnn convert-release: error: ") and "converted.pt" in err
    assert not (tmp_path / "again.pt").exists()


def test_eval_and_predict_take_a_release_checkpoint(release_file, tmp_path, capsys):
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                release_file,
                "--dataset",
                "synthetic",
                "--limit",
                "1",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "pole" in capsys.readouterr().out  # the Cityscapes class names
    a = _image(tmp_path / "frankfurt_000000_000294_leftImg8bit.png", 36, 52, seed=3)
    out = tmp_path / "results"
    assert (
        main(
            [
                "predict",
                a,
                "--checkpoint",
                release_file,
                "--out",
                str(out),
                "--format",
                "cityscapes",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert os.listdir(out) == ["frankfurt_000000_000294_leftImg8bit.png"]
    with Image.open(out / "frankfurt_000000_000294_leftImg8bit.png") as im:
        assert im.mode == "L" and im.size == (52, 36)
        ids = np.asarray(im)
    assert set(np.unique(ids)) <= set(LABELID_TO_TRAINID)


def test_cityscapes_format_needs_cityscapes_classes(tmp_path, capsys):
    model = GSCNN(3, "resnet18")
    ckpt = tmp_path / "m.pt"
    save_checkpoint(
        ckpt,
        make_payload(model, model_config(model, "resnet18", 8), ["a", "b", "c"], [[0, 0, 0]] * 3),
    )
    a = _image(tmp_path / "a.png", 20, 20)
    assert (
        main(
            [
                "predict",
                a,
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "o"),
                "--format",
                "cityscapes",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "19 classes" in capsys.readouterr().err


def test_trainids_to_labelids():
    pred = torch.arange(19).view(1, 19)
    assert trainids_to_labelids(pred).tolist() == [sorted(LABELID_TO_TRAINID)]
    with pytest.raises(ValueError, match="0..18"):
        trainids_to_labelids(torch.tensor([19]))


# ----------------------------------------------------------------- export


def _checkpoint(path, head="gscnn_ops", shape_stream=True):
    torch.manual_seed(0)
    model = GSCNN(3, "resnet18", shape_stream=shape_stream, head=head)
    save_checkpoint(
        path,
        make_payload(model, model_config(model, "resnet18", 8), ["a", "b", "c"], [[0, 0, 0]] * 3),
    )
    return str(path)


@pytest.mark.parametrize("head", ["gscnn_ops", "release"])
def test_exported_program_equals_eager_at_other_sizes(tmp_path, head, capsys):
    ckpt = _checkpoint(tmp_path / "m.pt", head)
    out = tmp_path / "model.pt2"
    assert main(["export", "--checkpoint", ckpt, "--out", str(out)]) == 0
    info = json.loads((tmp_path / "model.pt2.json").read_text())
    assert info["outputs"] == ["seg", "edge"] and info["model_config"]["head"] == head
    program = torch.export.load(str(out))
    ops = {str(n.target) for n in program.graph.nodes if "gscnn_ops" in str(n.target)}
    assert ops == {
        "gscnn_ops.gated_conv2d_mlp.default"
        if head == "release"
        else "gscnn_ops.gated_conv2d.default"
    }
    model, _ = load_model(ckpt)
    for n, h, w in ((1, 64, 96), (3, 41, 57), (2, 128, 80)):
        image, canny = torch.randn(n, 3, h, w), torch.rand(n, 1, h, w).round()
        with torch.no_grad():
            seg, edge = program.module()(image, canny)
            ref = model(image, canny)
        torch.testing.assert_close(seg, ref.seg, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(edge, ref.edge, rtol=1e-5, atol=1e-5)


def test_export_of_a_baseline_returns_seg_only():
    model = GSCNN(3, "resnet18", shape_stream=False).eval()
    program = export_program(model)
    image = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        (seg,) = program.module()(image, torch.zeros(1, 1, 33, 47))
        torch.testing.assert_close(seg, Deployable(model)(image, None)[0])


def test_export_errors_name_the_problem(tmp_path, capsys):
    assert (
        main(
            ["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.pt2")]
        )
        == 2
    )
    assert "none.pt" in capsys.readouterr().err
    ckpt = _checkpoint(tmp_path / "m.pt")
    assert (
        main(
            [
                "export",
                "--checkpoint",
                ckpt,
                "--out",
                str(tmp_path / "m.pt2"),
                "--trace-size",
                "4",
                "4",
            ]
        )
        == 2
    )
    assert "--trace-size" in capsys.readouterr().err


# ----------------------------------------------------------------- fine-tuning


def test_train_init_starts_from_a_checkpoint(tmp_path):
    from gscnn_ops.engine.train import TrainConfig, _model

    ckpt = _checkpoint(tmp_path / "m.pt", head="release")
    cfg = TrainConfig(backbone="resnet18", head="release", init=ckpt)
    model = _model(cfg, 3)
    start, _ = load_model(ckpt)
    for (k, v), w in zip(model.state_dict().items(), start.state_dict().values()):
        assert torch.equal(v, w), k
    with pytest.raises(ValueError, match="head: checkpoint 'release' vs --head 'gscnn_ops'"):
        _model(TrainConfig(backbone="resnet18", init=ckpt), 3)
    with pytest.raises(ValueError, match="num_classes"):
        _model(TrainConfig(backbone="resnet18", head="release", init=ckpt), 5)


def test_train_init_from_a_release_checkpoint(release_file):
    from gscnn_ops.engine.train import TrainConfig, _model

    model = _model(TrainConfig(backbone="wrn38", head="release", init=release_file), 19)
    ref = load_release(release_file)
    for (k, v), w in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(v, w), k
