"""A short CUDA workload for compute-sanitizer (memcheck, racecheck, synccheck, initcheck): every
gated_conv2d kernel on shapes that hit partial tiles, grid-stride loops, channels_last, wide
layers (opt-in shared memory, and the direct / global-scratch variants of layers too wide for
it) and every dtype; edge_targets on label maps of every dtype, strided views and radii reaching
past the image; boundary_fscore_counts on small, odd and multi-word images; the boundary
potential and dual-task loss at sigma 1 and at sigma 10 (global-scratch tiles); and a bad label
reported through the device status word. Exits non-zero when a result disagrees with the CPU
kernels.

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
                    print(
                        f"{'ok ' if same else 'BAD'} edge_targets {dtype} {name} N{N} {H}x{W} "
                        f"radius {radius}"
                    )
    return ok


def main():
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    ok = True
    shapes = [
        (1, 1, 1, 1, 1, 1),
        (2, 8, 1, 8, 7, 13),
        (2, 32, 1, 32, 33, 65),
        (2, 32, 1, 32, 32, 65),  # an even pixel count: the half types' two-pixel forward
        (1, 600, 2, 16, 5, 9),
        (1, 1900, 1, 300, 3, 5),
    ]
    for dtype, tol in [(torch.float32, 1e-4), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)]:
        for N, C, Cr, Cout, H, W in shapes:
            g = torch.Generator().manual_seed(0)
            cpu = [
                torch.randn(*sh, generator=g).to(dtype)
                for sh in [
                    (N, C, H, W),
                    (N, Cr, H, W),
                    (1, C + Cr, 1, 1),
                    (1,),
                    (Cout, C, 1, 1),
                    (Cout,),
                ]
            ]
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
                hidden = [
                    torch.randn(C + Cr, C + Cr, 1, 1, generator=g).to(dtype) * 0.2,
                    torch.randn(C + Cr, generator=g).to(dtype),
                    torch.randn(1, C + Cr, 1, 1, generator=g).to(dtype) * 0.2,
                    cpu[3],
                ]
                out_m, _ = gscnn_ops.gated_conv2d_mlp(
                    args[0], args[1], *[h.cuda() for h in hidden], args[4], args[5]
                )
                ref_m, _ = gscnn_ops.gated_conv2d_mlp(cpu[0], cpu[1], *hidden, cpu[4], cpu[5])
                ok &= check(f"mlp forward {tag}", out_m, ref_m, tol * 10)
    ok &= edge_targets_smoke()
    ok &= boundary_fscore_smoke()
    ok &= dual_task_smoke()
    ok &= bad_label_smoke()
    torch.cuda.synchronize()
    print("ALL OK" if ok else "MISMATCHES FOUND")
    return 0 if ok else 1


def boundary_fscore_smoke():
    """boundary_fscore_counts on CUDA against the CPU kernel: exact integer counts."""
    ok = True
    for n, h, w, k in [(1, 1, 1, 2), (2, 7, 13, 3), (3, 33, 65, 5), (2, 129, 257, 19)]:
        g = torch.Generator().manual_seed(h * w)
        low = torch.rand(n, k, max(1, h // 6), max(1, w // 6), generator=g)
        target = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear").argmax(1)
        pred = torch.where(torch.rand(n, h, w, generator=g) < 0.05, (target + 1) % k, target)
        target = torch.where(torch.rand(n, h, w, generator=g) < 0.03, 255, target).to(torch.uint8)
        radii = [0, 1, 3, 5, 9, 12]
        want = gscnn_ops.boundary_fscore_counts(pred, target, k, radii, 255)
        got = gscnn_ops.boundary_fscore_counts(pred.cuda(), target.cuda(), k, radii, 255)
        same = torch.equal(got.cpu(), want)
        print(f"{'ok ' if same else 'BAD'} boundary_fscore_counts N{n} {h}x{w} K{k}")
        ok &= same
    return ok


def bad_label_smoke():
    """A bad label: NaN loss, no error until check_errors(), then the message, then clean."""
    prob = torch.softmax(torch.randn(2, 3, 20, 30), 1).cuda()
    target = torch.randint(0, 3, (2, 20, 30)).cuda()
    target[1, 4, 7] = 3
    loss = gscnn_ops.dual_task_loss(prob, target)
    try:
        gscnn_ops.check_errors()
        ok = False
    except RuntimeError as e:
        ok = "has label 3 at [1, 4, 7]" in str(e) and bool(torch.isnan(loss))
    gscnn_ops.check_errors()
    print(f"{'ok ' if ok else 'BAD'} bad label reported through the device status word")
    return ok


def dual_task_smoke():
    """boundary_potential and dual_task_loss, forward and backward, on CUDA against the CPU."""
    ok = True
    cases = [
        (1.0, n, k, h, w)
        for n, k, h, w in [(1, 2, 1, 1), (2, 3, 7, 13), (2, 5, 45, 70), (1, 19, 130, 97)]
    ] + [(10.0, 1, 2, 50, 70)]
    for dtype, tol in [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)]:
        for sigma, n, k, h, w in cases:
            g = torch.Generator().manual_seed(n * h * w + k)
            logits = torch.randn(n, k, h, w, generator=g) * 3
            target = torch.randint(0, k, (n, h, w), generator=g)
            target[:, : h // 4, : w // 4] = 255
            prob = logits.softmax(1).to(dtype)
            for device_prob, device_target, name in (
                (prob, target, "cpu"),
                (prob.cuda(), target.cuda(), "cuda"),
            ):
                p = device_prob.detach().requires_grad_()
                zeta = gscnn_ops.boundary_potential(p, sigma)
                loss = gscnn_ops.dual_task_loss(p, device_target, sigma)
                (zeta.float().square().mean() + loss.float()).backward()
                if name == "cpu":
                    want = (zeta.detach(), loss.detach(), p.grad)
                else:
                    got = (zeta.detach(), loss.detach(), p.grad)
            for what, a, b in zip(("zeta", "loss", "grad"), got, want):
                ok &= check(f"dual-task {what} {dtype} sigma {sigma} N{n} K{k} {h}x{w}", a, b, tol)
    return ok


if __name__ == "__main__":
    sys.exit(main())
