"""Multi-process training through torch.distributed (launched by ``torchrun``), one process per
GPU (NCCL) or per CPU worker (gloo). DistributedDataParallel averages the gradients, so every
rank takes the same optimiser step from the same start and ends with the same weights; each rank
walks its own lanes of history and fills its own replay memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local rank's CUDA device when present, else CPU."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from chartrl.errors import UsageError

            raise UsageError("--device cuda: no CUDA device is available; use --device auto or cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device_request: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), pick_device(device_request)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_request, local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return DistInfo(rank, world, local), device


def wrap(policy: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """The module whose forward the optimiser step goes through (DDP when distributed)."""
    if not info.enabled:
        return policy
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        policy, device_ids=[device.index] if device.type == "cuda" else None
    )


def sync_buffers(policy: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank: DDP broadcasts them at
    the start of each forward, but every rank's last learned pass updates them from its own frames."""
    if info.enabled:
        for buf in policy.buffers():
            dist.broadcast(buf, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
