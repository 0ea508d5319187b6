"""The functional API of gscnn_ops: thin wrappers over the fused custom ops.

Each function takes and returns ordinary tensors, supports autograd, torch.compile(fullgraph=True),
CUDA streams and autocast (inputs are cast to the autocast dtype, as torch.nn.functional.conv2d
does), and validates its arguments with errors that name the op and the argument.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._extension import has_cuda_kernels

_HAS_CUDA_KERNELS = has_cuda_kernels()
_ops = torch.ops.gscnn_ops


def _require_cuda_kernels(op_name, t):
    """A clear error for CUDA tensors when the CUDA kernels were not compiled in."""
    if isinstance(t, Tensor) and t.device.type == "cuda" and not _HAS_CUDA_KERNELS:
        raise RuntimeError(
            f"gscnn_ops.{op_name}: the tensors are on CUDA but gscnn_ops was built without its "
            "CUDA kernels. Rebuild with CUDA: FORCE_CUDA=1 pip install --no-build-isolation "
            "--force-reinstall --no-deps ."
        )


def _prepare(op_name, tensors):
    """Autocast casting and a clear error for CUDA tensors without compiled CUDA kernels."""
    s = tensors[0]
    if isinstance(s, Tensor):
        device = s.device.type
        _require_cuda_kernels(op_name, s)
        if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
            # As autocast treats conv2d: float32/16/bf16 go to the autocast dtype, float64 stays.
            dtype = torch.get_autocast_dtype(device)
            tensors = [t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point()
                       and t.dtype != torch.float64 else t for t in tensors]
    return tensors


def gated_conv2d(s: Tensor, r: Tensor, gate_weight: Tensor, gate_bias: Tensor, weight: Tensor,
                 bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Gated Convolutional Layer of Gated-SCNN (paper eq. 1-2), fused.

    alpha = sigmoid(gate_weight . [s || r] + gate_bias)
    out   = conv1x1(s * (1 + alpha), weight, bias)

    Args:
        s: shape-stream features, (N, C, H, W).
        r: gating features from the regular stream, (N, Cr, H, W).
        gate_weight: (1, C + Cr, 1, 1). gate_bias: (1,).
        weight: (C_out, C, 1, 1). bias: (C_out,) or None.

    All tensors share one device and one dtype: float32, float16 or bfloat16 (float64 on CPU);
    accumulation is in float32 (float64 for float64). NCHW, channels_last and strided views are
    read as they are; outputs are channels_last when s is.

    Returns:
        (out, alpha): out (N, C_out, H, W) and the gate map alpha (N, 1, H, W).
    """
    s, r, gate_weight, gate_bias, weight, bias = _prepare(
        "gated_conv2d", [s, r, gate_weight, gate_bias, weight, bias])
    return _ops.gated_conv2d(s, r, gate_weight, gate_bias, weight, bias)


def gated_conv2d_mlp(s: Tensor, r: Tensor, hidden_weight: Tensor, hidden_bias: Tensor,
                     gate_weight: Tensor, gate_bias: Tensor, weight: Tensor,
                     bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Gated Convolutional Layer with the authors' two-layer gate (BatchNorms folded in), fused.

    alpha = sigmoid(gate_weight . relu(hidden_weight . [s || r] + hidden_bias) + gate_bias)
    out   = conv1x1(s * (1 + alpha), weight, bias)

    hidden_weight: (M, C + Cr, 1, 1), hidden_bias: (M,), gate_weight: (1, M, 1, 1),
    gate_bias: (1,); the rest as in :func:`gated_conv2d`. Used by ``GatedConv2d(gate="mlp")`` in
    eval mode. Its backward (for eval-mode fine-tuning) is exact but not fused.
    """
    args = _prepare("gated_conv2d_mlp",
                    [s, r, hidden_weight, hidden_bias, gate_weight, gate_bias, weight, bias])
    return _ops.gated_conv2d_mlp(*args)


def boundary_fscore_counts(pred: Tensor, target: Tensor, num_classes: int, radii: Sequence[int],
                           ignore_index: int = 255) -> Tensor:
    """Per-image, per-class counts of the boundary F-score (the DAVIS measure), fused.

    For each image n, class k and radius r = radii[j] (pixels), with the pixels whose target is
    ``ignore_index`` removed from both maps:

      pred mask   = (pred == k) & valid,   target mask = (target == k) & valid
      boundary    = pixels that differ from their east, south or south-east neighbour (DAVIS's
                    seg2bmap; neighbours outside the image are not compared)
      matched     = boundary pixels with a boundary pixel of the other map within the disk
                    x^2 + y^2 <= r^2

    Args:
        pred, target: (N, H, W) integer label maps (uint8, int32 or int64 are read in place, any
            strides; other integer types are converted), on one device. Target labels must be in
            [0, num_classes) or ignore_index; pred labels in [0, num_classes), or ignore_index for
            pixels of no class.
        num_classes: K. radii: 1 to 32 non-negative pixel radii.

    Returns:
        int64 (N, K, R, 6): [pred boundary pixels, of which matched, target boundary pixels, of
        which matched, pred pixels of class k, target pixels of class k]. Exact integer counts:
        the same on every device and for any thread count. On CUDA the op reads one status word
        back to the host (to raise on bad labels), so it synchronises with the stream.

    :class:`gscnn_ops.metrics.BoundaryFScore` turns these counts into precision, recall and F.
    """
    _require_cuda_kernels("boundary_fscore_counts", pred)
    return _ops.boundary_fscore_counts(pred, target, int(num_classes), [int(r) for r in radii],
                                       int(ignore_index))
