"""A short CUDA workload for compute-sanitizer (memcheck, racecheck): every gated_conv2d kernel on
shapes that hit partial tiles, grid-stride loops, channels_last, wide layers (opt-in shared
memory) and every dtype, and edge_targets on label maps of every dtype, strided views and radii
reaching past the image. Exits non-zero when a result disagrees with the CPU kernels.

    compute-sanitizer --tool memcheck python scripts/cuda_smoke.py
"""

import sys

import torch

import gscnn_ops


def check(name, got, want, tol):
    err = (got.float().cpu() - want.float()).abs().max().item() if got.numel() else 0.0
    scale = max(1.0, want.float().abs().max().item() if want.numel() else 1.0)
    ok = err <= tol * scale
    print(f"{'ok ' if ok else 'BAD'} {name}: max abs err {err:.3g} (scale {scale:.3g})")
    return ok


def edge_targets_smoke():
    ok = True
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.uint8, torch.int32, torch.int64):
        for N, H, W in [(1, 1, 1), (2, 7, 13), (1, 300, 257)]:
            labels = torch.randint(0, 5, (N, H, W), generator=g)
            labels[torch.rand(N, H, W, generator=g) < 0.1] = 255
            labels = labels.to(dtype)
            for name, view in [("contiguous", labels), ("transposed", labels.transpose(1, 2))]:
                for radius in (0.0, 2.0, 5.5, float(H + W)):
                    got = gscnn_ops.edge_targets(view.cuda(), radius)
                    want = gscnn_ops.edge_targets(view, radius)
                    same = torch.equal(got.cpu(), want)
                    ok &= same
                    print(f"{'ok ' if same else 'BAD'} edge_targets {dtype} {name} N{N} {H}x{W} "
                          f"radius {radius}")
    return ok


def main():
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    ok = True
    shapes = [(1, 1, 1, 1, 1, 1), (2, 8, 1, 8, 7, 13), (2, 32, 1, 32, 33, 65), (1, 600, 2, 16, 5, 9)]
    for dtype, tol in [(torch.float32, 1e-4), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)]:
        for N, C, Cr, Cout, H, W in shapes:
            g = torch.Generator().manual_seed(0)
            cpu = [torch.randn(*sh, generator=g).to(dtype) for sh in
                   [(N, C, H, W), (N, Cr, H, W), (1, C + Cr, 1, 1), (1,), (Cout, C, 1, 1), (Cout,)]]
            cpu[0], cpu[1] = cpu[0] * 0.5, cpu[1] * 0.5
            for layout in ("nchw", "channels_last"):
                args = [t.cuda() for t in cpu]
                if layout == "channels_last":
                    args[0] = args[0].contiguous(memory_format=torch.channels_last)
                    args[1] = args[1].contiguous(memory_format=torch.channels_last)
                tag = f"{dtype} {layout} N{N} C{C} Cr{Cr} Cout{Cout} {H}x{W}"
                out, alpha = gscnn_ops.gated_conv2d(*args)
                ref_out, ref_alpha = gscnn_ops.gated_conv2d(*cpu)
                ok &= check(f"forward out {tag}", out, ref_out, tol)
                ok &= check(f"forward alpha {tag}", alpha, ref_alpha, tol)
                go = torch.randn(N, Cout, H, W, generator=g).to(dtype)
                ga = torch.randn(N, 1, H, W, generator=g).to(dtype)
                grads = torch.ops.gscnn_ops.gated_conv2d_backward(go.cuda(), ga.cuda(), *args[:5])
                ref = torch.ops.gscnn_ops.gated_conv2d_backward(go, ga, *cpu[:5])
                for i, (a, b) in enumerate(zip(grads, ref)):
                    ok &= check(f"backward grad[{i}] {tag}", a, b, tol * 10)
                hidden = [torch.randn(C + Cr, C + Cr, 1, 1, generator=g).to(dtype) * 0.2,
                          torch.randn(C + Cr, generator=g).to(dtype),
                          torch.randn(1, C + Cr, 1, 1, generator=g).to(dtype) * 0.2, cpu[3]]
                out_m, _ = gscnn_ops.gated_conv2d_mlp(args[0], args[1], *[h.cuda() for h in hidden],
                                                       args[4], args[5])
                ref_m, _ = gscnn_ops.gated_conv2d_mlp(cpu[0], cpu[1], *hidden, cpu[4], cpu[5])
                ok &= check(f"mlp forward {tag}", out_m, ref_m, tol * 10)
    ok &= edge_targets_smoke()
    torch.cuda.synchronize()
    print("ALL OK" if ok else "MISMATCHES FOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
