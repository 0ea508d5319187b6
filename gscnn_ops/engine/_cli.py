"""Command-line pieces shared by the ``eval`` and ``predict`` subcommands: the model and
inference options, and how a usage error is reported (one line naming the culprit, exit code 2,
no traceback)."""

import argparse
import sys

import torch

from .inference import AMP_DTYPES

USAGE_ERROR = 2


class UsageError(Exception):
    """A problem with the command's inputs (arguments, files): reported without a traceback."""


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--checkpoint, --device, --tile, --overlap, --amp, --no-progress."""
    p.add_argument(
        "--checkpoint", required=True, metavar="PATH", help="a gscnn_ops checkpoint (from training)"
    )
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the model runs (default: cuda if available, else cpu)",
    )
    p.add_argument(
        "--tile",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="sliding-window inference with windows of H x W (bounds the memory at "
        "large resolutions); default: whole images",
    )
    p.add_argument(
        "--overlap",
        type=float,
        default=1 / 3,
        help="fraction of a window shared with its neighbour (default 1/3)",
    )
    p.add_argument(
        "--amp",
        choices=tuple(AMP_DTYPES),
        default="none",
        help="run the model under autocast in this precision (default none)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def inference_options(args) -> dict:
    """The keyword arguments of :func:`~gscnn_ops.engine.inference.infer` given on the command
    line, checked."""
    if args.tile is not None and min(args.tile) < 1:
        raise UsageError(f"--tile sizes must be positive, got {args.tile}")
    if not 0 <= args.overlap < 1:
        raise UsageError(f"--overlap must be in [0, 1), got {args.overlap}")
    return {
        "tile": tuple(args.tile) if args.tile is not None else None,
        "overlap": args.overlap,
        "amp_dtype": AMP_DTYPES[args.amp],
    }


def device(name: str) -> torch.device:
    """The --device argument as a device, with a clear error for unknown or unavailable ones."""
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"--device {name!r} is not a device: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name!r}: CUDA is not available on this machine")
    return dev


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar on stderr: live on a terminal; in a log file (CI, batch jobs) one line every
    30 s instead of an update every 0.1 s."""
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        disable=not enabled,
        dynamic_ncols=interactive,
        mininterval=0.1 if interactive else 30.0,
        **kwargs,
    )


def fail(command: str, error: BaseException) -> int:
    """Prints ``gscnn COMMAND: error: MESSAGE`` to stderr and returns the usage-error code."""
    message = (
        error.args[0]
        if isinstance(error, (FileNotFoundError, KeyError)) and error.args
        else str(error)
    )
    lines = str(message).strip().splitlines()
    if lines and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        # Re-raised from a data-loader worker: the message is "Caught X in DataLoader worker
        # process N." and the worker's traceback; its last line is the original
        # "module.X: message". Keep that message, on one line.
        message = lines[-1].split(": ", 1)[-1]
    print(f"gscnn {command}: error: {message}", file=sys.stderr)
    return USAGE_ERROR


# What the setup of a command (arguments, checkpoint, data set) raises on bad input.
SETUP_ERRORS = (UsageError, FileNotFoundError, ValueError, NotImplementedError)
