"""Data-parallel training across processes started by ``torchrun`` (nccl on GPU, gloo on CPU).

Every rank embeds its share of the global P x K batch; embeddings, labels and rows are all-gathered, so every rank
runs PRISM's selection on the same global batch and holds the same bank, centres and threshold window. The gathered
embeddings keep the gradient of the rank's own share; each rank's loss is the global-batch loss times the world size,
so DistributedDataParallel's gradient average equals the gradient of one process on the concatenated batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

from noisekit.device import check_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    group: bool = False  # started by torchrun: a process group exists, also with a single process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Under torchrun, even with one process: the same collectives, DDP and synchronised BatchNorm run."""
        return self.group

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``tensor`` (same shape on all ranks) in rank order; no gradient."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def gather_with_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """Like :meth:`gather`, but this rank's own share keeps its gradient."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.detach().contiguous())
        parts[self.rank] = tensor
        return torch.cat(parts)

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate tensors whose first dimension differs between ranks (evaluation shards)."""
        if not self.distributed:
            return tensor
        sizes = self.gather(torch.tensor([tensor.shape[0]], device=tensor.device))
        padded = torch.zeros((int(sizes.max()), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: tensor.shape[0]] = tensor
        parts = self.gather(padded).split(int(sizes.max()))
        return torch.cat([part[: int(n)] for part, n in zip(parts, sizes, strict=True)])


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch over all ranks, for CPU (gloo), where
    torch's SyncBatchNorm does not run. The all-reduce is differentiable, so gradients flow through the statistics
    as they would in one process holding the whole batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels, dims = x.shape[1], (0, 2, 3)
        count = torch.full((1,), x.numel() / channels, dtype=x.dtype, device=x.device)
        stats = dist_nn.all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = stats[channels : 2 * channels] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        shape = (1, channels, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm2d use global-batch statistics: torch's SyncBatchNorm on GPU, ours on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm2d):
            synced = GlobalBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            ).to(device)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            sync_batchnorm(child, device)
    return module


def setup(device: str) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``, also for one
    process, so that ``--nproc_per_node 1`` runs the multi-GPU code path); a plain single process otherwise."""
    check_device(device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistContext(device=torch.device(device))
    world_size = int(os.environ["WORLD_SIZE"])
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistContext(rank=rank, world_size=world_size, device=target, group=True)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
