"""Peak memory and time of evaluating one Cityscapes-size image (1024x2048) with GSCNN, whole
and tiled: the evidence behind "evaluation at 1024x2048 fits a 16 GB GPU".

    python scripts/eval_memory.py [--device cuda] [--backbone resnet101] [--amp bf16]

On CUDA it reports torch.cuda.max_memory_allocated (what the tensors needed) and
max_memory_reserved (what the caching allocator held); on the CPU the growth of the process's
peak resident set during the forward pass (a proxy). Random weights and input: memory and time
do not depend on them.
"""

import argparse
import resource
import subprocess
import sys
import time

import torch

import gscnn_ops
from gscnn_ops.engine.inference import AMP_DTYPES, infer


def measure(model, device, size, tile, amp_dtype):
    x = torch.randn(1, 3, *size, device=device)
    c = torch.zeros(1, 1, *size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    infer(model, x, c, tile=tile, amp_dtype=amp_dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        return seconds, torch.cuda.max_memory_allocated() - base, torch.cuda.max_memory_reserved()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return seconds, peak - base, None


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), default="none")
    p.add_argument("--size", type=int, nargs=2, default=(1024, 2048))
    p.add_argument("--only", choices=("whole", "tile"), help=argparse.SUPPRESS)
    args = p.parse_args()
    device = torch.device(args.device)
    size = tuple(args.size)
    configs = {"whole": None, "tile": (size[0] // 2, size[1] // 2)}
    if args.only is None:
        print(
            f"GSCNN {args.backbone}, one {size[0]}x{size[1]} image, {device}, amp {args.amp}, "
            f"torch {torch.__version__}"
        )
        print("| inference | seconds | peak growth GiB | reserved GiB |")
        print("|---|---|---|---|")
    if args.only is None and device.type == "cpu":
        # The peak resident set only grows: one process per configuration.
        for name in configs:
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", name], check=True)
        return
    model = gscnn_ops.GSCNN(19, args.backbone).to(device).eval()
    for name, tile in configs.items():
        if args.only not in (None, name):
            continue
        if device.type == "cuda":
            measure(model, device, size, tile, AMP_DTYPES[args.amp])  # warm-up (cuDNN plans)
        s, grown, reserved = measure(model, device, size, tile, AMP_DTYPES[args.amp])
        label = "whole image" if tile is None else f"tile {tile[0]}x{tile[1]}, overlap 1/3"
        res = f"{reserved / 2**30:.2f}" if reserved is not None else "-"
        print(f"| {label} | {s:.2f} | {grown / 2**30:.2f} | {res} |", flush=True)


if __name__ == "__main__":
    main()
