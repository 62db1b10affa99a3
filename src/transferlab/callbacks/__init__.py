"""Lightning callbacks of our own (the rest come from Lightning and are set in configs/callbacks)."""

from transferlab.callbacks.cpu_eta import CpuEta
from transferlab.callbacks.epoch_seed import EpochSeed
from transferlab.callbacks.run_stats import RunStats

__all__ = ["CpuEta", "EpochSeed", "RunStats"]
