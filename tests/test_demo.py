"""`gscnn demo` (the README's main command), shrunk: it trains, evaluates, compares with the
baseline, and writes a report and pictures that are what they say."""

import json

import pytest
from PIL import Image

from gscnn_ops.cli import main


@pytest.mark.slow
def test_demo_with_ablation_writes_report_and_pictures(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(
        [
            "demo",
            "--steps",
            "3",
            "--size",
            "64",
            "96",
            "--train-scenes",
            "8",
            "--val-scenes",
            "2",
            "--batch-size",
            "2",
            "--examples",
            "1",
            "--workers",
            "0",
            "--ablation",
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"gscnn", "baseline", "settings"}
    for name in ("gscnn", "baseline"):
        r = report[name]
        assert 0 <= r["miou"] <= 1 and len(r["per_class_iou"]) == 19
        assert len(r["boundary_f"]["mean_f"]) == 4
        assert r["loss_last"] < r["loss_first"]  # rc 0 claims exactly this
    assert rc == 0
    assert "| gscnn |" in printed and "| baseline |" in printed
    md = (out / "report.md").read_text()
    assert f"{100 * report['gscnn']['miou']:.1f}" in md
    panel = Image.open(out / "examples" / "scene0_panel.png")
    # input | truth | gscnn prediction | gscnn edge | baseline prediction, 4 px gaps
    assert panel.size == (5 * 96 + 4 * 4, 64) and panel.mode == "RGB"
    for kind in ("seg", "overlay", "edge", "gate1", "gate2", "gate3"):
        assert Image.open(out / "examples" / "gscnn" / f"scene0_{kind}.png").size == (96, 64)
    assert not (out / "examples" / "baseline" / "scene0_edge.png").exists()


def test_demo_rejects_bad_settings(tmp_path, capsys):
    assert main(["demo", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
