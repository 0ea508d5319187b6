"""Deployment: ``gscnn export --checkpoint CKPT --out model.pt2`` writes a ``torch.export``
program of the model in eval mode; ``--aoti`` compiles it ahead of time into an AOTInductor
package that Python (``torch._inductor.aoti_load_package``) or C++
(``torch::inductor::AOTIModelPackageLoader``, see ``examples/cpp``) runs without the model's
Python code.

The program takes ``(image, canny)`` as the model does — ``image`` (N, 3, H, W) float32
normalised with ImageNet's mean and standard deviation, ``canny`` (N, 1, H, W) in [0, 1] — and
returns ``(seg, edge)`` logits at (H, W) (``(seg,)`` for a baseline without shape stream).
Batch, height and width are dynamic (height and width at least 9, as the trunk's strides need).
gscnn_ops' fused ops stay in the graph as ``torch.ops.gscnn_ops.*`` calls: whoever runs the
program loads the library first (``import gscnn_ops`` in Python; ``libgscnn_ops.so`` in C++).
Next to the output, ``OUT.json`` records what a deployer needs: classes, palette, normalisation,
which Canny the model expects (``release_canny`` of the normalised image for the authors'
checkpoints, ``canny`` of the 0..255 image otherwise).
"""

import argparse
import json
import os
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..data.prepare import IMAGENET_MEAN, IMAGENET_STD
from . import _cli
from .checkpoint import load_model


class Deployable(nn.Module):
    """``model`` with a plain tensor interface: ``forward(image, canny) -> (seg, edge)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, canny: Tensor) -> Tuple[Tensor, ...]:
        out = self.model(image, canny)
        return (out.seg,) if out.edge is None else (out.seg, out.edge)


def example_inputs(size=(64, 96), batch: int = 2, device="cpu") -> Tuple[Tensor, Tensor]:
    """Inputs to trace with. Batch 2 and sizes above the minimum, so that no dimension is
    specialised to the example's value (torch.export treats sizes 0 and 1 as constants)."""
    h, w = size
    return (torch.randn(batch, 3, h, w, device=device), torch.zeros(batch, 1, h, w, device=device))


def export_program(model: nn.Module, size=(64, 96)) -> torch.export.ExportedProgram:
    """The ``torch.export`` program of ``model`` (put in eval mode) with dynamic batch, height
    and width."""
    model.eval()
    device = next(model.parameters()).device
    dims = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    with torch.no_grad():
        return torch.export.export(
            Deployable(model),
            example_inputs(size, device=device),
            dynamic_shapes={"image": dims, "canny": dims},
        )


def deployment_info(meta: dict) -> dict:
    """What a deployer needs besides the program (written to ``OUT.json``)."""
    head = meta["model_config"]["head"]
    return {
        "format": "gscnn_ops.export",
        "version": 1,
        "inputs": ["image", "canny"],
        "outputs": ["seg", "edge"] if meta["model_config"]["shape_stream"] else ["seg"],
        "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": 255},
        "canny": (
            "release_canny of the normalised image (the authors' checkpoints)"
            if head == "release"
            else "canny(low=10, high=100) of the 0..255 image"
        ),
        "model_config": meta["model_config"],
        "classes": list(meta["classes"]),
        "palette": [list(c) for c in meta["palette"]],
        "ignore_index": int(meta["ignore_index"]),
    }


def export_checkpoint(
    checkpoint: str, out: str, aoti: bool = False, device="cpu", size=(64, 96)
) -> Optional[str]:
    """Exports the model of ``checkpoint`` (gscnn_ops or release) to ``out``: a ``.pt2``
    program, or with ``aoti`` an AOTInductor package compiled for ``device``. Writes
    ``out + ".json"`` (see :func:`deployment_info`). Returns ``out``."""
    model, meta = load_model(checkpoint, device)
    program = export_program(model, size)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    info = deployment_info(meta)
    if aoti:
        # The package's metadata, readable from C++ (AOTIModelPackageLoader::get_metadata).
        metadata = {
            "gscnn.canny": "release" if info["model_config"]["head"] == "release" else "image",
            "gscnn.num_classes": str(info["model_config"]["num_classes"]),
            "gscnn.outputs": ",".join(info["outputs"]),
        }
        torch._inductor.aoti_compile_and_package(
            program, package_path=out, inductor_configs={"aot_inductor.metadata": metadata}
        )
    else:
        torch.export.save(program, out)
    with open(out + ".json", "w") as f:
        json.dump(info, f, indent=1)
    return out


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="write a torch.export program or an AOTInductor package of a checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="a gscnn_ops checkpoint, or one of the authors' release",
    )
    p.add_argument("--out", required=True, metavar="PATH", help="the .pt2 file to write")
    p.add_argument(
        "--aoti",
        action="store_true",
        help="compile an AOTInductor package (minutes) instead of a program",
    )
    p.add_argument(
        "--device", default="cpu", help="device the package is compiled for (default cpu)"
    )
    p.add_argument(
        "--trace-size",
        nargs=2,
        type=int,
        default=(64, 96),
        metavar=("H", "W"),
        help="image size of the example traced (any size works at run time)",
    )
    p.set_defaults(fn=run)
    return p


def run(args) -> int:
    try:
        if min(args.trace_size) < 9:
            raise _cli.UsageError(f"--trace-size must be at least 9 x 9, got {args.trace_size}")
        export_checkpoint(
            args.checkpoint, args.out, args.aoti, _cli.device(args.device), tuple(args.trace_size)
        )
    except _cli.SETUP_ERRORS as e:
        return _cli.fail("export", e)
    print(
        f"wrote {args.out} ({'AOTInductor package' if args.aoti else 'torch.export program'}) "
        f"and {args.out}.json"
    )
    return 0
