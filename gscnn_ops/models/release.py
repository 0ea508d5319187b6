"""The authors' released GSCNN (nv-tlabs/GSCNN) in our model: its checkpoints load into
``GSCNN(backbone="wrn38", head="release")`` and run unchanged, and ``release_canny`` gives the
image-gradient input those checkpoints were trained with.

Written from reading the release (its licence forbids copying its code); what is used of it is the
file format: the parameter names and shapes of its ``network.gscnn.GSCNN`` as its ``train.py``
saves them (``{"state_dict": ..., "optimizer": ..., "epoch": ..., "mean_iu": ...}``, keys with a
``module.`` prefix from ``DataParallel``).
"""

import os
import re
from typing import Dict, Mapping, Union

import torch
from torch import Tensor

from ..filters import canny
from .gscnn import GSCNN
from .tensor_file import load_tensor_file

# Keys of the release's model that its forward never uses: ``dsn1`` (a side output defined but not
# called) and the loss module the release keeps inside the network (``criterion``; it holds
# buffers only when class weights are configured).
UNUSED_PREFIXES = ("dsn1.", "criterion.")

# Release name -> our name, by prefix (the first match wins); every key must match one rule.
_RENAMES = [
    (r"mod(\d)\.", r"trunk.mod\1."),
    (r"dsn3\.", "shape.gates.0."),
    (r"dsn4\.", "shape.gates.1."),
    (r"dsn7\.", "shape.gates.2."),
    (r"res([123])\.", lambda m: f"shape.blocks.{int(m[1]) - 1}."),
    (r"d([123])\.", lambda m: f"shape.reduce.{int(m[1]) - 1}."),
    (r"gate([123])\._gate_conv\.", lambda m: f"shape.gcls.{int(m[1]) - 1}.gate_net."),
    (r"gate([123])\.weight$", lambda m: f"shape.gcls.{int(m[1]) - 1}.weight"),
    (r"fuse\.", "shape.head."),
    (r"cw\.", "edge_fuse."),
    (r"aspp\.features\.(\d)\.", r"aspp.branches.\1."),
    (r"aspp\.img_conv\.", "aspp.pool."),
    (r"aspp\.edge_conv\.", "aspp.edge."),
    (r"bot_aspp\.", "aspp.project.0."),
    (r"bot_fine\.", "low_level.0."),
    (r"final_seg\.0\.", "decoder.0.0."),
    (r"final_seg\.1\.", "decoder.0.1."),
    (r"final_seg\.3\.", "decoder.1.0."),
    (r"final_seg\.4\.", "decoder.1.1."),
    (r"final_seg\.6\.", "decoder.2."),
]
_RENAMES = [(re.compile(pattern), repl) for pattern, repl in _RENAMES]

# Keys that identify a release state dict (after the ``module.`` prefix is dropped).
_SIGNATURE = (
    "mod1.conv1.weight",
    "gate1._gate_conv.0.weight",
    "bot_aspp.weight",
    "final_seg.6.weight",
)

# The release's Canny map holds 0 and 255; ours 0 and 1: the fusion weight of that channel is
# multiplied by 255 so that the model computes the same function.
CANNY_SCALE = 255.0


class ReleaseCheckpointError(ValueError):
    """A file or state dict that is not a usable checkpoint of the release; the message names it."""


def _strip_module(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def is_release_state_dict(state) -> bool:
    """True if ``state`` (a state dict, or a checkpoint dict holding one under ``state_dict``)
    has the release GSCNN's key names."""
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        return False
    keys = _strip_module(state)
    return all(k in keys for k in _SIGNATURE)


def release_state_dict(payload, name: str) -> Dict[str, Tensor]:
    """The state dict in a loaded release checkpoint (at the top or under ``state_dict``)."""
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        payload = payload["state_dict"]
    if not isinstance(payload, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in payload.items()
    ):
        raise ReleaseCheckpointError(
            f"{name} holds no state dict of tensors (neither at the top nor under 'state_dict')"
        )
    return dict(payload)


def read_release_file(path: Union[str, os.PathLike]) -> Dict[str, Tensor]:
    """The state dict of a release checkpoint file, read with ``weights_only=True``."""
    payload = load_tensor_file(path, ReleaseCheckpointError, "release checkpoint")
    return release_state_dict(payload, f"release checkpoint {os.fspath(path)!r}")


def _rename(key: str) -> str:
    for pattern, repl in _RENAMES:
        m = pattern.match(key)
        if m:
            new = repl(m) if callable(repl) else m.expand(repl)
            return new + key[m.end() :]
    return None


def convert_release_state_dict(
    state: Mapping[str, Tensor], name: str = "state dict", num_classes: int = None
) -> Dict[str, Tensor]:
    """Maps a release GSCNN state dict to the state dict of ``GSCNN(num_classes, "wrn38",
    head="release")``: renames every key, permutes the input channels of the two convolutions
    that follow a concatenation (the release concatenates the ASPP branches and the decoder's
    inputs in another order), and scales the Canny weight of the edge fusion by 255.

    Raises :class:`ReleaseCheckpointError` naming ``name`` for keys it does not know, keys the
    model needs that are absent, and tensors of the wrong shape: nothing is half loaded.
    """
    state = _strip_module(state)
    if "final_seg.6.weight" not in state:
        raise ReleaseCheckpointError(
            f"{name}: not a release GSCNN state dict (no "
            f"'final_seg.6.weight'; first keys: {list(state)[:3]})"
        )
    k = state["final_seg.6.weight"].shape[0] if num_classes is None else num_classes
    out, unknown = {}, []
    for key, value in state.items():
        if key.startswith(UNUSED_PREFIXES):
            continue
        new = _rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ReleaseCheckpointError(
            f"{name}: {len(unknown)} keys are not the release GSCNN's: {unknown[:8]}"
        )
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        expected = release_model(k, fused=False).state_dict()
    missing = [key for key in expected if key not in out]
    extra = [key for key in out if key not in expected]
    if missing or extra:
        raise ReleaseCheckpointError(
            f"{name}: does not fit the release GSCNN: missing "
            f"{missing[:8]}, not in the model {extra[:8]}"
        )
    wrong = [
        f"{key}: {tuple(out[key].shape)}, expected {tuple(v.shape)}"
        for key, v in expected.items()
        if out[key].shape != v.shape
    ]
    if wrong:
        raise ReleaseCheckpointError(f"{name}: tensors of the wrong shape: {wrong[:5]}")

    # ASPP concatenation: release [pool, edge, 1x1, r12, r24, r36], ours [1x1, r12, r24, r36,
    # pool, edge], blocks of 256 channels.
    w = out["aspp.project.0.weight"]
    c = w.shape[0]
    blocks = w.split(c, dim=1)
    out["aspp.project.0.weight"] = torch.cat(list(blocks[2:]) + [blocks[0], blocks[1]], dim=1)
    # Decoder: release [low-level 48, ASPP 256], ours [ASPP 256, low-level 48].
    w = out["decoder.0.0.weight"]
    out["decoder.0.0.weight"] = torch.cat([w[:, 48:], w[:, :48]], dim=1)
    w = out["edge_fuse.weight"].clone()
    w[:, 1] *= CANNY_SCALE
    out["edge_fuse.weight"] = w
    return out


def release_model(num_classes: int = 19, fused: bool = True) -> GSCNN:
    """The release's architecture in our model, untrained: WideResNet-38 at output stride 8 with
    the release's head, shape stream at full resolution."""
    return GSCNN(
        num_classes,
        backbone="wrn38",
        output_stride=8,
        shape_stream=True,
        fused=fused,
        shape_stride=1,
        head="release",
    )


def load_release(
    source: Union[str, os.PathLike, Mapping[str, Tensor]], fused: bool = True
) -> GSCNN:
    """The release's GSCNN with the weights of ``source`` — a path of a checkpoint as the
    release's ``train.py`` writes it, or its state dict (keys with or without ``module.``) — in
    eval mode. Its forward is the release network's forward, with two documented differences
    of interface: it returns ``GSCNNOutput`` with edge *logits* (the release returns their
    sigmoid), and it takes the Canny map as an input in [0, 1]: give it
    :func:`release_canny` of the same normalised image, as :func:`gscnn_ops.engine.infer` does
    for a model with ``head="release"``. The number of classes comes from the weights.

    Examples:
        >>> import torch
        >>> from gscnn_ops.models import load_release
        >>> # model = load_release("best_cityscapes_checkpoint.pth")  # the authors' file
        >>> try:  # anything else is refused, by name, never half loaded
        ...     load_release({"final_seg.6.weight": torch.zeros(19, 256, 1, 1),
        ...                   "other": torch.zeros(1)})
        ... except ValueError as e:
        ...     print(str(e))
        release state dict: 1 keys are not the release GSCNN's: ['other']
    """
    if isinstance(source, Mapping):
        name = "release state dict"
        state = release_state_dict(source, name)
    else:
        name, state = f"release checkpoint {os.fspath(source)!r}", read_release_file(source)
    converted = convert_release_state_dict(state, name)
    model = release_model(converted["decoder.2.weight"].shape[0], fused=fused)
    model.load_state_dict(converted)
    return model.eval()


def numpy_uint8(image: Tensor) -> Tensor:
    """``image`` cast to uint8 as NumPy's ``astype(np.uint8)`` casts floats on x86: truncation
    toward zero, then wrapping modulo 256 (-1.5 -> 255, 256.5 -> 0)."""
    if not image.is_floating_point():
        raise TypeError(f"numpy_uint8: image must be floating point, got {image.dtype}")
    if not torch.isfinite(image).all():
        raise ValueError(
            "numpy_uint8: image holds NaN or infinite values (NumPy's cast of them is undefined)"
        )
    # The float -> int64 conversion truncates toward zero; remainder wraps negatives into 0..255.
    return torch.remainder(image.to(torch.int64), 256).to(torch.uint8)


def release_canny(image: Tensor) -> Tensor:
    """The Canny map that the release's forward computes, for its checkpoints: ``image`` is the
    *normalised* (N, 3, H, W) batch the model gets; it is cast to uint8 as NumPy casts (see
    :func:`numpy_uint8`), then ``cv2.Canny(·, 10, 100)`` of each (H, W, 3) image (colour Canny),
    here by :func:`~gscnn_ops.filters.canny` on the image's device. Returns float32 (N, 1, H, W)
    in {0, 1}.

    A compatibility mode: the release's checkpoints were trained with it. For models of our own,
    use :func:`~gscnn_ops.filters.canny` of the un-normalised image, which sees the real edges.

    Examples:
        >>> import torch
        >>> from gscnn_ops.models import release_canny
        >>> image = torch.full((1, 3, 16, 16), 0.5)  # normalised values: cast to uint8 0 ...
        >>> image[..., 8:] = -1.0  # ... and -1 wraps to 255: an edge at x = 8
        >>> edges = release_canny(image)
        >>> edges.shape, sorted(edges[0, 0].sum(0).nonzero().flatten().tolist())
        (torch.Size([1, 1, 16, 16]), [7])
    """
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(
            f"release_canny: image must be a normalised (N, 3, H, W) tensor, got {shape}"
        )
    return canny(numpy_uint8(image.detach()), 10.0, 100.0).to(torch.float32)
