"""What every op module shares: the library's op namespace, the CUDA-kernels check, autocast
casting, the layout the kernels write, and the guard against silent double backward."""

import torch
from torch import Tensor

from .._extension import has_cuda_kernels

HAS_CUDA_KERNELS = has_cuda_kernels()
OPS = torch.ops.gscnn_ops


def require_cuda_kernels(op_name, t):
    """A clear error for CUDA tensors when the CUDA kernels were not compiled in."""
    if isinstance(t, Tensor) and t.device.type == "cuda" and not HAS_CUDA_KERNELS:
        raise RuntimeError(
            f"gscnn_ops.{op_name}: the tensors are on CUDA but gscnn_ops was built without its "
            "CUDA kernels. Rebuild with CUDA: FORCE_CUDA=1 pip install --no-build-isolation "
            "--force-reinstall --no-deps ."
        )


def prepare(op_name, tensors):
    """Autocast casting and a clear error for CUDA tensors without compiled CUDA kernels."""
    s = tensors[0]
    if isinstance(s, Tensor):
        device = s.device.type
        require_cuda_kernels(op_name, s)
        if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
            # As autocast treats conv2d: float32/16/bf16 go to the autocast dtype, float64 stays.
            dtype = torch.get_autocast_dtype(device)
            tensors = [
                t.to(dtype)
                if isinstance(t, Tensor) and t.is_floating_point() and t.dtype != torch.float64
                else t
                for t in tensors
            ]
    return tensors


def output_memory_format(t):
    """The layout the kernels write (mirror of csrc/common/checks.h): channels_last when the
    input is channels_last and not also plain contiguous, NCHW otherwise."""
    if (
        t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


# The fused backward kernels have no derivative of their own. Without an autograd formula their
# outputs would simply not require grad, and a second derivative through them (a gradient
# penalty, meta-learning) would come out as zeros with only a warning: a silently wrong answer.
# So each backward op gets a formula that raises, naming the op and the way out.
def register_no_double_backward(backward_op, forward_op):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"gscnn_ops.{backward_op}: double backward is not supported (a derivative of the "
            f"gradient of gscnn_ops.{forward_op}: the fused backward kernel has none). For "
            f"second derivatives use gscnn_ops.reference.{forward_op}, whose plain tensor ops "
            f"autograd differentiates twice."
        )

    torch.library.register_autograd(
        f"gscnn_ops::{backward_op}", backward, setup_context=lambda ctx, inputs, output: None
    )
