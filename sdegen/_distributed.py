"""Data-parallel plumbing: rank/world size from the torchrun environment, device choice, process group.

Under `torchrun --nproc_per_node=N`, each process sees RANK, WORLD_SIZE and LOCAL_RANK. Every rank
draws the randomness of the *global* batch from identically seeded generators and keeps its own
shard, so a data-parallel run computes the same gradients as one process on the global batch (up to
the summation order of the all-reduce). Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0  # this process's index in [0, world_size)
    world_size: int = 1  # number of data-parallel processes
    local_rank: int = 0  # index on this machine (picks the GPU)

    @classmethod
    def from_env(cls) -> DistInfo:
        """Read RANK, WORLD_SIZE, LOCAL_RANK (as set by torchrun); defaults to a single process."""
        try:
            info = cls(
                int(os.environ.get("RANK", 0)),
                int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0))),
            )
        except ValueError as e:
            raise ValueError(f"bad RANK/WORLD_SIZE/LOCAL_RANK environment ({e})") from e
        if not 0 <= info.rank < info.world_size:
            raise ValueError(f"RANK={info.rank} must lie in [0, WORLD_SIZE={info.world_size})")
        return info

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """ "auto" → cuda:<local_rank> if CUDA is available, else cpu; other names are used as given."""
    if name == "auto":
        return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{info.local_rank}")
    return device


def init_process_group(info: DistInfo, device: torch.device) -> bool:
    """Initialise the default process group (nccl on CUDA, gloo on CPU) if needed; True if this call did."""
    if info.world_size == 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=info.rank, world_size=info.world_size)
    return True
