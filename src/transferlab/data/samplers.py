"""A shuffling sampler whose order depends only on (seed, epoch), so a resumed run sees the same batches
and a DDP run sees, step by step, the global batches of a single-process run."""

from __future__ import annotations

from torch.utils.data import DataLoader, DistributedSampler

from transferlab.data.datasets import collate_pairs
from transferlab.data.seeds import sampler_seed


def process_shard(trainer) -> tuple[int, int]:
    """``(rank, world_size)`` of this process under ``trainer``; ``(0, 1)`` outside a trainer."""
    if trainer is None:
        return 0, 1
    return trainer.global_rank, trainer.world_size


class EpochShuffleSampler(DistributedSampler):
    """``DistributedSampler(shuffle=True, drop_last=True)`` over ``range(n)`` with the project's seed.

    Epoch ``e`` is one random order drawn from ``sampler_seed(seed) + e`` (Lightning calls ``set_epoch``
    before every epoch). With ``world_size > 1`` each rank takes every ``world_size``-th index of that one
    order, dropping the tail so ranks step in lockstep, so the samples of global step k are exactly those a
    single process with the same global batch sees at step k. Being a ``DistributedSampler``, Lightning uses
    it as it is: Lightning's own wrapper would shuffle the order again with a generator of its own.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__(
            range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=sampler_seed(seed), drop_last=True
        )


def make_loader(
    dataset, batch_size: int, shuffle: bool, seed: int, trainer=None, drop_last: bool = False, **loader_kwargs
) -> DataLoader:
    """A DataLoader over ``dataset`` in the project's order: with ``shuffle`` an ``EpochShuffleSampler`` of ``seed``
    (sharded for ``trainer``'s process), else the dataset's order; ``loader_kwargs`` go to the DataLoader."""
    sampler = EpochShuffleSampler(len(dataset), seed, *process_shard(trainer)) if shuffle else None
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, collate_fn=collate_pairs, **loader_kwargs
    )
