"""Test hook for the cluster tests: a job that waits, mid-fit, for the test to preempt, requeue or cancel it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lightning import Callback

PAUSE_DIR, PAUSE_JOBS = "TRANSFERLAB_TEST_SLURM_PAUSE_DIR", "TRANSFERLAB_TEST_SLURM_PAUSE_JOBS"


class PauseFirstAttempt(Callback):
    """Sweep jobs numbered in $TRANSFERLAB_TEST_SLURM_PAUSE_JOBS (``0,1``) stop at epoch 1, batch 2 (after epoch 0's
    last.ckpt) on their first SLURM attempt, touch ``$TRANSFERLAB_TEST_SLURM_PAUSE_DIR/<job>`` and wait for a signal.
    A requeued attempt (SLURM_RESTART_COUNT > 0) and runs without the variables do nothing."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        from hydra.core.hydra_config import HydraConfig

        jobs = os.environ.get(PAUSE_JOBS, "").split(",")
        first_attempt = os.environ.get("SLURM_RESTART_COUNT", "0") == "0"
        if (
            (trainer.current_epoch, batch_idx) != (1, 2)
            or not first_attempt
            or str(HydraConfig.get().job.num) not in jobs
        ):
            return
        Path(os.environ[PAUSE_DIR], str(HydraConfig.get().job.num)).touch()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.05)
        raise RuntimeError("PauseFirstAttempt: nobody sent the signal")
