"""The command line end to end on a user's own data: a binary folder dataset (discs on a noisy
background), `gscnn train` -> `gscnn eval --json` -> `gscnn predict`, as a user would run them."""

import json

import pytest
import torch
from PIL import Image

from gscnn_ops.cli import main
from gscnn_ops.data import write_png

H, W = 48, 64


def _disc_dataset(root, n=4):
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("background 0 0 0\ndisc 255 0 0\n")
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    for i in range(n):
        cy, cx = (
            torch.randint(12, H - 12, (), generator=g),
            torch.randint(12, W - 12, (), generator=g),
        )
        mask = (((yy - cy) ** 2 + (xx - cx) ** 2) < 100).to(torch.uint8)
        image = (torch.rand(3, H, W, generator=g) * 60 + mask * 150).to(torch.uint8)
        write_png(root / "images" / f"img{i}.png", image)
        write_png(root / "masks" / f"img{i}.png", mask)
    return root


@pytest.mark.slow
def test_train_eval_predict_on_a_binary_folder_dataset(tmp_path, capsys):
    data = _disc_dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "folder",
                "--data-root",
                str(data),
                "--backbone",
                "resnet18",
                "--steps",
                "4",
                "--batch-size",
                "2",
                "--crop-size",
                "40",
                "48",
                "--workers",
                "0",
                "--out",
                str(run),
                "--no-progress",
                "--no-tensorboard",
                "--device",
                "cpu",
                "--eval-every",
                "2",
            ]
        )
        == 0
    )
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("event") == "eval"] == [2, 4]

    report_path = tmp_path / "report.json"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(run / "model.pt"),
                "--dataset",
                "folder",
                "--data-root",
                str(data),
                "--json",
                str(report_path),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    report = json.loads(report_path.read_text())
    assert set(report["per_class_iou"]) == {"background", "disc"}
    assert 0 <= report["miou"] <= 1 and len(report["boundary_f"]["mean_f"]) == 4
    # The last in-training evaluation saw the same model and images.
    assert log[-2]["event"] == "eval" and log[-2]["miou"] == pytest.approx(report["miou"])

    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                str(data / "images" / "img0.png"),
                "--checkpoint",
                str(run / "model.pt"),
                "--out",
                str(out),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    seg = Image.open(out / "img0_seg.png")
    assert seg.size == (W, H)
    colours = {c for _, c in seg.convert("RGB").getcolors()}
    assert colours <= {(0, 0, 0), (255, 0, 0)}  # the class file's colours


def test_train_reports_bad_data_roots_in_one_line(tmp_path, capsys):
    rc = main(
        [
            "train",
            "--dataset",
            "folder",
            "--data-root",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "nowhere" in err and err.startswith("gscnn train: error:")


def test_eval_batches_of_mixed_sizes_get_a_clear_error(tmp_path, capsys):
    data = _disc_dataset(tmp_path / "data", n=2)
    write_png(data / "images" / "small.png", torch.zeros(3, 20, 30, dtype=torch.uint8))
    write_png(data / "masks" / "small.png", torch.zeros(20, 30, dtype=torch.uint8))
    from gscnn_ops import GSCNN
    from gscnn_ops.engine.checkpoint import make_payload, model_config, save_checkpoint

    model = GSCNN(2, "resnet18")
    save_checkpoint(
        tmp_path / "m.pt",
        make_payload(
            model, model_config(model, "resnet18", 8), ["background", "disc"], [[0, 0, 0]] * 2
        ),
    )
    args = [
        "eval",
        "--checkpoint",
        str(tmp_path / "m.pt"),
        "--dataset",
        "folder",
        "--data-root",
        str(data),
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main(args + ["--batch-size", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gscnn eval: error: collate: the samples of a batch differ in size")
    assert "--batch-size 1" in err
    assert main(args + ["--batch-size", "1"]) == 0


def test_engine_modules_are_not_hidden_by_their_functions():
    import types

    import gscnn_ops.engine as engine

    for name in ("train", "evaluate", "predict", "inference", "demo", "checkpoint"):
        assert isinstance(getattr(engine, name), types.ModuleType), name
    assert callable(engine.infer) and engine.TrainConfig().lr == 0.01


def test_eval_reports_a_corrupt_file_met_in_a_loader_worker_in_one_line(tmp_path, capsys):
    # The first image is fine (the size check before the run reads it); the third is corrupt and
    # is only met by a DataLoader worker process in the middle of the run.
    data = _disc_dataset(tmp_path / "data", n=4)
    (data / "images" / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    from gscnn_ops import GSCNN
    from gscnn_ops.engine.checkpoint import make_payload, model_config, save_checkpoint

    model = GSCNN(2, "resnet18")
    save_checkpoint(
        tmp_path / "m.pt",
        make_payload(
            model, model_config(model, "resnet18", 8), ["background", "disc"], [[0, 0, 0]] * 2
        ),
    )
    rc = main(
        [
            "eval",
            "--checkpoint",
            str(tmp_path / "m.pt"),
            "--dataset",
            "folder",
            "--data-root",
            str(data),
            "--no-progress",
            "--device",
            "cpu",
            "--workers",
            "2",
            "--crop-factors",
            "4",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2, err
    first = err.strip().splitlines()[0]
    assert first.startswith("gscnn eval: error: ") and "img2.png" in first, err
