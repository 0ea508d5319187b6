"""Multi-process training through PyTorch's own engine: ``torchrun`` starts the processes,
``torch.distributed`` connects them (NCCL on GPUs, gloo on CPUs), DistributedDataParallel
averages the gradients, and batch-norm statistics are synchronised across processes.

Launch: ``torchrun --nproc_per_node 8 -m gscnn_ops train ...`` (or ``--nnodes``/``--rdzv-*`` for
several machines). Without torchrun's environment, training runs in one process.
"""

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Joins the process group that torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_*),
    if any. ``device`` is "cpu", "cuda" or "cuda:N"; with several processes on CUDA each takes
    the GPU of its local rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"gscnn train: --device {device} asked for CUDA, but torch sees no "
                f"CUDA GPU (use --device cpu)"
            )
        if world > 1:
            if local >= torch.cuda.device_count():
                raise RuntimeError(
                    f"gscnn train: local rank {local} has no GPU (this machine "
                    f"has {torch.cuda.device_count()})"
                )
            dev = torch.device("cuda", local)
        if dev.index is None:  # plain "cuda": the current GPU, named so that DDP can use it
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            device_id=dev if dev.type == "cuda" else None,
        )
    return DistInfo(world, rank, local, dev)


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward is the sum of the gradients over processes: every
    process's output feeds every process's loss."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """Synchronised BatchNorm for CPU processes (gloo), where ``torch.nn.SyncBatchNorm`` refuses
    to run: the batch mean and variance are taken over all processes' samples by all-reducing
    per-channel sums with a collective that passes gradients back through itself, so forward,
    backward and running statistics are those of one batch-norm over the global batch. Eval mode
    uses the running statistics, as BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        xf = x.float()
        local = torch.stack(
            [
                xf.sum((0, 2, 3)),
                xf.square().sum((0, 2, 3)),
                xf.new_full((x.shape[1],), float(x.numel() // x.shape[1])),
            ]
        )
        total = _AllReduceSum.apply(local)
        n = total[2]
        mean = total[0] / n
        var = (total[1] / n - mean.square()).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        y = (xf - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers -> ``torch.nn.SyncBatchNorm`` on GPUs, :class:`AllReduceBatchNorm2d` on
    CPUs (same parameters and buffers, so checkpoints stay interchangeable)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, AllReduceBatchNorm2d):
        out = AllReduceBatchNorm2d(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``values`` over the processes (for logging)."""
    if info.distributed:
        # NCCL reduces GPU tensors only, gloo CPU ones: reduce on the process's device.
        reduced = values.to(info.device, copy=True)
        dist.all_reduce(reduced)
        values = reduced.to(values.device) / info.world_size
    return values


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every process's ``obj`` (a list of one item without torchrun)."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def state_digest(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes and bytes): equal
    digests mean bitwise-equal weights."""
    h = hashlib.sha256()
    for name, t in getattr(module, "module", module).state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
