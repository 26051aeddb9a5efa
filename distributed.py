"""Multi-process training under torchrun: one object that knows the rank and does the collectives.

With WORLD_SIZE unset or 1 every method is a cheap single-process no-op, so train() has one code path.
"""
import os

import torch
import torch.distributed as dist
# DDP imports this module lazily, and its functions' defaults (group=group.WORLD) are evaluated at import:
# imported after init_process_group they keep the default group alive past destroy_process_group, and the
# gloo threads are then torn down during interpreter exit, which aborts rank 0 at random ("terminate called
# without an active exception": 1 in 40 two-process training runs here, 8-19 in 40 of a bare DDP script;
# none in 40 once this import comes first).
import torch.distributed.nn.functional  # must precede init_process_group
from torch.utils.data import DistributedSampler

from dataset import epoch_order


class Distributed:
    def __init__(self, device_type: str = "cpu"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            # gloo on CPU; nccl between GPUs (torchrun sets MASTER_ADDR/PORT, RANK, WORLD_SIZE)
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: cuda -> cuda:LOCAL_RANK."""
        if self.enabled and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def broadcast(self, value):
        """Rank 0's value of any picklable object (e.g. the run folder it chose)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_true(self, flag: bool, device) -> bool:
        """True only if flag is true on every rank: ranks must skip a NaN step or stop together,
        or the others would wait forever in DDP's gradient all-reduce."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def any_true(self, flag: bool, device) -> bool:
        return not self.all_true(not flag, device)

    def mean(self, values: dict) -> dict:
        """Average a dict of scalar tensors over ranks (one collective)."""
        if not self.enabled or not values:
            return values
        keys = list(values)
        stacked = torch.stack([values[k].float() for k in keys])
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        return {k: v / self.world for k, v in zip(keys, stacked)}

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def epoch_order(self, n: int, seed: int, epoch: int) -> torch.Tensor:
        """The training order of an epoch: single process, a pure function of (seed, epoch) so resume
        is exact; under DDP, this rank's share, reshuffled per epoch (DistributedSampler.set_epoch)."""
        if not self.enabled:
            return epoch_order(n, seed, epoch)
        sampler = DistributedSampler(range(n), num_replicas=self.world, rank=self.rank, shuffle=True,
                                     seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler))

    def parameters_identical(self, module: torch.nn.Module) -> bool:
        """Whether every rank holds bit-identical parameters (compares a checksum across ranks)."""
        if not self.enabled:
            return True
        flat = torch.cat([p.detach().double().flatten() for p in module.parameters()])
        local = torch.stack([flat.sum(), (flat * torch.arange(1, flat.numel() + 1, device=flat.device,
                                                               dtype=torch.float64)).sum()])
        lo, hi = local.clone(), local.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        return bool(torch.equal(lo, hi))

    def close(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
