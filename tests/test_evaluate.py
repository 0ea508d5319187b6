"""Evaluation: the confusion matrix, sliding-window inference, the eval subcommand's report
against the metrics computed directly, the distance-based evaluation, and its errors."""

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gscnn_ops.data import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    SegmentationSamples,
    build_dataset,
)
from gscnn_ops.engine import evaluate as ev
from gscnn_ops.engine.checkpoint import load_model, make_payload, model_config, save_checkpoint
from gscnn_ops.engine.inference import infer, window_starts
from gscnn_ops.metrics import BoundaryFScore
from gscnn_ops.models import GSCNN
from gscnn_ops.models.gscnn import GSCNNOutput

H, W, N_IMAGES = 32, 64, 3


def _tiny_dataset(name, root, split, **options):
    return build_dataset(name, root, split, height=H, width=W, length=N_IMAGES, **options)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    out = {}
    for key, k in (("k19", 19), ("k3", 3)):
        torch.manual_seed(k)
        model = GSCNN(k, "resnet18")
        classes = CITYSCAPES_CLASSES if k == 19 else ["a", "b", "c"]
        palette = CITYSCAPES_PALETTE if k == 19 else [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
        path = folder / f"{key}.pt"
        save_checkpoint(
            path, make_payload(model, model_config(model, "resnet18", 8), classes, palette)
        )
        out[key] = str(path)
    return out


@pytest.fixture
def eval_parser(monkeypatch):
    monkeypatch.setattr(ev, "build_dataset", _tiny_dataset)
    sub = argparse.ArgumentParser().add_subparsers()
    ev.add_parser(sub)
    return sub.choices["eval"]


def _run(parser, argv):
    args = parser.parse_args(argv)
    return args.fn(args)


# ----------------------------------------------------------------------------- ConfusionMatrix


def test_confusion_matrix_matches_brute_force():
    k, ignore = 5, 255
    g = torch.Generator().manual_seed(0)
    cm = ev.ConfusionMatrix(k, ignore)
    brute = np.zeros((k, k), np.int64)
    for shape in ((2, 7, 9), (11, 13)):
        pred = torch.randint(0, k, shape, generator=g)
        target = torch.randint(0, k, shape, generator=g)
        target[torch.rand(shape, generator=g) < 0.2] = ignore
        cm.update(pred, target)
        for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
            if t != ignore:
                brute[t, p] += 1
    r = cm.compute()
    assert np.array_equal(r["matrix"].numpy(), brute)
    tp = np.diag(brute).astype(float)
    iou = tp / (brute.sum(0) + brute.sum(1) - tp)
    assert r["per_class_iou"] == pytest.approx(iou.tolist())
    assert r["miou"] == pytest.approx(iou.mean())
    assert r["pixel_accuracy"] == pytest.approx(tp.sum() / brute.sum())


def test_miou_is_over_the_classes_that_occur():
    cm = ev.ConfusionMatrix(4)
    target = torch.tensor([[0, 0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 3]])  # the 3 is on an ignored pixel: not counted
    cm.update(pred, target)
    r = cm.compute()
    assert r["per_class_iou"][2] is None and r["per_class_iou"][3] is None
    assert r["per_class_iou"][:2] == pytest.approx([1 / 2, 2 / 3])
    assert r["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # A class only predicted (a false positive) occurs: IoU 0, in the mean.
    cm.update(torch.tensor([2]), torch.tensor([0]))
    r = cm.compute()
    assert r["per_class_iou"][2] == 0.0 and r["per_class_iou"][3] is None


def test_perfect_prediction_and_errors():
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    target[0, 0, 0] = 255
    cm = ev.ConfusionMatrix(3)
    cm.update(target.clone(), target)
    r = cm.compute()
    assert r["miou"] == 1.0 and r["pixel_accuracy"] == 1.0
    with pytest.raises(ValueError, match="pred holds the value 3"):
        cm.update(torch.full((2, 2), 3), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="target holds the value 7"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))


# ----------------------------------------------------------------------------- inference


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return GSCNN(3, "resnet18").eval()


def test_tile_covering_the_image_equals_plain_forward(tiny_model):
    g = torch.Generator().manual_seed(2)
    image = torch.randn(2, 3, 37, 53, generator=g)
    canny = (torch.rand(2, 1, 37, 53, generator=g) > 0.8).float()
    with torch.no_grad():
        ref = tiny_model(image, canny, return_alphas=True)
    for tile in (None, (37, 53), 64):
        out = infer(tiny_model, image, canny, tile=tile, return_alphas=True)
        assert out.seg.dtype == torch.float32
        assert torch.equal(out.seg, ref.seg) and torch.equal(out.edge, ref.edge)
        assert all(torch.equal(a, b) for a, b in zip(out.alphas, ref.alphas))


@pytest.mark.parametrize(
    "length,tile,overlap",
    [(37, 16, 1 / 3), (53, 24, 0.5), (100, 7, 0.0), (16, 16, 1 / 3), (10, 16, 0.9)],
)
def test_windows_cover_every_pixel(length, tile, overlap):
    starts = window_starts(length, tile, overlap)
    size = min(tile, length)
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        assert 0 <= s and s + size <= length
        covered[s : s + size] = True
    assert covered.all() and starts[-1] + size == length
    for a, b in zip(starts, starts[1:]):
        assert b - a <= size - int(size * overlap) if overlap else b - a <= size


class _Pointwise(nn.Module):
    """A stand-in model whose outputs at a pixel depend on that pixel only, so stitched windows
    must reproduce the whole-image output (up to the rounding of the average)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.shape = object()

    def forward(self, image, canny=None, return_alphas=False):
        seg = self.conv(image)
        alphas = [torch.sigmoid(image[:, i : i + 1, ::2, ::2]) for i in range(3)]
        return GSCNNOutput(
            seg=seg, edge=image[:, :1] * 2 + canny, alphas=alphas if return_alphas else []
        )


def test_sliding_windows_stitch_odd_sizes():
    torch.manual_seed(0)
    model = _Pointwise()
    image = torch.randn(2, 3, 37, 53)
    canny = torch.rand(2, 1, 37, 53)
    whole = infer(model, image, canny, return_alphas=True)
    tiled = infer(model, image, canny, tile=(16, 24), return_alphas=True)
    assert tiled.seg.shape == (2, 4, 37, 53) and tiled.edge.shape == (2, 1, 37, 53)
    assert [a.shape for a in tiled.alphas] == [(2, 1, 37, 53)] * 3
    torch.testing.assert_close(tiled.seg, whole.seg, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tiled.edge, whole.edge, rtol=1e-6, atol=1e-6)
    # Alphas are upsampled per window before stitching: every pixel is covered, values in (0, 1).
    for a in tiled.alphas:
        assert torch.isfinite(a).all() and a.min() > 0 and a.max() < 1


def test_real_model_tiled_shapes_and_amp(tiny_model):
    image, canny = torch.randn(1, 3, 37, 53), torch.zeros(1, 1, 37, 53)
    out = infer(
        tiny_model, image, canny, tile=(16, 24), amp_dtype=torch.bfloat16, return_alphas=True
    )
    assert out.seg.shape == (1, 3, 37, 53) and out.seg.dtype == torch.float32
    assert out.edge.shape == (1, 1, 37, 53) and len(out.alphas) == 3
    assert torch.isfinite(out.seg).all()
    with pytest.raises(ValueError, match="overlap"):
        infer(tiny_model, image, canny, tile=16, overlap=1.0)
    with pytest.raises(ValueError, match="canny"):
        infer(tiny_model, image, torch.zeros(1, 1, 36, 53))


# ----------------------------------------------------------------------------- evaluate / eval


def test_eval_json_matches_the_metrics_computed_directly(
    eval_parser, checkpoints, tmp_path, capsys
):
    out = tmp_path / "report.json"
    rc = _run(
        eval_parser,
        [
            "--checkpoint",
            checkpoints["k19"],
            "--json",
            str(out),
            "--batch-size",
            "2",
            "--thresholds",
            "2",
            "5",
            "--no-progress",
        ],
    )
    assert rc == 0
    text = out.read_text()
    assert "NaN" not in text
    report = json.loads(text)
    assert {"miou", "per_class_iou", "boundary_f"} <= set(report)
    assert isinstance(report["miou"], float) and report["num_images"] == N_IMAGES
    assert list(report["per_class_iou"]) == list(CITYSCAPES_CLASSES)
    assert "road" in capsys.readouterr().out

    model, _ = load_model(checkpoints["k19"])
    samples = SegmentationSamples(_tiny_dataset("synthetic", None, "val"))
    cm, bf = ev.ConfusionMatrix(19), BoundaryFScore(19, (2, 5))
    with torch.no_grad():
        for i in range(len(samples)):
            s = samples[i]
            pred = model(s["image"][None], s["canny"][None]).seg.argmax(1)
            cm.update(pred, s["label"][None])
            bf.update(pred, s["label"][None])
    r, b = cm.compute(), bf.compute()
    assert report["miou"] == pytest.approx(r["miou"], abs=1e-12)
    assert report["pixel_accuracy"] == pytest.approx(r["pixel_accuracy"], abs=1e-12)
    assert list(report["per_class_iou"].values()) == pytest.approx(r["per_class_iou"], abs=1e-12)
    assert report["confusion_matrix"]["matrix"] == r["matrix"].tolist()
    rb = report["boundary_f"]
    assert rb["thresholds"] == [2, 5]
    assert rb["mean_f"] == pytest.approx(b["mean_f"].tolist(), abs=1e-12)
    assert rb["strict_mean_f"] == pytest.approx(b["strict"]["mean_f"].tolist(), abs=1e-12)
    for k, name in enumerate(CITYSCAPES_CLASSES):
        assert rb["per_class_f"][name] == pytest.approx(b["per_class"]["f"][:, k].tolist())
        strict = b["strict"]["per_class"]["f"][:, k]
        if torch.isnan(strict).any():
            assert rb["per_class_strict_f"][name] == [None, None]
        else:
            assert rb["per_class_strict_f"][name] == pytest.approx(strict.tolist())


def _direct_distance_miou(model, loader, factor, K=19, ignore=255):
    cm = torch.zeros(K, K, dtype=torch.int64)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            image, canny, label = batch["image"], batch["canny"], batch["label"]
            h, w = label.shape[-2:]
            top, left = round(factor * h / w), factor
            window = (slice(top, h - top), slice(left, w - left))
            image = F.interpolate(
                image[..., window[0], window[1]], size=(h, w), mode="bilinear", align_corners=False
            )
            canny = F.interpolate(canny[..., window[0], window[1]], size=(h, w), mode="nearest")
            label = F.interpolate(
                label[:, None, window[0], window[1]].float(), size=(h, w), mode="nearest"
            )[:, 0].long()
            pred = model(image, canny).seg.argmax(1)
            valid = label != ignore
            cm += torch.bincount(label[valid] * K + pred[valid], minlength=K * K).view(K, K)
    tp = cm.diag().double()
    iou = tp / (cm.sum(0) + cm.sum(1) - cm.diag()).double()
    return iou.nanmean().item()


def test_distance_evaluation(checkpoints):
    model, _ = load_model(checkpoints["k19"])
    loader = torch.utils.data.DataLoader(
        SegmentationSamples(_tiny_dataset("synthetic", None, "val")), batch_size=2
    )
    report = ev.evaluate(model, loader, 19, crop_factors=[0, 4, 10], progress=False)
    assert list(report["distance"]) == [0, 4, 10]
    assert report["distance"][0] == report["miou"]
    # Each factor against a direct computation: crop, zoom back (bilinear image, nearest labels
    # and edges), predict, mIoU over the classes that occur.
    for factor in (4, 10):
        direct = _direct_distance_miou(model, loader, factor)
        assert report["distance"][factor] == pytest.approx(direct, abs=1e-12), factor
        assert direct != pytest.approx(report["miou"], abs=1e-6)  # the crop does change it
    assert "distance" not in ev.evaluate(model, loader, 19, progress=False)
    js = ev.report_to_json(report, CITYSCAPES_CLASSES)
    assert list(js["distance"]) == ["0", "4", "10"]
    assert "distance-based" in ev.format_report(report, CITYSCAPES_CLASSES)
    with pytest.raises(ValueError, match="crop factor 40"):
        ev.evaluate(model, loader, 19, crop_factors=[40], progress=False)


def test_crop_and_zoom_keeps_the_aspect_ratio_and_matches_nearest():
    image = torch.randn(2, 3, H, W)
    canny = (torch.rand(2, 1, H, W) > 0.5).float()
    label = torch.randint(0, 5, (2, H, W))
    assert ev.crop_box(H, W, 8) == (4, 8, 24, 48)  # 8 px a side horizontally, 8 * 32/64 vertically
    i0, c0, l0 = ev.crop_and_zoom(image, canny, label, 0)
    assert i0 is image and c0 is canny and l0 is label
    i, c, l = ev.crop_and_zoom(image, canny, label, 8)
    assert i.shape == image.shape and c.shape == canny.shape and l.shape == label.shape
    crop = label[:, None, 4:28, 8:56].float()
    assert torch.equal(l, F.interpolate(crop, size=(H, W), mode="nearest")[:, 0].long())
    assert torch.equal(c, F.interpolate(canny[..., 4:28, 8:56], size=(H, W), mode="nearest"))


def test_bad_checkpoint_is_a_clear_error(eval_parser, checkpoints, tmp_path, capsys):
    missing = str(tmp_path / "nope.pt")
    assert _run(eval_parser, ["--checkpoint", missing, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert missing in err and "does not exist" in err and "Traceback" not in err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert _run(eval_parser, ["--checkpoint", str(garbage), "--no-progress"]) == 2
    assert str(garbage) in capsys.readouterr().err


def test_class_count_mismatch_is_a_clear_error(eval_parser, checkpoints, capsys):
    assert _run(eval_parser, ["--checkpoint", checkpoints["k3"], "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "3 classes" in err and "has 19" in err and checkpoints["k3"] in err


def test_cli_option_errors(eval_parser, checkpoints, capsys):
    base = ["--checkpoint", checkpoints["k19"], "--no-progress"]
    assert _run(eval_parser, base + ["--crop-factors", "40"]) == 2
    assert "crop factor 40" in capsys.readouterr().err
    assert _run(eval_parser, base + ["--thresholds", "2.5"]) == 2
    assert "whole" in capsys.readouterr().err
    assert _run(eval_parser, base + ["--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err


def test_cli_tiled_limited_run(eval_parser, checkpoints, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = _run(
        eval_parser,
        [
            "--checkpoint",
            checkpoints["k19"],
            "--limit",
            "1",
            "--tile",
            "16",
            "32",
            "--amp",
            "bf16",
            "--crop-factors",
            "0",
            "6",
            "--json",
            str(out),
            "--no-progress",
        ],
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["num_images"] == 1 and list(report["distance"]) == ["0", "6"]
    assert report["distance"]["0"] == report["miou"]
    assert report["boundary_f"]["thresholds"] == [3, 5, 9, 12]
