"""No host synchronisation in the ops' CUDA paths, and a training step that a CUDA graph can
capture.

On the CPU this is checked by construction: the C++ that the CUDA ops run (csrc/cuda, the shared
headers in csrc/common) and the Python between the user and the ops never call what makes the
host wait for the GPU (.item(), .cpu(), synchronous copies, synchronize calls), except on the
lines marked "host sync allowed" (the one-time set-up of the bad-label status words, and the
error path that raises them). On a GPU: a whole GSCNN training step runs under
torch.cuda.set_sync_debug_mode("error"), and a step of GatedConv2d + DualTaskLoss is captured in a
CUDA graph, replayed, and compared with eager.
"""

import glob
import os
import re

import torch

import gscnn_ops

from conftest import requires_cuda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CPP_SYNCS = re.compile(
    r"\.item\s*[<(]|\.cpu\(\)|\bkCPU\b|cudaMemcpy\s*\(|cudaMemset\s*\(|"
    r"Synchronize\s*\(|cudaMalloc\w*\s*\(|cudaHostAlloc\s*\(|cudaFree\s*\("
)
PY_SYNCS = re.compile(
    r"\.item\(\)|\.cpu\(\)|\.tolist\(\)|\.numpy\(\)|\.nonzero\(|"
    r"masked_select|torch\.cuda\.synchronize"
)


def offending_lines(paths, pattern, allowed_marker=None):
    found = []
    for path in paths:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                code = line.split("//")[0] if path.endswith((".h", ".cu", ".cuh", ".cpp")) else line
                if pattern.search(code) and not (allowed_marker and allowed_marker in line):
                    found.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    return found


def test_cuda_paths_of_the_ops_never_wait_for_the_gpu():
    paths = glob.glob(os.path.join(ROOT, "csrc", "cuda", "*")) + glob.glob(
        os.path.join(ROOT, "csrc", "common", "*.h")
    )
    assert len(paths) > 20
    assert offending_lines(paths, CPP_SYNCS, "host sync allowed") == []


def test_the_scan_finds_a_sync():  # the scan itself can fail
    sample = os.path.join(ROOT, "build", "sync_sample.cu")
    os.makedirs(os.path.dirname(sample), exist_ok=True)
    with open(sample, "w") as f:
        f.write("auto n = count.item<int64_t>();\nC10_CUDA_CHECK(cudaStreamSynchronize(s));\n")
    try:
        assert len(offending_lines([sample], CPP_SYNCS, "host sync allowed")) == 2
    finally:
        os.remove(sample)


def test_python_between_the_user_and_the_ops_never_waits_for_the_gpu():
    package = os.path.join(ROOT, "gscnn_ops")
    paths = glob.glob(os.path.join(package, "ops", "*.py"))
    paths += glob.glob(os.path.join(package, "nn", "*.py"))
    paths += [
        os.path.join(package, "models", name)
        for name in ("gscnn.py", "loss.py", "resnet.py", "wider_resnet.py")
    ]
    assert offending_lines(paths, PY_SYNCS) == []


def small_step_inputs(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, 8, 24, 32, generator=g)
    r = torch.randn(2, 1, 24, 32, generator=g)
    target = torch.randint(0, 5, (2, 24, 32), generator=g)
    target[:, :3, :4] = 255
    return s.to(device), r.to(device), target.to(device)


class GclStep(torch.nn.Module):
    """GatedConv2d -> 5 class logits -> DualTaskLoss (in eval mode, a plain softmax: no random
    numbers, so graph and eager runs compare exactly)."""

    def __init__(self):
        super().__init__()
        self.gcl = gscnn_ops.GatedConv2d(8, 5, 1)
        self.loss = gscnn_ops.DualTaskLoss()

    def forward(self, s, r, target):
        return self.loss(self.gcl(s, r), target)


@requires_cuda
def test_training_step_has_no_host_sync():
    from gscnn_ops.models import GSCNN, GSCNNLoss

    torch.manual_seed(0)
    model = GSCNN(num_classes=5, backbone="resnet18").cuda().train()
    criterion = GSCNNLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    image = torch.randn(2, 3, 64, 96, device="cuda")
    canny = (torch.rand(2, 1, 64, 96, device="cuda") > 0.9).float()
    target = torch.randint(0, 5, (2, 64, 96), device="cuda")
    step = lambda: criterion(model(image, canny), target)["total"]  # noqa: E731
    step().backward()  # warm-up: allocations, cuDNN choices, the status words
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            loss = step()
            loss.backward()
            optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)


@requires_cuda
def test_training_step_is_captured_in_a_cuda_graph():
    torch.manual_seed(0)
    module = GclStep().cuda().train()
    module.loss.eval()
    s, r, target = small_step_inputs("cuda")
    s.requires_grad_()
    params = list(module.parameters())

    def step():
        loss = module(s, r, target)
        grads = torch.autograd.grad(loss, [s] + params)
        return loss, grads

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up on a side stream, as CUDA graphs require
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss, static_grads = step()
    for _ in range(2):
        graph.replay()
        eager_loss, eager_grads = step()
        torch.testing.assert_close(static_loss, eager_loss)
        for a, b in zip(static_grads, eager_grads):
            torch.testing.assert_close(a, b)
    assert torch.isfinite(static_loss) and static_loss > 0
