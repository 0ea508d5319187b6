"""check_errors: bad labels found by CUDA kernels, raised without ever stalling the host."""

import torch

from ._common import HAS_CUDA_KERNELS, OPS


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

    Examples:
        >>> import gscnn_ops
        >>> gscnn_ops.check_errors()  # nothing pending (and on the CPU, never anything)
    """
    if not HAS_CUDA_KERNELS or not torch.cuda.is_initialized():
        return
    if device is None:
        indices = range(torch.cuda.device_count())
    else:
        device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        if device.type != "cuda":
            return
        indices = [device.index if device.index is not None else torch.cuda.current_device()]
    for index in indices:
        OPS._raise_pending_label_errors(index)
