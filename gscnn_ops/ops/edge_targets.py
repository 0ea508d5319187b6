"""edge_targets: the edge ground truth of the shape stream — the functional wrapper and its
fake kernel (integer input: no autograd)."""

import torch
from torch import Tensor

from ._common import OPS, prepare


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

    Examples:
        >>> import torch, gscnn_ops
        >>> target = torch.tensor([[[0, 0, 1, 1, 1, 1]]])
        >>> gscnn_ops.edge_targets(target, radius=1).int()
        tensor([[[0, 1, 1, 0, 0, 0]]], dtype=torch.int32)
    """
    (target,) = prepare("edge_targets", [target])
    return OPS.edge_targets(target, float(radius), int(ignore_index))


_LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_edge_targets_fake(op, target, radius):
    # The same checks, and messages, as csrc/common/edge_targets_launch.h.
    torch._check(
        target.dim() == 3,
        lambda: (
            f"{op}: argument 'target' must be a 3-D (N, H, W) label map tensor, got a "
            f"{target.dim()}-D tensor of shape {list(target.shape)}"
        ),
    )
    torch._check(
        target.dtype in _LABEL_DTYPES,
        lambda: (
            f"{op}: argument 'target' must be an integer label map (uint8, int8, int16, int32 or "
            f"int64), got {target.dtype}"
        ),
    )
    torch._check(
        radius >= 0,
        lambda: f"{op}: argument 'radius' must be a distance in pixels >= 0, got {radius}",
    )


@torch.library.register_fake("gscnn_ops::edge_targets")
def _edge_targets_fake(target, radius=2.0, ignore_index=255):
    _check_edge_targets_fake("gscnn_ops.edge_targets", target, radius)
    return target.new_empty(target.shape, dtype=torch.bool)  # contiguous, like the kernels
