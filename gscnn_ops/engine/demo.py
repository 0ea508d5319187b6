"""``gscnn demo``: the project's main job on its embedded data, end to end on a CPU in minutes.

1. builds the synthetic street scenes (a training set and a disjoint validation set);
2. trains a small GSCNN (ResNet-18 trunk, the full shape stream, the joint loss with the fused
   kernels, the release's augmentations) for a bounded number of steps;
3. evaluates it: mIoU and boundary F at 3/5/9/12 px (both conventions);
4. with ``--ablation``, trains and evaluates the DeepLabV3+ baseline (no shape stream) the same
   way, and prints both side by side;
5. writes ``report.json``, ``report.md`` and example pictures (input, ground truth, prediction,
   edge map and the three gate maps of a few validation scenes) under ``--out``.

Few steps from scratch on a CPU give a rough model (the numbers are not Cityscapes numbers); the
point is that every piece runs, learns and is measured. ``--steps`` trains longer.
"""

import argparse
import json
import os
import time
import warnings

import torch

from ..data import SegmentationSamples, build_dataset, colorize
from ..data.io import read_image, write_png
from ..data.prepare import collate
from . import _cli
from .checkpoint import load_model
from .evaluate import evaluate, format_report, report_to_json
from .predict import predict_images
from .train import TrainConfig, train


def _train_and_eval(name: str, args, shape_stream: bool, val_loader, classes) -> dict:
    out = os.path.join(args.out, name)
    cfg = TrainConfig(
        dataset="synthetic",
        synthetic_length=args.train_scenes,
        synthetic_size=tuple(args.size),
        backbone=args.backbone,
        output_stride=args.output_stride,
        shape_stream=shape_stream,
        shape_stride=args.shape_stride,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        seed=args.seed,
        device=args.device,
        out=out,
        checkpoint_every=args.steps,
        log_every=max(1, args.steps // 10),
        progress=args.progress,
        tensorboard=False,
    )
    print(
        f"\n== {name}: training {args.steps} steps of {args.batch_size} "
        f"{args.size[0]}x{args.size[1]} scenes ({args.backbone} at output stride "
        f"{args.output_stride}, "
        f"{f'shape stream at 1/{args.shape_stride}' if shape_stream else 'no shape stream'}, "
        f"{args.device})"
    )
    t0 = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - t0
    with open(os.path.join(out, "log.jsonl")) as f:
        losses = [r["loss_total"] for r in map(json.loads, f) if "loss_total" in r]
    model, meta = load_model(os.path.join(out, "model.pt"), args.device)
    report = evaluate(
        model,
        val_loader,
        len(classes),
        thresholds=(3, 5, 9, 12),
        device=args.device,
        progress=args.progress,
    )
    print(format_report(report, classes))
    return {
        "model": model,
        "meta": meta,
        "report": report,
        "train_seconds": seconds,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "checkpoint": os.path.join(out, "model.pt"),
    }


def _examples(runs: dict, val, args) -> list:
    """Example pictures of the first validation scenes: the inputs and ground truth, and for
    each model its prediction files (seg, overlay, edge, gates) and a one-row panel."""
    folder = os.path.join(args.out, "examples")
    written = []
    for i in range(min(args.examples, len(val))):
        image, label = val[i]
        path = os.path.join(folder, f"scene{i}.png")
        write_png(path, image)
        write_png(os.path.join(folder, f"scene{i}_truth.png"), colorize(label, val.palette))
        written += [path, os.path.join(folder, f"scene{i}_truth.png")]
        row = [image, colorize(label, val.palette)]
        for name, run in runs.items():
            with warnings.catch_warnings():  # the baseline has no edge or gate maps: expected
                warnings.simplefilter("ignore", UserWarning)
                files = predict_images(
                    run["model"], run["meta"], [path], os.path.join(folder, name), progress=False
                )
            written += files
            # The panel reuses the pictures just written (no second forward pass).
            for kind in ("seg", "edge"):
                written_kind = [f for f in files if f.endswith(f"_{kind}.png")]
                if written_kind:  # the baseline writes no edge map
                    row.append(read_image(written_kind[0]))
        gap = torch.full((3, image.shape[1], 4), 255, dtype=torch.uint8)
        panel = torch.cat([t for pic in row for t in (pic, gap)][:-1], dim=2)
        write_png(os.path.join(folder, f"scene{i}_panel.png"), panel)
        written.append(os.path.join(folder, f"scene{i}_panel.png"))
    return written


def _markdown(runs: dict, classes, args) -> str:
    lines = [
        "# gscnn demo report",
        "",
        f"Synthetic street scenes ({args.train_scenes} training, {args.val_scenes} "
        f"validation, {args.size[0]}x{args.size[1]}), {args.backbone} trunk at output stride "
        f"{args.output_stride}, shape stream at 1/{args.shape_stride} resolution, {args.steps} "
        f"steps of batch {args.batch_size}, device {args.device}.",
        "",
        "| model | mIoU | F@3px | F@5px | F@9px | F@12px | strict F@5px | train s "
        "| loss first -> last |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        r, bf = run["report"], run["report"]["boundary_f"]
        f = " | ".join(f"{100 * v:.1f}" for v in bf["mean_f"])
        lines.append(
            f"| {name} | {100 * r['miou']:.1f} | {f} | "
            f"{100 * bf['strict_mean_f'][1]:.1f} | {run['train_seconds']:.0f} | "
            f"{run['loss_first']:.2f} -> {run['loss_last']:.2f} |"
        )
    lines += [
        "",
        "F: boundary F-score (DAVIS measure), the release's mean over all images; "
        "strict: each class averaged only over the images where it occurs.",
        "",
        "Pictures: `examples/scene*_panel.png` = input | ground truth | prediction | edge "
        "map, per model; the per-model folders hold the seg, overlay, edge and gate PNGs.",
    ]
    return "\n".join(lines) + "\n"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="train and evaluate GSCNN on embedded synthetic data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--steps",
        type=int,
        default=100,
        help="training steps per model (default 100: 2-3 minutes on 2 CPU cores)",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="also train the DeepLabV3+ baseline the same way and compare",
    )
    p.add_argument("--out", default="gscnn-demo", help="output folder (default gscnn-demo)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbone", default="resnet18")
    # The demo's defaults are chosen for time on 2 CPU cores (benchmarks/RESULTS.md): output
    # stride 16 and the shape stream at half resolution cost about half of a step at 8 and full
    # resolution; `--output-stride 8 --shape-stride 1` is the paper's setting.
    p.add_argument("--output-stride", type=int, choices=(8, 16), default=16)
    p.add_argument("--shape-stride", type=int, choices=(1, 2), default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--size", type=int, nargs=2, default=(96, 192), metavar=("H", "W"))
    p.add_argument("--train-scenes", type=int, default=64)
    p.add_argument("--val-scenes", type=int, default=16)
    p.add_argument("--examples", type=int, default=3, help="validation scenes to draw")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(fn=run)
    return p


def run(args) -> int:
    try:
        _cli.device(args.device)
        for name in ("steps", "batch_size", "train_scenes", "val_scenes"):
            if getattr(args, name) < 1:
                raise _cli.UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if min(args.size) < 32:
            raise _cli.UsageError(f"--size must be at least 32 x 32, got {args.size}")
    except _cli.SETUP_ERRORS as e:
        return _cli.fail("demo", e)
    import gscnn_ops

    print(
        f"gscnn_ops {gscnn_ops.__version__} demo (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads); output in {args.out}"
    )
    val = build_dataset(
        "synthetic",
        split="val",
        length=args.val_scenes,
        height=args.size[0],
        width=args.size[1],
        seed=args.seed,
    )
    val_loader = torch.utils.data.DataLoader(
        SegmentationSamples(val), batch_size=4, num_workers=args.workers, collate_fn=collate
    )
    classes = list(val.classes)
    runs = {"gscnn": _train_and_eval("gscnn", args, True, val_loader, classes)}
    if args.ablation:
        runs["baseline"] = _train_and_eval("baseline", args, False, val_loader, classes)
    pictures = _examples(runs, val, args)

    report = {
        name: dict(
            report_to_json(run["report"], classes),
            train_seconds=run["train_seconds"],
            loss_first=run["loss_first"],
            loss_last=run["loss_last"],
            checkpoint=run["checkpoint"],
        )
        for name, run in runs.items()
    }
    report["settings"] = {k: v for k, v in vars(args).items() if k != "fn"}
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1, allow_nan=False)
    markdown = _markdown(runs, classes, args)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(markdown)
    print("\n" + markdown)
    print(
        f"report: {os.path.join(args.out, 'report.md')} and report.json; "
        f"{len(pictures)} pictures in {os.path.join(args.out, 'examples')}"
    )
    # The one claim the demo can check by itself: training lowered the loss.
    failed = [n for n, r in runs.items() if not r["loss_last"] < r["loss_first"]]
    if failed:
        print(f"gscnn demo: FAILED: the training loss did not go down for {failed}")
        return 1
    return 0
