"""``hydra/launcher=gpus``: joblib's launcher with as many jobs at once as there are visible GPUs, each job on a
GPU of its own (claimed in the job's process, given back when it ends, fails or is killed).

Hydra leaves GPU placement to the launcher, and joblib's own puts every ``devices: 1`` job on cuda:0. Here the
launcher only sizes the pool and wraps the task; the claim itself is ``transferlab.sweeps.devices``. Signals stop
it as they stop ``hydra/launcher=parallel``, which it extends.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hydra.core.utils import JobReturn
from omegaconf import DictConfig

from hydra_plugins.transferlab_parallel_launcher.parallel_launcher import ParallelLauncher
from transferlab.sweeps.devices import DeviceClaims, default_lock_dir, visible_gpus

log = logging.getLogger(__name__)


class OnClaimedGpu:
    """The task function, run while its process holds one of ``gpus`` (picklable: joblib ships it to workers)."""

    def __init__(self, task_function, gpus: Sequence[str], lock_dir: str):
        self.task_function, self.gpus, self.lock_dir = task_function, list(gpus), lock_dir

    def __call__(self, cfg: DictConfig):
        threads_unset = cfg.get("trainer", {}).get("threads") is None
        with DeviceClaims(self.gpus, self.lock_dir).held(threads_unset=threads_unset):
            return self.task_function(cfg)


class GpuJobsLauncher(ParallelLauncher):
    """Runs ``len(visible GPUs)`` jobs at once, one per GPU; without a GPU, one job at a time on the CPU."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Size the pool to the visible GPUs, then launch the batch."""
        self._gpus = visible_gpus()
        if self._gpus:
            self.joblib["n_jobs"] = len(self._gpus)
            log.info("hydra/launcher=gpus: %d job(s) at once, one per GPU (%s)", len(self._gpus), ", ".join(self._gpus))
        else:
            self.joblib["n_jobs"] = 1  # joblib runs them in this process, one after another
            log.warning(
                "hydra/launcher=gpus: no GPU visible; running the %d job(s) one after another on the CPU.",
                len(job_overrides),
            )
        return super().launch(job_overrides, initial_job_idx)

    def pool_task(self):
        """Each job on a GPU of its own, when there are GPUs."""
        if not self._gpus:
            return self._task
        return OnClaimedGpu(self._task, self._gpus, str(default_lock_dir()))
