"""``gscnn ablate``: does the shape stream help? A seeded ablation study, reported with its spread.

Trains and evaluates each variant once per seed, everything else equal (data, trunk, steps,
batch, augmentations, evaluation):

- ``baseline``: DeepLabV3+ (the regular stream and its decoder; cross-entropy only);
- ``gscnn-no-dual``: GSCNN with its edge loss but without the dual-task loss and regulariser 2;
- ``gscnn-att-selected``: the full GSCNN and joint loss, regulariser 2 divided by the pixels it
  selects (the release's normalisation);
- ``gscnn``: the full GSCNN and joint loss as ``gscnn train`` trains it, regulariser 2 divided by
  the valid pixels (see :class:`~gscnn_ops.models.GSCNNLoss`'s ``att_norm``).

A seed fixes the training scenes, the initialisation, the data order and the augmentations, so
the variants of one seed differ only in the model and loss: the comparison with the baseline is
*paired by seed* (mean difference and its 95 % Student-t confidence interval). Every run is
evaluated on the same validation set: mIoU, the thin classes' IoU (pole, traffic light, traffic
sign), boundary F at 3/5/9/12 px in the release's and the strict convention, and the paper's
distance-based mIoU at two crop factors.

Interrupting is safe: each finished run leaves ``result.json`` and is skipped when the same
command is run again; an unfinished one resumes exactly from its last checkpoint.
"""

import argparse
import json
import math
import os
import statistics
import time
from typing import Dict, List, Sequence

import torch

from ..data import SegmentationSamples, build_dataset
from ..data.prepare import collate
from . import _cli
from .checkpoint import load_model
from .evaluate import _nan_to_none, crop_box, evaluate, report_to_json
from .train import TrainConfig, train

# Variant name -> the TrainConfig fields it sets (everything else is shared).
VARIANTS: Dict[str, dict] = {
    "baseline": dict(shape_stream=False, dual_weight=0.0, att_weight=0.0),
    "gscnn-no-dual": dict(shape_stream=True, dual_weight=0.0, att_weight=0.0),
    "gscnn-att-selected": dict(shape_stream=True, att_norm="selected"),
    "gscnn": dict(shape_stream=True, att_norm="valid"),
}
THIN_CLASSES = ("pole", "traffic light", "traffic sign")
# Crop factors of the paper's distance-based evaluation are in pixels of 2048-wide images.
PAPER_WIDTH = 2048
# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (then the normal's).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
# The settings that make results comparable: a study folder refuses other values of these.
STUDY_KEYS = (
    "dataset",
    "data_root",
    "backbone",
    "output_stride",
    "shape_stride",
    "steps",
    "batch_size",
    "lr",
    "size",
    "train_scenes",
    "val_scenes",
    "crop_factors",
)


def t_quantile(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"t_quantile: degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation and the 95 % confidence interval of the mean (None where
    undefined: one value has no spread).

    Examples:
        >>> from gscnn_ops.engine.ablate import summarize
        >>> s = summarize([1.0, 2.0, 3.0])
        >>> s["mean"], s["std"], [round(v, 3) for v in s["ci95"]]
        (2.0, 1.0, [-0.484, 4.484])
    """
    values = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    mean = statistics.fmean(values)
    if len(values) == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95": None}
    std = statistics.stdev(values)
    half = t_quantile(len(values) - 1) * std / math.sqrt(len(values))
    return {"n": len(values), "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def run_metrics(report: dict, classes: Sequence[str]) -> Dict[str, float]:
    """The study's numbers of one evaluated run (fractions, NaN-free: None where undefined)."""
    iou = report["per_class_iou"]
    bf = report["boundary_f"]
    out = {"miou": report["miou"]}
    thin = []
    for name in THIN_CLASSES:
        if name in classes:
            v = iou[list(classes).index(name)]
            out[f"iou_{name.replace(' ', '_')}"] = v
            thin.append(v)
    out["thin_miou"] = summarize(thin)["mean"]
    for t, f, strict in zip(bf["thresholds"], bf["mean_f"], bf["strict_mean_f"]):
        out[f"f_{t:g}px"] = f
        out[f"strict_f_{t:g}px"] = strict
    for c, v in report.get("distance", {}).items():
        out[f"distance_miou_crop{c}"] = v
    return out


def convergence(log_path: str) -> dict:
    """Whether the training loss was flat over the last 20 % of steps: the relative change of
    the mean logged loss from steps 80-90 % to 90-100 % (flat: under 5 %), for the total loss
    and for its segmentation cross-entropy alone (the one term every variant has)."""
    with open(log_path) as f:
        rows = [r for r in map(json.loads, f) if "loss_total" in r]
    last = rows[-1]["step"]

    def change(term):
        a = [r[term] for r in rows if 0.8 * last < r["step"] <= 0.9 * last]
        b = [r[term] for r in rows if 0.9 * last < r["step"]]
        if not a or not b:
            return None
        return (statistics.fmean(b) - statistics.fmean(a)) / abs(statistics.fmean(a))

    total, seg = change("loss_total"), change("loss_seg")
    att = [r["loss_att"] for r in rows if r["step"] <= 0.2 * last]
    return {
        "loss_first": rows[0]["loss_total"],
        "loss_last": rows[-1]["loss_total"],
        "seg_loss_last": rows[-1]["loss_seg"],
        "relative_change_last_20pct": total,
        "flat": None if total is None else abs(total) < 0.05,
        "seg_relative_change_last_20pct": seg,
        "seg_flat": None if seg is None else abs(seg) < 0.05,
        # Regulariser 2 early in training (computed even where its weight is 0): its spread
        # between consecutive logs.
        "att_std_first_20pct": statistics.stdev(att) if len(att) > 1 else None,
    }


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, allow_nan=False)
    os.replace(tmp, path)


def _train_config(args, variant: str, seed: int, out: str) -> TrainConfig:
    return TrainConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        synthetic_length=args.train_scenes,
        synthetic_size=tuple(args.size),
        crop_size=tuple(args.crop_size) if args.crop_size else None,
        backbone=args.backbone,
        pretrained=args.pretrained,
        output_stride=args.output_stride,
        shape_stride=args.shape_stride,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        seed=seed,
        device=args.device,
        out=out,
        checkpoint_every=max(1, args.steps // 4),
        log_every=max(1, args.steps // 50),
        progress=args.progress,
        tensorboard=False,
        **VARIANTS[variant],
    )


def _run_one(args, variant, seed, val_loader, classes, factors) -> dict:
    """Trains (or resumes) and evaluates one (variant, seed); returns its result record."""
    out = os.path.join(args.out, "runs", variant, f"seed{seed}")
    cfg = _train_config(args, variant, seed, out)
    checkpoint = os.path.join(out, "checkpoint.pt")
    if os.path.exists(checkpoint) and not os.path.exists(os.path.join(out, "model.pt")):
        cfg.resume = checkpoint
    t0 = time.perf_counter()
    if not os.path.exists(os.path.join(out, "model.pt")):
        train(cfg)
    train_seconds = time.perf_counter() - t0
    model, _ = load_model(os.path.join(out, "model.pt"), args.device)
    report = evaluate(
        model,
        val_loader,
        len(classes),
        thresholds=(3, 5, 9, 12),
        device=args.device,
        crop_factors=factors,
        progress=args.progress,
    )
    return _nan_to_none(
        {
            "variant": variant,
            "seed": seed,
            "metrics": run_metrics(report, classes),
            "convergence": convergence(os.path.join(out, "log.jsonl")),
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - t0 - train_seconds,
            "report": report_to_json(report, classes),
        }
    )


# Pairs of variants compared besides each one with the baseline: what the dual-task loss and
# regulariser 2 add to the shape stream, and the effect of regulariser 2's normalisation.
CONTRASTS = (("gscnn", "gscnn-no-dual"), ("gscnn", "gscnn-att-selected"))


def _paired(a: Dict[int, dict], b: Dict[int, dict]) -> dict:
    """Per metric, the summary of a - b over the seeds both have (paired by seed)."""
    common = sorted(set(a) & set(b))
    keys = sorted({k for m in a.values() for k in m})
    out = {
        k: summarize(
            [
                a[s][k] - b[s][k]
                for s in common
                if a[s].get(k) is not None and b[s].get(k) is not None
            ]
        )
        for k in keys
    }
    out["seeds"] = common
    return out


def study_summary(results: List[dict], baseline: str = "baseline") -> dict:
    """Per variant, mean/std/CI over seeds of every metric; per variant the paired (by seed)
    difference to ``baseline`` over the seeds both have; and the same for :data:`CONTRASTS`.

    Examples:
        >>> from gscnn_ops.engine.ablate import study_summary
        >>> runs = [{"variant": v, "seed": s, "metrics": {"miou": m}}
        ...         for v, s, m in [("baseline", 0, 0.5), ("baseline", 1, 0.6),
        ...                         ("gscnn", 0, 0.55), ("gscnn", 1, 0.67)]]
        >>> s = study_summary(runs)
        >>> round(s["variants"]["gscnn"]["miou"]["mean"], 3)
        0.61
        >>> round(s["paired"]["gscnn"]["miou"]["mean"], 3)
        0.06
    """
    by = {}
    for r in results:
        by.setdefault(r["variant"], {})[r["seed"]] = r["metrics"]
    variants, paired = {}, {}
    for name, seeds in by.items():
        keys = sorted({k for m in seeds.values() for k in m})
        variants[name] = {k: summarize([m.get(k) for m in seeds.values()]) for k in keys}
        variants[name]["seeds"] = sorted(seeds)
        if name != baseline and baseline in by:
            paired[name] = _paired(seeds, by[baseline])
    contrasts = {f"{a} - {b}": _paired(by[a], by[b]) for a, b in CONTRASTS if a in by and b in by}
    return {"variants": variants, "paired": paired, "baseline": baseline, "contrasts": contrasts}


def _pm(s: dict) -> str:
    if s is None or s["mean"] is None:
        return "-"
    if s["std"] is None:
        return f"{100 * s['mean']:.1f}"
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def _ci(s: dict) -> str:
    if s is None or s["mean"] is None:
        return "-"
    if s["ci95"] is None:
        return f"{100 * s['mean']:+.1f}"
    lo, hi = s["ci95"]
    return f"{100 * s['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _change(v) -> str:
    return "-" if v is None else f"{100 * v:+.1f} %"


def _yes(v) -> str:
    return "-" if v is None else ("yes" if v else "no")


def format_study(summary: dict, results: List[dict], settings: dict) -> str:
    """The study as Markdown: settings, per-variant mean ± std, paired differences with their
    95 % confidence intervals, and the convergence and regulariser-2 checks."""
    variants, paired = summary["variants"], summary["paired"]
    order = [v for v in VARIANTS if v in variants] + [v for v in variants if v not in VARIANTS]
    any_metrics = next(iter(variants.values()))
    distance = sorted(
        (k for k in any_metrics if k.startswith("distance_miou_crop")),
        key=lambda k: int(k.rsplit("crop", 1)[1]),
    )
    columns = (
        [("miou", "mIoU"), ("thin_miou", "thin IoU")]
        + [(f"f_{t}px", f"F@{t}") for t in (3, 5, 9, 12)]
        + [(f"strict_f_{t}px", f"strict F@{t}") for t in (3, 5, 9, 12)]
        + [(k, f"dist. mIoU crop {k.rsplit('crop', 1)[1]}") for k in distance]
    )
    columns = [(k, h) for k, h in columns if k in any_metrics]
    s = settings
    lines = [
        "# gscnn ablate",
        "",
        f"{s['dataset']} data ({s['train_scenes']} training / {s['val_scenes']} validation "
        f"scenes of {s['size'][0]}x{s['size'][1]} for synthetic), {s['backbone']} trunk at "
        f"output stride {s['output_stride']}, shape stream at 1/{s['shape_stride']}, "
        f"{s['steps']} SGD steps of batch {s['batch_size']} (lr {s['lr']}), device "
        f"{s['device']}; seeds {s['seeds']}. Percent; mean ± sample std over seeds.",
        "",
        "| variant | n | " + " | ".join(h for _, h in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for v in order:
        n = len(variants[v]["seeds"])
        lines.append(
            f"| {v} | {n} | " + " | ".join(_pm(variants[v].get(k)) for k, _ in columns) + " |"
        )
    if paired:
        lines += [
            "",
            f"Paired difference to {summary['baseline']} (same seed), mean "
            "[95 % confidence interval]; an interval that contains 0 is no evidence of an "
            "effect:",
            "",
            "| variant | seeds | " + " | ".join(h for _, h in columns) + " |",
            "|---|---|" + "---|" * len(columns),
        ]
        for v in order:
            if v in paired:
                lines.append(
                    f"| {v} | {len(paired[v]['seeds'])} | "
                    + " | ".join(_ci(paired[v].get(k)) for k, _ in columns)
                    + " |"
                )
    if summary.get("contrasts"):
        lines += [
            "",
            "Paired differences between GSCNN variants (same seed), mean [95 % confidence "
            "interval]:",
            "",
            "| difference | seeds | " + " | ".join(h for _, h in columns) + " |",
            "|---|---|" + "---|" * len(columns),
        ]
        for name, d in summary["contrasts"].items():
            lines.append(
                f"| {name} | {len(d['seeds'])} | "
                + " | ".join(_ci(d.get(k)) for k, _ in columns)
                + " |"
            )
    lines += [
        "",
        "Convergence (relative change of the mean training loss from 80-90 % to 90-100 % of "
        "the steps, total and segmentation CE alone; flat: under 5 %) and regulariser 2 early "
        "on (std of its logged value over the first 20 % of steps; computed, unweighted, where "
        "the variant does not train with it):",
        "",
        "| variant | seed | loss first -> last | change last 20 % | flat | CE change | CE flat "
        "| att std first 20 % | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (order.index(r["variant"]), r["seed"])):
        c = r["convergence"]
        att = c.get("att_std_first_20pct")
        lines.append(
            f"| {r['variant']} | {r['seed']} | {c.get('loss_first', 0):.2f} -> "
            f"{c.get('loss_last', 0):.2f} | {_change(c.get('relative_change_last_20pct'))} | "
            f"{_yes(c.get('flat'))} | {_change(c.get('seg_relative_change_last_20pct'))} | "
            f"{_yes(c.get('seg_flat'))} | {'-' if att is None else f'{att:.3f}'} | "
            f"{r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ablate",
        help="seeded ablation: baseline vs GSCNN variants, with the spread over seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=tuple(VARIANTS),
        default=list(VARIANTS),
        help="variants to run (default all)",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per variant and seed"
    )
    p.add_argument("--out", default="gscnn-ablation", help="study folder (resumable)")
    p.add_argument("--dataset", choices=("synthetic", "cityscapes"), default="synthetic")
    p.add_argument("--data-root", help="Cityscapes root (with --dataset cityscapes)")
    p.add_argument("--backbone", default="resnet18", help="trunk (default resnet18)")
    p.add_argument("--pretrained", help="ImageNet weights of the trunk (nothing is downloaded)")
    p.add_argument("--output-stride", type=int, choices=(8, 16), default=16)
    p.add_argument("--shape-stride", type=int, choices=(1, 2), default=2)
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--batch-size", type=int, default=4, help="images per step (default 4)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument(
        "--size", type=int, nargs=2, default=(96, 192), metavar=("H", "W"), help="synthetic size"
    )
    p.add_argument(
        "--crop-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="training crop (default: the synthetic size; 720x720 for Cityscapes)",
    )
    p.add_argument("--train-scenes", type=int, default=64, help="synthetic training scenes")
    p.add_argument("--val-scenes", type=int, default=64, help="synthetic validation scenes")
    p.add_argument(
        "--crop-factors",
        type=int,
        nargs="+",
        default=[100, 200],
        help="distance-based evaluation, in pixels of a 2048-wide image (the paper's unit), "
        "scaled to the data's width (default 100 200)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(fn=run)
    return p


def _check_study(args, settings: dict) -> None:
    """A study folder holds one setting: refuse to mix results of another into it."""
    path = os.path.join(args.out, "study.json")
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        diff = {k: (stored.get(k), settings[k]) for k in STUDY_KEYS if stored.get(k) != settings[k]}
        if diff:
            lines = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
            raise _cli.UsageError(
                f"{args.out} holds a study with other settings ({lines}); "
                f"use another --out or the same settings"
            )
    os.makedirs(args.out, exist_ok=True)
    _write_json(path, {k: settings[k] for k in STUDY_KEYS})


def _time_left(seconds: Dict[str, List[float]], plan) -> float:
    """Estimated seconds for the runs in ``plan``: each variant's mean so far (the variants'
    mean for one not run yet)."""
    means = {v: statistics.fmean(t) for v, t in seconds.items()}
    overall = statistics.fmean(means.values())
    return sum(means.get(v, overall) for v, _ in plan)


def run(args) -> int:
    try:
        _cli.device(args.device)
        for name in ("steps", "batch_size", "train_scenes", "val_scenes", "workers"):
            if getattr(args, name) < (0 if name == "workers" else 1):
                raise _cli.UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if args.dataset == "cityscapes" and not args.data_root:
            raise _cli.UsageError("--dataset cityscapes needs --data-root")
        if len(set(args.seeds)) != len(args.seeds):
            raise _cli.UsageError(f"--seeds has repeats: {args.seeds}")
        settings = {k: v for k, v in vars(args).items() if k != "fn"}
        settings["size"] = list(args.size)
        options = {}
        if args.dataset == "synthetic":
            options = dict(length=args.val_scenes, height=args.size[0], width=args.size[1])
        # One validation set for every run (the synthetic one drawn with seed 0).
        val = build_dataset(args.dataset, args.data_root, "val", **options)
        width = val[0][0].shape[-1]
        height = val[0][0].shape[-2]
        factors = sorted({round(c * width / PAPER_WIDTH) for c in args.crop_factors})
        for c in factors:
            crop_box(height, width, c)  # ValueError if the crop leaves nothing
        _check_study(args, settings)
    except (*_cli.SETUP_ERRORS, ValueError) as e:
        return _cli.fail("ablate", e)
    loader = torch.utils.data.DataLoader(
        SegmentationSamples(val), batch_size=4, num_workers=args.workers, collate_fn=collate
    )
    classes = list(val.classes)
    plan = [(v, s) for s in args.seeds for v in args.variants]
    results, t_start, seconds = [], time.perf_counter(), {}
    print(
        f"gscnn ablate: {len(args.variants)} variants x {len(args.seeds)} seeds = {len(plan)} "
        f"runs of {args.steps} steps; distance crop factors {factors} px; study in {args.out}"
    )
    for k, (variant, seed) in enumerate(plan, 1):
        path = os.path.join(args.out, "runs", variant, f"seed{seed}", "result.json")
        if os.path.exists(path):
            with open(path) as f:
                result = json.load(f)
            # Read from the run's log again: the summary follows this version's checks.
            result["convergence"] = convergence(os.path.join(os.path.dirname(path), "log.jsonl"))
            results.append(result)
            print(f"[{k}/{len(plan)}] {variant} seed {seed}: done before, skipped")
            continue
        print(f"[{k}/{len(plan)}] {variant} seed {seed}: training and evaluating")
        t_run = time.perf_counter()
        result = _run_one(args, variant, seed, loader, classes, factors)
        _write_json(path, result)
        results.append(result)
        seconds.setdefault(variant, []).append(time.perf_counter() - t_run)
        m = result["metrics"]
        print(
            f"[{k}/{len(plan)}] {variant} seed {seed}: mIoU {100 * m['miou']:.1f}, F@3px "
            f"{100 * m['f_3px']:.1f}; {(time.perf_counter() - t_start) / 60:.1f} min so far, "
            f"about {_time_left(seconds, plan[k:]) / 60:.0f} min left"
        )
    summary = study_summary(results)
    _write_json(
        os.path.join(args.out, "summary.json"),
        {"settings": settings, "summary": summary, "runs": [
            {k: r[k] for k in ("variant", "seed", "metrics", "convergence", "train_seconds")}
            for r in results
        ]},
    )  # fmt: skip
    markdown = format_study(summary, results, settings)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(markdown)
    print("\n" + markdown)
    print(f"gscnn ablate: report in {os.path.join(args.out, 'report.md')} and summary.json")
    return 0
