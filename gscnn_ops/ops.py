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


# Default threshold of P+ for dual_task_loss. A one-hot step edge blurred with sigma = 1 has
# zeta_hat = 0.227, 0.105, 0.021 at the pixels 1, 2, 3 px from the edge, 1.6e-3 at 4 px (only
# the last, tiny taps of the Gaussian reach there) and exactly 0 beyond. In flat regions of a
# prediction zeta is the blurred gradient of noise (rounding: 1e-8 in float32, ~1e-3 in
# bfloat16). 1e-2 keeps the band of 3 px on each side of every boundary, where the loss is
# informative, and excludes flat regions and the tails of the taps, which would otherwise count
# as "non-zero" and dilute the mean (tests/test_dual_task_loss.py, test_default_threshold_*).
DUAL_TASK_THRESHOLD = 1e-2


def boundary_potential(prob: Tensor, sigma: float = 1.0) -> Tensor:
    """Boundary potential of class maps (Gated-SCNN eq. 4), fused.

    zeta = (1/sqrt 2) * sqrt(gx^2 + gy^2) per channel, with (gx, gy) the central differences
    (replicate borders) of G * prob, G the Gaussian of standard deviation ``sigma`` truncated at
    radius R = ceil(3 sigma), normalised, separable, replicate borders. The gradient is taken as
    0 where zeta = 0.

    Args:
        prob: (N, K, H, W) class probabilities, float32/float16/bfloat16 (float64 on CPU).
        sigma: in (0, 32/3].

    Returns:
        zeta, (N, K, H, W), dtype of prob (accumulation in float32).
    """
    (prob,) = _prepare("boundary_potential", [prob])
    return _ops.boundary_potential(prob, float(sigma))


def dual_task_loss(prob: Tensor, target: Tensor, sigma: float = 1.0,
                   threshold: float = DUAL_TASK_THRESHOLD, ignore_index: int = 255) -> Tensor:
    """Dual-task loss of Gated-SCNN (eq. 5), fused: forward and backward each read prob and
    target once and keep nothing of size N*K*H*W besides the gradient.

    loss = sum_{P+} |zeta - zeta_hat| / max(|P+|, 1), with zeta = boundary_potential(prob),
    zeta_hat the same for the one-hot labels (every channel 0 at ignore pixels), and P+ the
    (n, k, pixel) positions with zeta > threshold or zeta_hat > threshold, among pixels with no
    ignore pixel within Chebyshev distance R + 1 (so the loss never depends on anything under an
    ignore region). The gradient treats P+ and |P+| as constants, with sign(0) = 0.

    Args:
        prob: (N, K, H, W) class probabilities (softmax or Gumbel-softmax of the logits),
            float32/float16/bfloat16 (float64 on CPU).
        target: (N, H, W) int64 labels in [0, K) or ``ignore_index``.
        sigma: Gaussian standard deviation, in (0, 32/3].
        threshold: P+ threshold (default 1e-2: see DUAL_TASK_THRESHOLD).
        ignore_index: label of pixels left out.

    Returns:
        0-dim tensor, dtype of prob.

    Bad labels (neither in [0, K) nor ``ignore_index``) are found by the kernel itself, without a
    host synchronisation: on the CPU they raise at once; on CUDA that call's loss is NaN and the
    error is raised by the next call on the device or by :func:`check_errors`.
    """
    (prob,) = _prepare("dual_task_loss", [prob])
    loss, _ = _ops.dual_task_loss(prob, target, float(sigma), float(threshold), int(ignore_index))
    return loss
def check_errors(device=None) -> None:
    """Raises the first bad label that a CUDA op found and has not reported yet.

    On CUDA, the ops that read label maps (:func:`dual_task_loss`, :func:`boundary_fscore_counts`)
    check every label inside their kernels and never make the host wait for the GPU: a bad label
    (neither a class index in [0, K) nor ``ignore_index``) makes that call's loss NaN, and is
    raised by the op's next call on the same device, or here, which waits for the device and
    raises at once (``gscnn train`` calls it at every log step). On the CPU the ops raise
    immediately and this does nothing.

    Args:
        device: a CUDA device (index, string or torch.device); None: every device that ran one
            of those ops.
    """
    if not _HAS_CUDA_KERNELS or not torch.cuda.is_initialized():
        return
    if device is None:
        indices = range(torch.cuda.device_count())
    else:
        device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        if device.type != "cuda":
            return
        indices = [device.index if device.index is not None else torch.cuda.current_device()]
    for index in indices:
        _ops._raise_pending_label_errors(index)


def edge_targets(target: Tensor, radius: float = 2.0, ignore_index: int = 255) -> Tensor:
    """Edge ground truth for Gated-SCNN's shape stream, computed on the target's device.

    A pixel is an edge when its label is valid (``!= ignore_index``) and some pixel of the same
    image within Euclidean distance ``radius`` of it (integer offsets with
    ``dy**2 + dx**2 <= radius**2``) has a different valid label. Every class gets boundaries,
    class 0 included (the authors' release skips class 0, i.e. road on Cityscapes). Pixels outside
    the image do not count (the image border is not an edge), neither do ignored pixels, and
    ignored pixels are never edges. ``radius=2`` gives the ~2 px band on each side of a boundary
    that the authors compute with per-class distance transforms.

    Args:
        target: integer label map (N, H, W): uint8, int8, int16, int32 or int64, on the CPU or a
            CUDA device. Strided views are accepted: the CUDA kernel reads any strides as they
            are; the CPU kernel too, except that a map whose columns are not adjacent in memory
            (stride(2) != 1: a transposed view, the channel of an NHWC tensor) is first copied
            to a contiguous one, which is much faster than strided reads for a stencil.
        radius: distance in pixels, >= 0 (0 or anything below 1 gives no edges; ``inf`` reaches
            the whole image). The work per pixel grows with ``radius**2``.
        ignore_index: the label of pixels to ignore. Every other value, negative ones included,
            is a class label: no ``num_classes`` is needed and labels are not range-checked
            (that would cost a pass over the map and, on CUDA, a host synchronisation). An
            ``ignore_index`` the dtype cannot hold (e.g. -1 with uint8 labels) ignores nothing.

    Returns:
        bool tensor (N, H, W), contiguous, on the target's device. Not differentiable (integer
        input); works under ``torch.compile(fullgraph=True)``.
    """
    (target,) = _prepare("edge_targets", [target])
    return _ops.edge_targets(target, float(radius), int(ignore_index))
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
