"""Warn once when a CPU run's first epoch will take longer than an hour, and say which keys shrink it.

The defaults (54,000 images at 224 px, 10 epochs) are sized for a GPU; on a CPU they take hours per epoch,
which a new user only learns by waiting. The estimate comes from real steps: steps per epoch x the mean
time of the first few steps (after one warm-up step).
"""

from __future__ import annotations

import logging
import time

from lightning import Callback

log = logging.getLogger(__name__)


class CpuEta(Callback):
    """After ``steps`` timed training steps on CPU, log one warning if the first epoch's ETA exceeds ``limit_s``."""

    def __init__(self, steps: int = 5, limit_s: float = 3600.0):
        self.steps = steps
        self.limit_s = limit_s
        self.eta_s: float | None = None  # the estimate, once made (for tests and callers)
        self._times: list[float] = []
        self._start: float | None = None
        self._done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Start the step timer while the estimate is still being made."""
        if not self._done:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Time the step; after enough steps, estimate the epoch and warn when it is too long on CPU."""
        if self._done or self._start is None:
            return
        self._times.append(time.perf_counter() - self._start)
        total = trainer.num_training_batches
        if len(self._times) < self.steps + 1 and len(self._times) < total:
            return
        self._done = True
        if pl_module.device.type != "cpu" or not trainer.is_global_zero:
            return
        timed = self._times[1:] or self._times  # the first step pays one-off costs (allocation, caches)
        step_s = sum(timed) / len(timed)
        self.eta_s = step_s * total if total != float("inf") else None
        if self.eta_s is not None and self.eta_s > self.limit_s:
            log.warning(
                "On CPU the first epoch will take about %.1f h (%d steps x %.2f s). Shrink it with "
                "data.train_size=6000 data.image_size=64 trainer.max_epochs=3, or run on a GPU (trainer=gpu).",
                self.eta_s / 3600,
                total,
                step_s,
            )
