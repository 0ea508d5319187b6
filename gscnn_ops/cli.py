"""The `gscnn` command line (also `python -m gscnn_ops`).

Subcommands:
  demo     the project's main job: train and evaluate GSCNN on embedded synthetic data
  train    train GSCNN or the baseline (one process, or many under torchrun)
  eval     mIoU, boundary F-scores and the distance-based evaluation of a checkpoint
  predict  segment image files: colour seg, overlay, edge map and gate maps as PNG
  convert-release  a checkpoint of the authors' release as a gscnn_ops checkpoint
  export   a checkpoint as a torch.export program (.pt2) or an AOTInductor package
  ablate   seeded ablation study: baseline vs GSCNN variants, with the spread over seeds
  info     what the installed extension was built with
"""

import argparse
import json
import sys

import torch


def cmd_info(args):
    import gscnn_ops
    from gscnn_ops._extension import gpu_coverage

    info = dict(gscnn_ops.build_info())
    info["cuda_kernels_registered"] = gscnn_ops.has_cuda_kernels()
    info["cpu_kernels"] = torch.ops.gscnn_ops._cpu_isa()
    info["cuda_available"] = torch.cuda.is_available()
    info["gpus"] = gpu_coverage(info)
    print(json.dumps(info, indent=1))
    return 0


def build_parser():
    from .engine import ablate, convert, demo, evaluate, export, predict, train

    p = argparse.ArgumentParser(
        prog="gscnn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    for module in (demo, train, evaluate, predict, convert, export, ablate):
        module.add_parser(sub)
    i = sub.add_parser("info", help="show how the extension was built")
    i.set_defaults(fn=cmd_info)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
