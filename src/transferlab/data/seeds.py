"""Every seed the project derives from the run's ``seed``, in one place.

Each random stream (sample order, batch augmentation, the global generators at an epoch start) gets its
own seed from (run seed, position), so a resumed run, or a DDP run, draws exactly what an uninterrupted
single-process run draws. The multipliers only keep the streams of neighbouring run seeds apart; they are
part of the published results: changing one changes every sample order or augmentation, hence the
accuracies.
"""

from __future__ import annotations


def sampler_seed(seed: int) -> int:
    """Seed of the shuffled sample order; epoch ``e`` uses ``sampler_seed(seed) + e`` (DistributedSampler's rule)."""
    return seed * 100_003


def augment_seed(seed: int, global_step: int) -> int:
    """Seed of the batch augmentation drawn at ``global_step`` (the same on every DDP rank)."""
    return seed * 1_000_003 + global_step * 101


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of python, numpy and torch's global generators at the start of training epoch ``epoch``."""
    return seed * 1_000 + epoch + 1
