"""How the optimizer follows the device preset (``trainer.optim``): LRs scaled with the global batch, fused kernels.

The strategies' learning rates were tuned at batch 64 on CPU. ``trainer=gpu`` and ``ddp`` train at batch 256 per
process, so their LRs are scaled by ``sqrt(global batch / 64)``: the square-root rule for Adam-type optimizers
(Malladi et al., NeurIPS 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms"; Hoffer et al.
2017 for SGD), where the linear rule (Goyal et al. 2017) holds for SGD. ``none`` (the CPU presets) keeps every
LR exactly as configured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from transferlab.utils.errors import TransferlabError

RULES = {"none": lambda ratio: 1.0, "sqrt": math.sqrt, "linear": lambda ratio: ratio}


@dataclass(frozen=True)
class OptimizerPreset:
    """``trainer.optim`` with the run's per-process batch size."""

    lr_scaling: str = "none"  # none | sqrt | linear
    reference_batch: int = 64  # the global batch the configured LRs were tuned at
    fused: bool = False  # fused AdamW kernels on CUDA (one kernel per step instead of one per tensor group)
    batch_size: int = 64  # data.batch_size: per process under DDP

    def __post_init__(self):
        if self.lr_scaling not in RULES:
            raise TransferlabError(f"trainer.optim.lr_scaling={self.lr_scaling!r} is unknown. Use {', '.join(RULES)}.")
        if not isinstance(self.reference_batch, int) or self.reference_batch < 1:
            raise TransferlabError(f"trainer.optim.reference_batch={self.reference_batch} must be a positive integer.")

    @classmethod
    def from_config(cls, optim: dict | None, batch_size: int) -> OptimizerPreset:
        """The preset from a ``trainer.optim`` block (missing keys keep their defaults)."""
        return cls(**(optim or {}), batch_size=batch_size)

    def lr_factor(self, processes: int = 1, accumulate: int = 1) -> float:
        """The factor every configured LR is multiplied by, for this run's global batch."""
        return float(RULES[self.lr_scaling](self.batch_size * processes * accumulate / self.reference_batch))
