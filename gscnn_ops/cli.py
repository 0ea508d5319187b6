"""The `gscnn` command line (also `python -m gscnn_ops`).

Subcommands:
  demo   the project's main job on embedded data. For now: the fused Gated Convolutional Layers
         of the shape stream (C = 32, 16, 8; one gating channel) on a synthetic input, checked
         against the pure-PyTorch reference and timed against it.
  info   what the installed extension was built with.
"""

import argparse
import json
import statistics
import sys
import time

import torch


def _synthetic_batch(n, h, w, seed):
    """Smooth random 'features' and a gating map with sharp edges, like a shape stream sees."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 32, h // 8 + 1, w // 8 + 1, generator=g)
    s = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    blobs = ((xx * 3).sin() * (yy * 2).cos() > 0.2).float()
    r = (blobs - 0.5).expand(n, 1, h, w).contiguous() * 4
    return s, r


def _median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cmd_demo(args):
    import gscnn_ops

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    s0, r = _synthetic_batch(args.batch, args.height, args.width, args.seed)
    s0, r = s0.to(device), r.to(device)
    print(f"gscnn_ops {gscnn_ops.__version__} demo: shape-stream GCLs on a synthetic "
          f"{args.batch}x32x{args.height}x{args.width} input ({device}, torch {torch.__version__})")
    rows, report = [], {"input": [args.batch, 32, args.height, args.width], "layers": []}
    s = s0
    for c_in, c_out in ((32, 32), (32, 16), (16, 8)):
        layer = gscnn_ops.GatedConv2d(c_in, c_out, gate_channels=1).to(device)
        ref = gscnn_ops.GatedConv2d(c_in, c_out, gate_channels=1, fused=False).to(device)
        ref.load_state_dict(layer.state_dict())
        x = s[:, :c_in].detach().requires_grad_()
        out, alpha = layer(x, r, return_alpha=True)
        ref_out, ref_alpha = ref(x, r, return_alpha=True)
        err = max((out - ref_out).abs().max().item(), (alpha - ref_alpha).abs().max().item())
        (out.square().mean() + alpha.mean()).backward()
        g_fused = x.grad.clone()
        x.grad = None
        (ref_out.square().mean() + ref_alpha.mean()).backward()
        g_err = (g_fused - x.grad).abs().max().item()

        def step(mod):
            def run():
                xx = x.detach().requires_grad_()
                o, a = mod(xx, r, return_alpha=True)
                (o.square().mean() + a.mean()).backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
            return run

        step(layer)(), step(ref)()  # warm-up
        t_fused = _median_ms(step(layer), args.repeats)
        t_ref = _median_ms(step(ref), args.repeats)
        rows.append((c_in, c_out, err, g_err, t_fused, t_ref))
        report["layers"].append({"in": c_in, "out": c_out, "max_abs_err_forward": err,
                                 "max_abs_err_grad": g_err, "fused_ms": t_fused,
                                 "reference_ms": t_ref, "speedup": t_ref / t_fused})
        s = out.detach()
    print(f"{'layer':>10} {'fwd err':>10} {'grad err':>10} {'fused ms':>9} {'ref ms':>9} {'speedup':>8}")
    for c_in, c_out, err, g_err, tf, tr in rows:
        print(f"{c_in:>4}->{c_out:<5} {err:>10.2e} {g_err:>10.2e} {tf:>9.1f} {tr:>9.1f} {tr / tf:>7.2f}x")
    print("(forward+backward, median of", args.repeats, "runs; errors are fused vs reference)")
    worst = max(max(r_[2], r_[3]) for r_ in rows)
    ok = worst < 1e-3
    print("result:", "fused kernels agree with the reference" if ok else "MISMATCH")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print("report written to", args.json)
    return 0 if ok else 1


def cmd_info(args):
    import gscnn_ops

    info = dict(gscnn_ops.build_info())
    info["cuda_kernels_registered"] = gscnn_ops.has_cuda_kernels()
    info["cuda_available"] = torch.cuda.is_available()
    print(json.dumps(info, indent=1))
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="gscnn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the demonstration on embedded synthetic data")
    d.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    d.add_argument("--batch", type=int, default=2)
    d.add_argument("--height", type=int, default=256)
    d.add_argument("--width", type=int, default=512)
    d.add_argument("--repeats", type=int, default=5)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", help="also write the results to this JSON file")
    d.set_defaults(fn=cmd_demo)
    from .engine import train

    train.add_parser(sub)
    i = sub.add_parser("info", help="show how the extension was built")
    i.set_defaults(fn=cmd_info)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("batch", "height", "width", "repeats"):
        if getattr(args, name, 1) < 1:
            build_parser().error(f"--{name} must be at least 1")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
