"""``gscnn convert-release IN OUT``: a checkpoint of the authors' release (nv-tlabs/GSCNN, as its
``train.py`` writes it) as a gscnn_ops checkpoint, which ``eval``, ``predict`` and ``export``
read like any other. The conversion checks every key and
shape (see :func:`~gscnn_ops.models.release.convert_release_state_dict`); the file is written
atomically."""

import argparse
import os

from ..data.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, default_palette
from ..models.release import load_release, read_release_file
from . import _cli
from .checkpoint import make_payload, model_config, save_checkpoint


def convert_release(source: str, target: str) -> dict:
    """Reads the release checkpoint ``source`` and writes it to ``target`` as a gscnn_ops
    checkpoint (Cityscapes' class names and colours when it has 19 classes). Returns the
    payload's model configuration."""
    model = load_release(read_release_file(source), fused=False)
    k = model.num_classes
    classes = (
        list(CITYSCAPES_CLASSES)
        if k == len(CITYSCAPES_CLASSES)
        else [f"class {i}" for i in range(k)]
    )
    config = model_config(model, "wrn38", 8)
    save_checkpoint(target, make_payload(model, config, classes, default_palette(k), IGNORE_INDEX))
    return config


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert-release",
        help="convert a checkpoint of the authors' release to a gscnn_ops checkpoint",
        description=__doc__,
    )
    p.add_argument("source", metavar="IN", help="release checkpoint (.pth)")
    p.add_argument("target", metavar="OUT", help="gscnn_ops checkpoint to write")
    p.set_defaults(fn=run)
    return p


def run(args) -> int:
    if os.path.abspath(args.source) == os.path.abspath(args.target):
        return _cli.fail("convert-release", _cli.UsageError("IN and OUT are the same file"))
    try:
        config = convert_release(args.source, args.target)
    except _cli.SETUP_ERRORS as e:
        return _cli.fail("convert-release", e)
    print(f"wrote {args.target}: GSCNN {config}")
    return 0
