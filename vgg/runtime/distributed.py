"""Process groups from torchrun or SLURM environments; rank-0-only helpers.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Under `srun`
without torchrun, SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID give the ranks; MASTER_ADDR
must then be exported by the job script (the first host of the allocation: see README),
and MASTER_PORT defaults to 29500.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEFAULT_MASTER_PORT = "29500"


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _environment() -> tuple[int, int, int, int] | None:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        local_world = int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), local_world
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        # SLURM_TASKS_PER_NODE looks like "4(x2)" or "2,1": the first count is this layout's per-node size
        tasks_per_node = int(re.split(r"[(,]", env.get("SLURM_NTASKS_PER_NODE", env.get("SLURM_TASKS_PER_NODE", "1")))[0])
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)), tasks_per_node
    return None


def setup(device: str = "auto") -> DistributedContext:
    """Join the process group if launched by torchrun or srun (NCCL on GPUs, gloo on CPU)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    found = _environment()
    if found is None:
        return DistributedContext(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, world_size, local_rank, local_world = found
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise ValueError("running under SLURM with several tasks but MASTER_ADDR is not set: export it in the job script")
        os.environ.setdefault("MASTER_PORT", DEFAULT_MASTER_PORT)
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world_size))
        # gloo carries the small CPU tensors (step flags, counts), NCCL the CUDA ones (gradients)
        dist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, local_world, target)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (identity when not distributed)."""
    if dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
    return values


def gather_lists(items: list) -> list:
    """The concatenation, in rank order, of every rank's `items` (`items` when not distributed)."""
    if not dist.is_initialized():
        return list(items)
    gathered: list[list] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part]
