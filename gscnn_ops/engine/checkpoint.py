"""Checkpoints: written atomically, read with ``weights_only=True`` (a checkpoint is an untrusted
file: nothing in it is unpickled but tensors, numbers, strings, lists and dicts).

Layout (a plain dict)::

    {"format": "gscnn_ops.checkpoint", "version": 1,
     "model_config": {"num_classes", "backbone", "output_stride", "shape_stream", "shape_stride",
                      "head"},
     "model": state_dict,
     "classes": [names], "palette": [[r, g, b], ...], "ignore_index": int,
     "train_state": {...}   # only in training checkpoints: optimiser, scheduler, RNG, progress
    }
"""

import os
import tempfile
from typing import Optional, Tuple

import torch

from ..data.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, default_palette
from ..models import GSCNN, load_release
from ..models.release import is_release_state_dict, release_state_dict
from ..models.tensor_file import load_tensor_file

FORMAT, VERSION = "gscnn_ops.checkpoint", 1
MODEL_KEYS = ("num_classes", "backbone", "output_stride", "shape_stream", "shape_stride", "head")
# Values of keys that checkpoints written before the key existed lack.
MODEL_DEFAULTS = {"head": "gscnn_ops"}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file.

    Examples:
        >>> import os, tempfile, torch
        >>> from gscnn_ops.engine import CheckpointError, load_checkpoint
        >>> path = os.path.join(tempfile.mkdtemp(), "weights.pt")
        >>> torch.save({"conv.weight": torch.zeros(1)}, path)
        >>> try:
        ...     load_checkpoint(path)
        ... except CheckpointError as e:
        ...     print("is neither a gscnn_ops checkpoint" in str(e))
        True
    """


def save_checkpoint(path: str, payload: dict) -> None:
    """Writes ``payload`` to ``path`` atomically: to a temporary file in the same folder, flushed
    to disk, then renamed over ``path`` (a crash leaves the old file or the new one, never half).

    Examples:
        >>> import os, tempfile
        >>> from gscnn_ops.engine import save_checkpoint
        >>> folder = tempfile.mkdtemp()
        >>> save_checkpoint(os.path.join(folder, "run", "state.pt"), {"step": 3})
        >>> os.listdir(os.path.join(folder, "run"))  # no temporary file left behind
        ['state.pt']
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str) -> dict:
    """Reads a gscnn_ops checkpoint with ``weights_only=True``; a missing, unreadable or foreign
    file raises :class:`CheckpointError` (or FileNotFoundError) naming it.

    Examples:
        >>> import os, tempfile
        >>> from gscnn_ops import GSCNN
        >>> from gscnn_ops.engine import load_checkpoint, save_checkpoint
        >>> from gscnn_ops.engine.checkpoint import make_payload, model_config
        >>> model = GSCNN(3, "resnet18")
        >>> path = os.path.join(tempfile.mkdtemp(), "model.pt")
        >>> save_checkpoint(path, make_payload(model, model_config(model, "resnet18", 8),
        ...                                    ["a", "b", "c"], [[0, 0, 0]] * 3))
        >>> payload = load_checkpoint(path)
        >>> payload["model_config"]["backbone"], payload["classes"]
        ('resnet18', ['a', 'b', 'c'])
    """
    path = os.fspath(path)
    return check_checkpoint(load_tensor_file(path, CheckpointError, "checkpoint"), path)


def check_checkpoint(payload, path: str) -> dict:
    """``payload`` if it is a gscnn_ops checkpoint of this version, else CheckpointError."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path!r} is neither a gscnn_ops checkpoint (no "
            f"'format': {FORMAT!r} entry) nor one of the authors' release (no "
            f"GSCNN keys such as 'final_seg.6.weight')"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path!r} has version {payload.get('version')!r}; this "
            f"gscnn_ops reads version {VERSION}"
        )
    missing = [k for k in ("model_config", "model") if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} lacks {missing}")
    return payload


def model_config(model: GSCNN, backbone: str, output_stride: int) -> dict:
    """The constructor arguments that rebuild ``model`` (weights aside)."""
    return {
        "num_classes": model.num_classes,
        "backbone": backbone,
        "output_stride": output_stride,
        "shape_stream": model.shape is not None,
        "shape_stride": model.shape.stride if model.shape is not None else 1,
        "head": model.head,
    }


def make_payload(
    model: torch.nn.Module,
    config: dict,
    classes,
    palette,
    ignore_index: int = IGNORE_INDEX,
    train_state: Optional[dict] = None,
) -> dict:
    """The checkpoint dict of ``model`` (unwrapped from DDP if needed)."""
    model = getattr(model, "module", model)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": {k: config.get(k, MODEL_DEFAULTS.get(k)) for k in MODEL_KEYS},
        "model": model.state_dict(),
        "classes": list(classes),
        "palette": [list(map(int, c)) for c in palette],
        "ignore_index": int(ignore_index),
    }
    if train_state is not None:
        payload["train_state"] = train_state
    return payload


def load_model(path: str, device="cpu", fused: bool = True) -> Tuple[GSCNN, dict]:
    """Rebuilds the model of a checkpoint — a gscnn_ops checkpoint, or a checkpoint of the
    authors' release as its ``train.py`` writes it (recognised by its keys; see
    :func:`~gscnn_ops.models.load_release`) — in eval mode on ``device``. Returns (model, payload
    without the weights): the payload gives "model_config", "classes", "palette",
    "ignore_index" (Cityscapes' for a release checkpoint of 19 classes).

    Examples:
        >>> import os, tempfile
        >>> from gscnn_ops import GSCNN
        >>> from gscnn_ops.engine import load_model, save_checkpoint
        >>> from gscnn_ops.engine.checkpoint import make_payload, model_config
        >>> model = GSCNN(3, "resnet18", shape_stride=2)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.pt")
        >>> save_checkpoint(path, make_payload(model, model_config(model, "resnet18", 8),
        ...                                    ["a", "b", "c"], [[0, 0, 0]] * 3))
        >>> rebuilt, meta = load_model(path)
        >>> rebuilt.training, rebuilt.shape.stride, meta["classes"]
        (False, 2, ['a', 'b', 'c'])
    """
    path = os.fspath(path)
    payload = load_tensor_file(path, CheckpointError, "checkpoint")
    if is_release_state_dict(payload):
        model = load_release(
            release_state_dict(payload, f"release checkpoint {path!r}"), fused=fused
        )
        meta = {"model_config": model_config(model, "wrn38", 8), "source": "release"}
    else:
        payload = check_checkpoint(payload, path)
        cfg = {**MODEL_DEFAULTS, **payload["model_config"]}
        try:
            model = GSCNN(**{k: cfg[k] for k in MODEL_KEYS}, fused=fused)
            model.load_state_dict(payload["model"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(
                f"checkpoint {path!r}: its model could not be rebuilt: {e}"
            ) from e
        meta = {k: v for k, v in payload.items() if k not in ("model", "train_state")}
        meta["model_config"] = cfg
    k = meta["model_config"]["num_classes"]
    meta.setdefault(
        "classes",
        list(CITYSCAPES_CLASSES)
        if k == len(CITYSCAPES_CLASSES)
        else [f"class {i}" for i in range(k)],
    )
    meta.setdefault("palette", default_palette(k))
    meta.setdefault("ignore_index", IGNORE_INDEX)
    return model.to(device).eval(), meta
