"""A shuffling sampler whose order depends only on (seed, epoch), so a resumed run sees the same batches
and a DDP run sees, step by step, the global batches of a single-process run."""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler


def process_shard(trainer) -> tuple[int, int]:
    """``(rank, world_size)`` of this process under ``trainer``; ``(0, 1)`` outside a trainer."""
    if trainer is None:
        return 0, 1
    return trainer.global_rank, trainer.world_size


class EpochShuffleSampler(DistributedSampler):
    """Random order per epoch from ``seed + epoch``; Lightning calls ``set_epoch`` before every epoch.

    With ``world_size > 1`` each rank takes every ``world_size``-th index of that one order, so the
    samples of global step k are exactly those a single process with the same global batch sees at
    step k. It subclasses ``DistributedSampler`` so that Lightning uses it as it is: Lightning's own
    wrapper would shuffle the order again with a generator of its own.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.dataset)
        order = torch.randperm(n, generator=generator)
        usable = n - n % self.num_replicas  # every rank gets as many samples (DDP steps in lockstep)
        return iter(order[:usable][self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return len(self.dataset) // self.num_replicas
