"""``hydra/launcher=gpus``: joblib's launcher with as many jobs at once as there are visible GPUs, each job on a
GPU of its own (claimed in the job's process, given back when it ends, fails or is killed).

Hydra leaves GPU placement to the launcher, and joblib's own puts every ``devices: 1`` job on cuda:0. Here the
launcher only sizes the pool and wraps the task; the claim itself is ``transferlab.sweeps.devices``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from omegaconf import DictConfig

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


class GpuJobsLauncher(JoblibLauncher):
    """Runs ``len(visible GPUs)`` jobs at once, one per GPU; without a GPU, one job at a time on the CPU."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        gpus = visible_gpus()
        if gpus:
            self.joblib["n_jobs"] = len(gpus)
            self.task_function = OnClaimedGpu(self._task, gpus, str(default_lock_dir()))
            log.info("hydra/launcher=gpus: %d job(s) at once, one per GPU (%s)", len(gpus), ", ".join(gpus))
        else:
            self.joblib["n_jobs"] = 1  # joblib runs them in this process, one after another
            log.warning(
                "hydra/launcher=gpus: no GPU visible; running the %d job(s) one after another on the CPU.",
                len(job_overrides),
            )
        return super().launch(job_overrides, initial_job_idx)

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        """Keep the bare task function: ``launch`` wraps it once it knows the GPUs."""
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self._task = task_function
