"""Evaluation of a segmentation model over a data set: mIoU from one confusion matrix, boundary
F-scores (both the release's convention and the strict one), and optionally the paper's
distance-based evaluation; the ``gscnn eval`` subcommand.

mIoU: :class:`~gscnn_ops.metrics.ConfusionMatrix` (re-exported here) over the whole set.
"""

import argparse
import json
import math
import os
from numbers import Integral
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.build import DATASETS, build_dataset
from ..data.classes import IGNORE_INDEX
from ..data.errors import DataError
from ..data.prepare import SegmentationSamples, collate
from ..metrics import BoundaryFScore, ConfusionMatrix
from . import _cli
from .checkpoint import load_model
from .inference import infer


def check_crop_factor(crop_factor) -> int:
    """``crop_factor`` as an int, or ValueError if it is not a non-negative integer."""
    if isinstance(crop_factor, bool) or not isinstance(crop_factor, Integral) or crop_factor < 0:
        raise ValueError(f"crop factors must be non-negative integers, got {crop_factor!r}")
    return int(crop_factor)


def crop_box(height: int, width: int, crop_factor: int):
    """(top, left, crop height, crop width) of the paper's distance-based evaluation: the centre
    crop removing ``crop_factor`` pixels from each side horizontally and
    ``round(crop_factor * H / W)`` vertically (the crop keeps the image's aspect ratio)."""
    crop_factor = check_crop_factor(crop_factor)
    cv = round(crop_factor * height / width)
    ch, cw = height - 2 * cv, width - 2 * crop_factor
    if ch < 1 or cw < 1:
        raise ValueError(
            f"crop factor {crop_factor} leaves nothing of a {height}x{width} image "
            f"(it must be below {(width + 1) // 2})"
        )
    return cv, crop_factor, ch, cw


def _nearest_index(out_len: int, start: int, in_len: int, device) -> Tensor:
    """Source indices of a nearest-neighbour resize of [start, start + in_len) to out_len."""
    return start + torch.div(
        torch.arange(out_len, device=device) * in_len, out_len, rounding_mode="floor"
    )


def crop_and_zoom(image: Tensor, canny: Tensor, label: Tensor, crop_factor: int):
    """The inputs of one crop factor: the centre crop (:func:`crop_box`) of the batch resized back
    to the full size — the normalised image bilinearly, Canny edges and labels by nearest
    neighbour (the same source pixels for both). Canny is *not* recomputed on the zoomed image:
    edges of the original image, magnified, like every other structure in it. Crop factor 0 is
    the batch itself."""
    h, w = image.shape[-2:]
    top, left, ch, cw = crop_box(h, w, crop_factor)
    if (ch, cw) == (h, w):
        return image, canny, label
    image = F.interpolate(
        image[..., top : top + ch, left : left + cw],
        size=(h, w),
        mode="bilinear",
        align_corners=False,
    )
    rows = _nearest_index(h, top, ch, label.device)[:, None]
    cols = _nearest_index(w, left, cw, label.device)[None, :]
    canny = canny[..., rows, cols] if canny is not None else None
    return image, canny, label[..., rows, cols]


def _to_list(t: Tensor):
    """float64 tensor -> nested lists with None for NaN (JSON has no NaN)."""
    return (
        [_to_list(r) for r in t]
        if t.dim() > 1
        else [None if math.isnan(v) else v for v in t.tolist()]
    )


def boundary_report(bf: BoundaryFScore) -> dict:
    """The JSON-able summary of a :class:`BoundaryFScore` (per-class lists indexed by class)."""
    r = bf.compute()
    s = r["strict"]
    return {
        "thresholds": list(r["thresholds"]),
        "radii": {f"{h}x{w}": radii for (h, w), radii in r["radii"].items()},
        "mean_f": _to_list(r["mean_f"]),
        "mean_precision": _to_list(r["mean_precision"]),
        "mean_recall": _to_list(r["mean_recall"]),
        "strict_mean_f": _to_list(s["mean_f"]),
        "strict_mean_precision": _to_list(s["mean_precision"]),
        "strict_mean_recall": _to_list(s["mean_recall"]),
        "per_class_f": _to_list(r["per_class"]["f"].T),  # [K][T]
        "per_class_strict_f": _to_list(s["per_class"]["f"].T),  # [K][T], None: never present
        "images_present": s["images_present"].tolist(),
    }


def evaluate(
    model,
    loader,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    thresholds: Sequence[float] = (3, 5, 9, 12),
    device="cpu",
    tile=None,
    amp_dtype=None,
    crop_factors: Optional[Sequence[int]] = None,
    progress: bool = True,
    overlap: float = 1 / 3,
) -> dict:
    """Evaluates ``model`` (moved to ``device``, run in eval mode, its mode restored afterwards)
    on the batches of ``loader`` (dicts with "image", "canny", "label", as
    :class:`~gscnn_ops.data.SegmentationSamples` makes them). ``tile``, ``overlap`` and
    ``amp_dtype`` go to :func:`~gscnn_ops.engine.inference.infer`.

    Returns a JSON-able dict, lists indexed by class (see :func:`report_to_json` for names)::

        {"num_images": int, "num_classes": K, "ignore_index": int,
         "miou": float, "per_class_iou": [float or None] * K, "pixel_accuracy": float,
         "confusion_matrix": [[int] * K] * K   (rows: target, columns: prediction),
         "boundary_f": {"thresholds": [T], "radii": {"HxW": [px] * T},
                        "mean_f", "mean_precision", "mean_recall": [T]      (release convention),
                        "strict_mean_f", "strict_mean_precision", "strict_mean_recall": [T],
                        "per_class_f": [K][T], "per_class_strict_f": [K][T] (None: never present),
                        "images_present": [K]},
         "distance": {crop factor: miou}   (only with crop_factors)}

    Distance-based evaluation (the paper's; the release has no code for it): for each crop
    factor, every image is cropped and zoomed back to full size (:func:`crop_and_zoom`), run
    through the model, and its prediction compared with the equally zoomed labels; the value is
    the mIoU over the set. Crop factor 0 reuses the plain predictions (the crop is the image).
    """
    dev = torch.device(device)
    factors = [check_crop_factor(c) for c in (crop_factors or ())]
    cm = ConfusionMatrix(num_classes, ignore_index)
    bf = BoundaryFScore(num_classes, thresholds, ignore_index)
    crop_cms = {c: ConfusionMatrix(num_classes, ignore_index) for c in factors}
    options = {"tile": tile, "overlap": overlap, "amp_dtype": amp_dtype}
    was_training = model.training
    model.to(dev).eval()
    try:
        for batch in _cli.progress_bar(loader, desc="eval", unit="batch", enabled=progress):
            image = batch["image"].to(dev, non_blocking=True)
            canny = batch["canny"].to(dev, non_blocking=True)
            label = batch["label"].to(dev, non_blocking=True)
            pred = infer(model, image, canny, **options).seg.argmax(1)
            cm.update(pred, label)
            bf.update(pred, label)
            for c, crop_cm in crop_cms.items():
                ci, cc, cl = crop_and_zoom(image, canny, label, c)
                crop_pred = pred if ci is image else infer(model, ci, cc, **options).seg.argmax(1)
                crop_cm.update(crop_pred, cl)
    finally:
        model.train(was_training)
    if bf.num_images == 0:
        raise ValueError("evaluate: the loader yielded no image")
    r = cm.compute()
    report = {
        "num_images": bf.num_images,
        "num_classes": num_classes,
        "ignore_index": ignore_index,
        "miou": r["miou"],
        "per_class_iou": r["per_class_iou"],
        "pixel_accuracy": r["pixel_accuracy"],
        "confusion_matrix": r["matrix"].tolist(),
        "boundary_f": boundary_report(bf),
    }
    if factors:
        report["distance"] = {c: m.compute()["miou"] for c, m in crop_cms.items()}
    return report


def _nan_to_none(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def report_to_json(report: dict, classes: Sequence[str]) -> dict:
    """The report of :func:`evaluate` with class names as keys, ready for ``json.dump``::

        {"miou": float, "per_class_iou": {name: float or null}, "pixel_accuracy": float,
         "num_images": int, "num_classes": K, "ignore_index": int, "classes": [names],
         "confusion_matrix": {"rows": "target", "columns": "prediction", "matrix": [[int]]},
         "boundary_f": {... as in evaluate, but "per_class_f", "per_class_strict_f":
                        {name: [per threshold]}, "images_present": {name: int}},
         "distance": {"<crop factor>": miou}   (if evaluated)}

    Undefined values (NaN) become null.

    Examples:
        >>> import json, torch
        >>> from gscnn_ops import GSCNN
        >>> from gscnn_ops.data import SegmentationSamples, SyntheticStreets
        >>> from gscnn_ops.data.prepare import collate
        >>> from gscnn_ops.engine.evaluate import evaluate, report_to_json
        >>> loader = torch.utils.data.DataLoader(SegmentationSamples(SyntheticStreets(1, 32, 64)),
        ...                                      collate_fn=collate)
        >>> report = evaluate(GSCNN(19, "resnet18"), loader, 19, progress=False)
        >>> data = report_to_json(report, SyntheticStreets.classes)
        >>> sorted(data["per_class_iou"])[:2], json.dumps(data, allow_nan=False) is not None
        (['bicycle', 'building'], True)
    """
    classes = list(classes)
    k = len(report["per_class_iou"])
    if len(classes) != k:
        raise ValueError(f"report_to_json: {len(classes)} class names for {k} classes")
    bf = dict(report["boundary_f"])
    for key in ("per_class_f", "per_class_strict_f", "images_present"):
        bf[key] = dict(zip(classes, bf[key]))
    out = {
        "miou": report["miou"],
        "per_class_iou": dict(zip(classes, report["per_class_iou"])),
        "pixel_accuracy": report["pixel_accuracy"],
        "num_images": report["num_images"],
        "num_classes": k,
        "ignore_index": report["ignore_index"],
        "classes": classes,
        "confusion_matrix": {
            "rows": "target",
            "columns": "prediction",
            "matrix": report["confusion_matrix"],
        },
        "boundary_f": bf,
    }
    if "distance" in report:
        out["distance"] = {str(c): v for c, v in report["distance"].items()}
    return _nan_to_none(out)


def _pct(v) -> str:
    return "   -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.2f}"


def format_report(report: dict, classes: Sequence[str]) -> str:
    """The report of :func:`evaluate` as a text table (percentages): per class its IoU and
    boundary F at each threshold, in the release's convention (BF) and the strict one (sBF);
    then the means, pixel accuracy and the distance-based mIoU if present. "-": undefined (the
    class never occurs).

    Examples:
        >>> import torch
        >>> from gscnn_ops import GSCNN
        >>> from gscnn_ops.data import SegmentationSamples, SyntheticStreets
        >>> from gscnn_ops.data.prepare import collate
        >>> from gscnn_ops.engine.evaluate import evaluate, format_report
        >>> loader = torch.utils.data.DataLoader(SegmentationSamples(SyntheticStreets(1, 32, 64)),
        ...                                      collate_fn=collate)
        >>> report = evaluate(GSCNN(19, "resnet18"), loader, 19, thresholds=(3,), progress=False)
        >>> print(format_report(report, SyntheticStreets.classes).splitlines()[0])
        class             IoU |   BF@3 |  sBF@3
    """
    bf = report["boundary_f"]
    ts = [str(t) for t in bf["thresholds"]]
    width = max([len("class")] + [len(str(c)) for c in classes])
    head = (
        f"{'class':<{width}}  {'IoU':>6} | "
        + " ".join(f"{'BF@' + t:>6}" for t in ts)
        + " | "
        + " ".join(f"{'sBF@' + t:>6}" for t in ts)
    )
    lines = [head, "-" * len(head)]
    for i, name in enumerate(classes):
        lines.append(
            f"{str(name):<{width}}  {_pct(report['per_class_iou'][i])} | "
            + " ".join(_pct(v) for v in bf["per_class_f"][i])
            + " | "
            + " ".join(_pct(v) for v in bf["per_class_strict_f"][i])
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'mean':<{width}}  {_pct(report['miou'])} | "
        + " ".join(_pct(v) for v in bf["mean_f"])
        + " | "
        + " ".join(_pct(v) for v in bf["strict_mean_f"])
    )
    radii = "; ".join(f"{size}: {r}" for size, r in bf["radii"].items())
    lines.append(
        f"images: {report['num_images']}   pixel accuracy: "
        f"{_pct(report['pixel_accuracy']).strip()}   boundary radii (px): {radii}"
    )
    lines.append(
        "BF: boundary F, the release's convention (a class absent from both maps of an "
        "image scores 1); sBF: strict (mean over the images where the class is present)"
    )
    if "distance" in report:
        lines.append(
            "distance-based mIoU (crop factor: mIoU): "
            + ", ".join(f"{c}: {_pct(v).strip()}" for c, v in report["distance"].items())
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the ``eval`` subcommand (``set_defaults(fn=run)``) to ``subparsers``."""
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint: mIoU and boundary F-scores", description=__doc__
    )
    _cli.add_model_args(p)
    p.add_argument("--dataset", choices=DATASETS, default="synthetic")
    p.add_argument("--data-root", metavar="PATH", help="root folder of the data set")
    p.add_argument("--split", default="val")
    p.add_argument(
        "--classes-file",
        metavar="PATH",
        help="class names of a 'folder' data set (passed to the data set)",
    )
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument(
        "--thresholds",
        nargs="+",
        type=float,
        default=[3, 5, 9, 12],
        help="boundary F thresholds: >= 1 pixels, < 1 fractions of the image diagonal "
        "(default: the paper's 3 5 9 12 px)",
    )
    p.add_argument(
        "--crop-factors",
        nargs="*",
        type=int,
        metavar="CF",
        help="also run the paper's distance-based evaluation with these crop factors "
        "(pixels removed from each side horizontally); given alone: "
        f"{' '.join(map(str, DEFAULT_CROP_FACTORS))}",
    )
    p.add_argument("--limit", type=int, metavar="N", help="evaluate the first N images only")
    p.add_argument("--json", metavar="PATH", help="also write the report to this JSON file")
    p.set_defaults(fn=run)
    return p


# Used when --crop-factors is given without values (pixels on 2048-wide Cityscapes images).
DEFAULT_CROP_FACTORS = (0, 100, 200, 300, 400)


def _setup(args):
    """Model, loader and names from the arguments; raises the errors of _cli.SETUP_ERRORS."""
    for name in ("batch_size", "limit"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise _cli.UsageError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    if args.workers < 0:
        raise _cli.UsageError(f"--workers must be non-negative, got {args.workers}")
    options = _cli.inference_options(args)
    dev = _cli.device(args.device)
    try:  # checks the thresholds before the slow steps
        BoundaryFScore(1, args.thresholds)
    except ValueError as e:
        raise _cli.UsageError(f"--thresholds: {e}") from e
    model, meta = load_model(args.checkpoint, dev)
    extra = {"classes_file": args.classes_file} if args.classes_file is not None else {}
    ds = build_dataset(args.dataset, args.data_root, args.split, **extra)
    k_model = meta["model_config"]["num_classes"]
    k_data = getattr(ds, "num_classes", None)
    if k_data != k_model:
        raise _cli.UsageError(
            f"checkpoint {args.checkpoint!r} predicts {k_model} classes but the "
            f"{args.dataset!r} data set has {k_data}"
        )
    samples = SegmentationSamples(ds)
    if args.limit is not None:
        samples = torch.utils.data.Subset(samples, range(min(args.limit, len(samples))))
    loader = torch.utils.data.DataLoader(
        samples,
        batch_size=args.batch_size,
        shuffle=False,
        num_workers=args.workers,
        collate_fn=collate,
        pin_memory=dev.type == "cuda",
    )
    classes = list(getattr(ds, "classes", None) or meta["classes"])
    ignore_index = int(getattr(ds, "ignore_index", meta["ignore_index"]))
    return model, loader, classes, ignore_index, dev, options


def run(args) -> int:
    """The ``eval`` subcommand: prints the table, writes the JSON report if asked. Returns 0, or
    2 (with one line on stderr) when the arguments, checkpoint or data set are unusable."""
    try:
        model, loader, classes, ignore_index, dev, options = _setup(args)
        factors = args.crop_factors
        if factors is not None and len(factors) == 0:
            factors = list(DEFAULT_CROP_FACTORS)
        if factors:  # checked against the first image's size before the long run
            h, w = loader.dataset[0]["label"].shape[-2:]
            for c in factors:
                crop_box(h, w, c)
    except _cli.SETUP_ERRORS as e:
        return _cli.fail("eval", e)
    try:
        report = evaluate(
            model,
            loader,
            len(classes),
            ignore_index,
            args.thresholds,
            dev,
            crop_factors=factors,
            progress=not args.no_progress,
            **options,
        )
    except (DataError, FileNotFoundError) as e:  # a bad file met during the run
        return _cli.fail("eval", e)
    print(format_report(report, classes))
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report_to_json(report, classes), f, indent=1, allow_nan=False)
        print("report written to", args.json)
    return 0
