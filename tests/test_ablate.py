"""`gscnn ablate`: the statistics it reports, and the study itself shrunk to seconds (resumable,
refusing to mix settings)."""

import json
import math
import statistics

import pytest
import torch

from gscnn_ops.cli import main
from gscnn_ops.engine.ablate import (
    convergence,
    run_metrics,
    study_summary,
    summarize,
    t_quantile,
)


def test_t_quantiles():
    assert t_quantile(1) == pytest.approx(12.706)
    assert t_quantile(4) == pytest.approx(2.776)
    assert t_quantile(1000) == pytest.approx(1.96)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0)


def test_summarize_mean_std_and_interval():
    values = [0.5, 0.7, 0.6, 0.9, 0.8]
    s = summarize(values)
    assert s["n"] == 5 and s["mean"] == pytest.approx(0.7)
    assert s["std"] == pytest.approx(statistics.stdev(values))
    half = 2.776 * s["std"] / math.sqrt(5)
    assert s["ci95"] == pytest.approx([0.7 - half, 0.7 + half])
    # Undefined values are left out; one value has no spread.
    assert summarize([0.3, None, float("nan")]) == {"n": 1, "mean": 0.3, "std": None, "ci95": None}
    assert summarize([])["mean"] is None


def test_paired_differences_use_the_seeds_both_variants_have():
    runs = [
        {"variant": "baseline", "seed": 0, "metrics": {"miou": 0.50}},
        {"variant": "baseline", "seed": 1, "metrics": {"miou": 0.40}},
        {"variant": "baseline", "seed": 2, "metrics": {"miou": 0.45}},
        {"variant": "gscnn", "seed": 0, "metrics": {"miou": 0.52}},
        {"variant": "gscnn", "seed": 1, "metrics": {"miou": 0.43}},
        {"variant": "gscnn", "seed": 7, "metrics": {"miou": 0.99}},  # no baseline partner
    ]
    s = study_summary(runs)
    assert s["variants"]["gscnn"]["miou"]["n"] == 3
    paired = s["paired"]["gscnn"]
    assert paired["seeds"] == [0, 1]
    assert paired["miou"]["mean"] == pytest.approx(0.025)
    assert paired["miou"]["std"] == pytest.approx(statistics.stdev([0.02, 0.03]))
    assert "baseline" not in s["paired"]
    assert list(s["contrasts"]) == []  # the contrasts need both of their variants


def test_contrasts_between_gscnn_variants():
    runs = [
        {"variant": v, "seed": s, "metrics": {"miou": m}}
        for v, s, m in [
            ("gscnn-att-selected", 0, 0.50), ("gscnn-att-selected", 1, 0.40),
            ("gscnn", 0, 0.56), ("gscnn", 1, 0.44),
        ]
    ]  # fmt: skip
    c = study_summary(runs)["contrasts"]
    assert list(c) == ["gscnn - gscnn-att-selected"]
    assert c["gscnn - gscnn-att-selected"]["miou"]["mean"] == pytest.approx(0.05)
    assert c["gscnn - gscnn-att-selected"]["seeds"] == [0, 1]


def _log(path, losses, att=None):
    with open(path, "w") as f:
        for i, v in enumerate(losses, 1):
            row = {
                "step": i,
                "loss_total": v,
                "loss_seg": v / 2,
                "loss_att": (att or losses)[i - 1],
            }
            f.write(json.dumps(row) + "\n")
        f.write(json.dumps({"event": "end", "step": len(losses)}) + "\n")


def test_convergence_flags_a_loss_still_falling(tmp_path):
    _log(tmp_path / "flat.jsonl", [5.0] * 80 + [1.0] * 20)
    _log(tmp_path / "falling.jsonl", [100.0 - i for i in range(100)])
    flat = convergence(str(tmp_path / "flat.jsonl"))
    falling = convergence(str(tmp_path / "falling.jsonl"))
    assert flat["flat"] and flat["relative_change_last_20pct"] == 0
    assert not falling["flat"] and falling["relative_change_last_20pct"] < -0.05
    assert flat["loss_first"] == 5.0 and flat["loss_last"] == 1.0
    assert flat["seg_flat"] and not falling["seg_flat"]  # the CE (here half the total) alone


def test_run_metrics_picks_the_thin_classes_by_name():
    classes = ["road", "pole", "traffic light", "traffic sign"]
    report = {
        "miou": 0.5,
        "per_class_iou": [0.9, 0.2, None, 0.4],
        "boundary_f": {"thresholds": [3, 5], "mean_f": [0.7, 0.8], "strict_mean_f": [0.6, 0.7]},
        "distance": {9: 0.45},
    }
    m = run_metrics(report, classes)
    assert m["iou_pole"] == 0.2 and m["iou_traffic_light"] is None
    assert m["thin_miou"] == pytest.approx(0.3)  # the undefined class is left out
    assert m["f_3px"] == 0.7 and m["strict_f_5px"] == 0.7 and m["distance_miou_crop9"] == 0.45


TINY = ["--steps", "2", "--size", "32", "64", "--train-scenes", "4", "--val-scenes", "2",
        "--batch-size", "2", "--workers", "0", "--no-progress", "--device", "cpu"]  # fmt: skip


@pytest.mark.slow
def test_study_end_to_end_resumes_and_refuses_other_settings(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["ablate", "--variants", "baseline", "gscnn", "--seeds", "0", "1", "--out", str(out)]
    assert main(args + TINY) == 0
    summary = json.loads((out / "summary.json").read_text())
    runs = {(r["variant"], r["seed"]): r for r in summary["runs"]}
    assert set(runs) == {(v, s) for v in ("baseline", "gscnn") for s in (0, 1)}
    for r in runs.values():
        m = r["metrics"]
        assert 0 <= m["miou"] <= 1 and {"f_3px", "strict_f_12px", "thin_miou"} <= set(m)
        assert sorted(k for k in m if k.startswith("distance")) == [
            "distance_miou_crop3",  # the paper's 100 and 200 px of 2048, scaled to 64 px
            "distance_miou_crop6",
        ]
    diff = summary["summary"]["paired"]["gscnn"]["miou"]
    expected = [runs["gscnn", s]["metrics"]["miou"] - runs["baseline", s]["metrics"]["miou"]
                for s in (0, 1)]  # fmt: skip
    assert diff["mean"] == pytest.approx(sum(expected) / 2)
    report = (out / "report.md").read_text()
    assert "| gscnn | 2 |" in report and "Paired difference to baseline" in report
    capsys.readouterr()

    # Run again: every run is skipped, the summary is the same.
    assert main(args + TINY) == 0
    assert capsys.readouterr().out.count("done before, skipped") == 4
    assert json.loads((out / "summary.json").read_text())["summary"] == summary["summary"]

    # An interrupted run (its checkpoint but no final weights or result) resumes from the
    # checkpoint: the same weights, so the same numbers.
    run = out / "runs" / "gscnn" / "seed1"
    (run / "result.json").unlink()
    (run / "model.pt").unlink()
    assert main(args + TINY) == 0
    again = json.loads((run / "result.json").read_text())
    assert again["metrics"] == runs["gscnn", 1]["metrics"]

    # Other settings in the same folder are refused, naming the difference.
    other = TINY.copy()
    other[other.index("--batch-size") + 1] = "1"
    assert main(args + other) != 0
    assert "batch_size: 2 there vs 1 now" in capsys.readouterr().err


def test_bad_arguments_are_reported(tmp_path, capsys):
    assert main(["ablate", "--seeds", "1", "1", "--out", str(tmp_path)] + TINY) != 0
    assert "--seeds has repeats" in capsys.readouterr().err
    assert main(["ablate", "--dataset", "cityscapes", "--out", str(tmp_path)] + TINY) != 0
    assert "--data-root" in capsys.readouterr().err
    assert main(["ablate", "--steps", "0", "--out", str(tmp_path)] + TINY[2:]) != 0
    assert "--steps must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_the_same_command_runs_on_cityscapes(tmp_path):
    """`--dataset cityscapes --data-root` on a tiny tree in Cityscapes' layout (synthetic scenes
    written as leftImg8bit / gtFine labelIds PNGs)."""
    from gscnn_ops.data import render_scene, write_png
    from gscnn_ops.data.cityscapes import trainids_to_labelids

    root = tmp_path / "cityscapes"
    for split, seeds in (("train", (0, 1)), ("val", (2,))):
        for s in seeds:
            image, label = render_scene(s, 32, 64)
            stem = f"town_{s:06d}_000019"
            write_png(root / "leftImg8bit" / split / "town" / f"{stem}_leftImg8bit.png", image)
            # Ignore (255) -> label id 0, "unlabeled", which maps back to 255.
            labelids = torch.where(label == 255, 0, trainids_to_labelids(label.clamp_max(18)))
            write_png(root / "gtFine" / split / "town" / f"{stem}_gtFine_labelIds.png", labelids)
    out = tmp_path / "study"
    args = ["ablate", "--dataset", "cityscapes", "--data-root", str(root), "--seeds", "0"]
    args += ["--variants", "baseline", "gscnn", "--crop-size", "32", "64", "--out", str(out)]
    assert main(args + TINY) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {r["variant"] for r in summary["runs"]} == {"baseline", "gscnn"}
    assert summary["settings"]["dataset"] == "cityscapes"
    for r in summary["runs"]:
        assert 0 <= r["metrics"]["miou"] <= 1 and "iou_pole" in r["metrics"]


def test_the_examples_in_the_module_run():
    import doctest

    from gscnn_ops.engine import ablate

    result = doctest.testmod(ablate, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0
