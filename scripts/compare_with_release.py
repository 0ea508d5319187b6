"""Runs the authors' released GSCNN (a local checkout of nv-tlabs/GSCNN, never part of this
project: its licence forbids copying) beside ``gscnn_ops.models.load_release`` on the same
weights and inputs, and prints the largest differences of their outputs.

    python scripts/compare_with_release.py --release-dir PATH/TO/GSCNN [--checkpoint CKPT]

Without ``--checkpoint`` the release's network is built with random weights, including random
BatchNorm statistics, so that every layer matters. The release's forward runs its Canny on the
CPU and moves the map with ``.cuda()``; here ``Tensor.cuda`` is made a no-op while it runs, so
the comparison needs no GPU. Needs the release's own imports (``six``, ``pyyaml``, OpenCV).
"""

import argparse
import contextlib
import os
import sys

import torch


@contextlib.contextmanager
def _cuda_is_identity():
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def _randomise(net: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--release-dir", required=True, help="a checkout of nv-tlabs/GSCNN")
    p.add_argument("--checkpoint", help="a release checkpoint (default: random weights)")
    p.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from gscnn_ops.data import normalize
    from gscnn_ops.models import load_release, release_canny

    sys.argv = [sys.argv[0]]  # the release's config module parses the command line
    sys.path.insert(0, os.path.abspath(args.release_dir))
    from network.gscnn import GSCNN as ReleaseGSCNN  # noqa: E402 - the release's code

    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    release = ReleaseGSCNN(num_classes=19)
    if args.checkpoint:
        from gscnn_ops.models.release import read_release_file

        state = read_release_file(args.checkpoint)
        release.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    else:
        _randomise(release, args.seed)
    release = release.to(dtype).eval()
    ours = load_release(release.state_dict()).to(dtype)

    raw = torch.randint(0, 256, (args.batch, 3, *args.size), dtype=torch.uint8)
    raw[..., ::7, :] = 255  # sharp lines, so that the Canny maps are not empty
    image = normalize(raw).to(dtype)
    with torch.no_grad(), _cuda_is_identity():
        seg_r, edge_r = release(image)
        out = ours(image, release_canny(image))
    report = {
        "seg logits max |diff|": (out.seg - seg_r).abs().max().item(),
        "seg logits max |release|": seg_r.abs().max().item(),
        "edge probability max |diff|": (torch.sigmoid(out.edge) - edge_r).abs().max().item(),
        "argmax agreement": (out.seg.argmax(1) == seg_r.argmax(1)).float().mean().item(),
        "release Canny pixels on": int(release_canny(image).sum().item()),
    }
    for k, v in report.items():
        print(f"{k:32s} {v:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
