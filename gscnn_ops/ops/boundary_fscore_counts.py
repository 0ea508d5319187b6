"""boundary_fscore_counts: the counts of the boundary F-score (DAVIS) — the functional wrapper
and its fake kernel (integer counts: no autograd)."""

from typing import Sequence

import torch
from torch import Tensor

from ._common import OPS, require_cuda_kernels


def boundary_fscore_counts(
    pred: Tensor, target: Tensor, num_classes: int, radii: Sequence[int], ignore_index: int = 255
) -> Tensor:
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

    :class:`gscnnOPS.metrics.BoundaryFScore` turns these counts into precision, recall and F.

    Examples:
        >>> import torch, gscnn_ops
        >>> target = torch.zeros(1, 8, 8, dtype=torch.long)
        >>> target[:, 2:6, 2:6] = 1
        >>> counts = gscnn_ops.boundary_fscore_counts(target, target, 2, [1, 3])
        >>> counts.shape, bool((counts[..., 0] == counts[..., 1]).all())  # perfect: all matched
        (torch.Size([1, 2, 2, 6]), True)
    """
    require_cuda_kernels("boundary_fscore_counts", pred)
    return OPS.boundary_fscore_counts(
        pred, target, int(num_classes), [int(r) for r in radii], int(ignore_index)
    )


@torch.library.register_fake("gscnn_ops::boundary_fscore_counts")
def _boundary_fscore_counts_fake(pred, target, num_classes, radii, ignore_index):
    torch._check(
        pred.dim() == 3 and target.dim() == 3,
        lambda: "gscnn_ops.boundary_fscore_counts: pred and target must be (N, H, W)",
    )
    return pred.new_empty((pred.shape[0], num_classes, len(radii), 6), dtype=torch.int64)
