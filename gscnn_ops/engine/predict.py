"""Single-image prediction: segmentation, overlay, edge map and the three gate maps of the shape
stream as PNG files; the ``gscnn predict`` subcommand.

Images are processed one at a time (they may differ in size), through the same
:func:`~gscnn_ops.engine.inference.infer` as evaluation, so ``tile`` bounds the memory of large
images here too.
"""

import argparse
import os
import warnings
from typing import List, Sequence

import torch

from ..data.cityscapes import trainids_to_labelids
from ..data.classes import CITYSCAPES_CLASSES, colorize
from ..data.io import read_image, write_png
from ..data.prepare import normalize
from ..filters import canny
from . import _cli
from .checkpoint import load_model
from .inference import infer

OVERLAY_ALPHA = 0.5  # weight of the colour segmentation in the overlay


def output_stems(paths: Sequence[str]) -> List[str]:
    """The file-name stem of the outputs of each input. Inputs sharing a stem (a/x.png and
    b/x.png, or x.png and x.jpg) must not overwrite each other: the first keeps it, later ones
    get ``<stem>-1``, ``<stem>-2``, ... (skipping names another input already has)."""
    stems = [os.path.splitext(os.path.basename(os.fspath(p)))[0] for p in paths]
    taken, out = set(stems), []
    assigned = set()
    for stem in stems:
        name, k = stem, 0
        while name in assigned or (k > 0 and name in taken):
            k += 1
            name = f"{stem}-{k}"
        assigned.add(name)
        out.append(name)
    return out


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(H, W) values in [0, 1] -> uint8 (H, W) on the CPU."""
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


FORMATS = ("png", "cityscapes")


def predict_images(
    model,
    meta: dict,
    paths: Sequence[str],
    out_dir: str,
    device=None,
    tile=None,
    amp_dtype=None,
    progress: bool = True,
    overlap: float = 1 / 3,
    output_format: str = "png",
) -> List[str]:
    """Runs ``model`` (moved to ``device`` if given, in eval mode, its mode restored afterwards)
    on each image file of ``paths`` and writes to ``out_dir`` (created if needed), per image:

    - ``<stem>_seg.png``: the predicted classes in the colours of ``meta["palette"]``;
    - ``<stem>_overlay.png``: the image blended 50/50 with the colour segmentation;
    - ``<stem>_edge.png``: sigmoid of the edge logits as 8-bit gray (0 = 0, 255 = 1);
    - ``<stem>_gate1.png`` .. ``<stem>_gate3.png``: the gate maps (alphas) of the three gated
      convolutions at the image size, 8-bit gray.

    With ``output_format="cityscapes"`` it writes instead, per image, ``<stem>.png``: the
    official Cityscapes label ids (8-bit gray, full resolution), as the benchmark server and
    ``evalPixelLevelSemanticLabeling`` expect; the model must have Cityscapes' 19 classes.

    A baseline model (no shape stream) writes only seg and overlay (a warning says so once).
    Canny edges are computed on the raw image, as in training. Stems shared by several inputs
    are disambiguated (:func:`output_stems`). A missing or unreadable image raises
    FileNotFoundError / ValueError naming it; missing files are found before any work is done.
    Returns the paths written, in order.

    Examples:
        >>> import os, tempfile
        >>> from gscnn_ops import GSCNN
        >>> from gscnn_ops.data import render_scene, write_png
        >>> from gscnn_ops.engine import predict_images
        >>> folder = tempfile.mkdtemp()
        >>> write_png(os.path.join(folder, "street.png"), render_scene(0, 32, 48)[0])
        >>> meta = {"palette": [[0, 0, 0], [255, 0, 0], [0, 0, 255]]}
        >>> images = [os.path.join(folder, "street.png")]
        >>> written = predict_images(GSCNN(3, "resnet18"), meta, images,
        ...                          os.path.join(folder, "out"), progress=False)
        >>> sorted(os.path.basename(p) for p in written)[:3]
        ['street_edge.png', 'street_gate1.png', 'street_gate2.png']
    """
    if output_format not in FORMATS:
        raise ValueError(
            f"predict_images: output_format must be one of {FORMATS}, got {output_format!r}"
        )
    cityscapes = output_format == "cityscapes"
    if cityscapes and list(meta.get("classes", [])) != list(CITYSCAPES_CLASSES):
        raise ValueError(
            f"predict_images: the cityscapes format needs a model of Cityscapes' 19 "
            f"classes; this one has {len(meta.get('classes', []))} "
            f"({list(meta.get('classes', []))[:3]}...)"
        )
    paths = [os.fspath(p) for p in paths]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"image {missing[0]!r} does not exist"
            + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    stems = output_stems(paths)
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    has_shape = getattr(model, "shape", None) is not None and not cityscapes
    if getattr(model, "shape", None) is None and not cityscapes:
        warnings.warn(
            "predict_images: the model has no shape stream (a baseline checkpoint): "
            "writing only the segmentation and overlay, no edge or gate maps",
            stacklevel=2,
        )
    palette, ignore_index = meta["palette"], meta.get("ignore_index", 255)
    os.makedirs(out_dir, exist_ok=True)
    written: List[str] = []
    was_training = model.training
    model.eval()
    try:
        for path, stem in _cli.progress_bar(
            list(zip(paths, stems)), desc="predict", unit="image", enabled=progress
        ):
            raw = read_image(path)
            raw_dev = raw.to(dev)
            edges = canny(raw_dev).unsqueeze(0)
            out = infer(
                model,
                normalize(raw_dev).unsqueeze(0),
                edges,
                tile=tile,
                overlap=overlap,
                amp_dtype=amp_dtype,
                return_alphas=has_shape,
            )
            if cityscapes:
                target = os.path.join(out_dir, f"{stem}.png")
                write_png(target, trainids_to_labelids(out.seg[0].argmax(0).cpu()))
                written.append(target)
                continue
            seg = colorize(out.seg[0].argmax(0).cpu(), palette, ignore_index)
            overlay = OVERLAY_ALPHA * seg.float() + (1 - OVERLAY_ALPHA) * raw.float()
            images = {"seg": seg, "overlay": overlay.round().to(torch.uint8)}
            if has_shape:
                images["edge"] = _gray(torch.sigmoid(out.edge[0, 0]))
                for i, alpha in enumerate(out.alphas, 1):
                    images[f"gate{i}"] = _gray(alpha[0, 0])
            for kind, image in images.items():
                target = os.path.join(out_dir, f"{stem}_{kind}.png")
                write_png(target, image)
                written.append(target)
    finally:
        model.train(was_training)
    return written


# ----------------------------------------------------------------------------- command line


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the ``predict`` subcommand (``set_defaults(fn=run)``) to ``subparsers``."""
    p = subparsers.add_parser(
        "predict", help="segment image files, write PNGs", description=__doc__
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    _cli.add_model_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG outputs")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="png",
        dest="output_format",
        help="png: colour segmentation, overlay, edge and gate maps (default); "
        "cityscapes: <stem>.png of label ids at full resolution, as the "
        "Cityscapes benchmark server expects",
    )
    p.set_defaults(fn=run)
    return p


def run(args) -> int:
    """The ``predict`` subcommand. Returns 0, or 2 (with one line on stderr) when the arguments,
    checkpoint or an image are unusable."""
    try:
        options = _cli.inference_options(args)
        model, meta = load_model(args.checkpoint, _cli.device(args.device))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            written = predict_images(
                model,
                meta,
                args.images,
                args.out,
                progress=not args.no_progress,
                output_format=args.output_format,
                **options,
            )
    except _cli.SETUP_ERRORS as e:
        return _cli.fail("predict", e)
    for w in caught:
        print(f"gscnn predict: note: {w.message}")
    print(f"wrote {len(written)} files for {len(args.images)} images to {args.out}")
    return 0
