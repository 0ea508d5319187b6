"""Benchmarks of the whole GSCNN: a training step (forward + GSCNNLoss + backward) and inference,
with gscnn_ops' fused kernels, with their pure-PyTorch references (``fused=False``), and the
DeepLabV3+ baseline of the same trunk (``shape_stream=False``, cross-entropy only): the cost of
the shape stream and the dual-task loss over the baseline.

  CPU:  ResNet-18 trunk, 2 x 3 x 256 x 512, float32, output stride 8.
  CUDA: ResNet-50 trunk, 8 x 3 x 800 x 800, bfloat16 autocast (skipped without a GPU).
Groups are "<device>-model-<train|infer>"; extra_info has images/s and peak memory.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from gscnn_ops.models import GSCNN
from gscnn_ops.models.loss import GSCNNLoss

CASES = {"cpu": ("resnet18", 2, 256, 512, None), "cuda": ("resnet50", 8, 800, 800, torch.bfloat16)}
SMOKE = {"cpu": (1, 64, 96), "cuda": (1, 64, 96)}
IMPLS = ("gscnn-fused", "gscnn-reference", "baseline")


def _batch(device, n, h, w, classes=19, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, 3, h, w, generator=g).to(device)
    canny = (torch.rand(n, 1, h, w, generator=g) > 0.9).float().to(device)
    target = torch.randint(0, classes, (n, h // 16 + 1, w // 16 + 1), generator=g)
    target = F.interpolate(target[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    return image, canny, target.to(device)


def _models(device, backbone):
    torch.manual_seed(0)
    fused = GSCNN(19, backbone, fused=True).to(device).train()
    reference = copy.deepcopy(fused)
    for m in reference.modules():
        if hasattr(m, "fused"):
            m.fused = False
    baseline = GSCNN(19, backbone, shape_stream=False).to(device).train()
    return {"gscnn-fused": fused, "gscnn-reference": reference, "baseline": baseline}


_MODELS = {}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("direction", ["train", "infer"])
@pytest.mark.parametrize("impl", IMPLS)
def test_gscnn_model(benchmark, peak_memory, device, direction, impl):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    backbone, n, h, w, amp = CASES[device]
    if benchmark.disabled:
        n, h, w = SMOKE[device]
    key = (device, backbone)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = _models(device, backbone)
    model = _MODELS[key][impl]
    # The reference case runs the reference losses too (edge targets and dual-task term in plain
    # PyTorch), so that it is the whole unfused pipeline against the whole fused one.
    loss_fn = None if impl == "baseline" else GSCNNLoss(fused=impl == "gscnn-fused")
    image, canny, target = _batch(device, n, h, w)

    def call():
        with torch.autocast(device, dtype=amp, enabled=amp is not None):
            if direction == "infer":
                with torch.no_grad():
                    result = model.eval()(image, canny).seg
                model.train()
            else:
                out = model(image, canny)
                loss = (
                    loss_fn(out, target)["total"]
                    if loss_fn is not None
                    else F.cross_entropy(out.seg.float(), target, ignore_index=255)
                )
                loss.backward()
                model.zero_grad(set_to_none=True)
                result = loss.detach()
        if device == "cuda":
            torch.cuda.synchronize()
        return result

    benchmark.group = f"{device}-model-{direction}"
    info = benchmark.extra_info
    info.update(impl=impl, backbone=backbone, shape=[n, 3, h, w], amp=str(amp) if amp else None)
    first = call()
    assert torch.isfinite(first).all()
    info["peak_mem_bytes"] = peak_memory(call, device)
    rounds = 1 if benchmark.disabled else (3 if device == "cpu" else 10)
    benchmark.pedantic(
        call, rounds=rounds, iterations=1, warmup_rounds=0 if benchmark.disabled else 1
    )
    if benchmark.stats is not None:  # None under --benchmark-disable
        info["images_per_s"] = n / benchmark.stats.stats.median
