"""torch.distributed plumbing for ``torchrun`` (DDP): nothing home-made beyond gathering rows.

Run ``torchrun --nproc_per_node 2 -m vpr_edge.training.cli_train fit ...``; without torchrun
everything here degrades to a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup() -> ProcessGroup:
    """Join the torchrun process group (gloo on CPU, nccl on GPU) if launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ProcessGroup()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return ProcessGroup(rank=dist.get_rank(), world=dist.get_world_size())


def teardown(group: ProcessGroup) -> None:
    if group.active and dist.is_initialized():
        dist.destroy_process_group()


def gather_rows(local: np.ndarray, total: int, group: ProcessGroup) -> np.ndarray:
    """Rows ``rank::world`` computed by each process -> all ``total`` rows, in order."""
    if not group.active:
        return local
    width = local.shape[1]
    per_rank = -(-total // group.world)
    padded = torch.zeros(per_rank, width, dtype=torch.float32)
    padded[: local.shape[0]] = torch.from_numpy(np.asarray(local, dtype=np.float32))
    parts = [torch.zeros_like(padded) for _ in range(group.world)]
    dist.all_gather(parts, padded)
    out = np.empty((total, width), dtype=np.float32)
    for rank, part in enumerate(parts):
        rows = len(range(rank, total, group.world))
        out[rank::group.world] = part[:rows].numpy()
    return out


def average(value: float, group: ProcessGroup) -> float:
    if not group.active:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / group.world


def barrier(group: ProcessGroup) -> None:
    if group.active:
        dist.barrier()
