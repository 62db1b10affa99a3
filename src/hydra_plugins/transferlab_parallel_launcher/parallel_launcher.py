"""``hydra/launcher=parallel``: joblib's launcher, whose sweep a signal stops the way it stops a basic one.

Joblib's own launcher dies at once on SIGTERM and leaves its workers training; here the signal reaches the running
jobs, which record ``status: interrupted`` and keep their checkpoints, no further job starts, the report is
rebuilt and the process exits 128 + the signal (``transferlab.sweeps.local_pool``). A re-run into the sweep folder
resumes it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from joblib import effective_n_jobs
from omegaconf import DictConfig

from transferlab.sweeps.job import program_of, resume_command, write_report
from transferlab.sweeps.local_pool import StopOnSignal, StopsWithSweep, exit_if_stopped


class ParallelLauncher(JoblibLauncher):
    """Runs ``n_jobs`` sweep jobs at once in local processes; SIGTERM/SIGINT stop the sweep cleanly."""

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        """Keep the bare task function: ``launch`` wraps it for the pool."""
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self._task = task_function

    def pool_task(self) -> Callable[[DictConfig], object]:
        """Hook: the task as each worker runs it (the gpus launcher adds a GPU claim)."""
        return self._task

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run one batch of jobs in the pool; exit 128 + N if signal N came meanwhile."""
        if effective_n_jobs(self.joblib.get("n_jobs")) == 1:
            # joblib then runs the jobs in this process, where a signal already stops the job and the sweep.
            self.task_function = self.pool_task()
            return super().launch(job_overrides, initial_job_idx)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        with StopOnSignal() as stop:
            self.task_function = StopsWithSweep(self.pool_task(), stop.flag)
            try:
                returns = super().launch(job_overrides, initial_job_idx)
            except Exception:
                if stop.signum is None:
                    raise
                returns = []  # a worker the signal ended between jobs made joblib give up: the exit below
            resume = resume_command(program_of(self._task), sys.argv[1:], "hydra.sweep.dir", sweep_dir)
            exit_if_stopped(stop, sweep_dir, resume, lambda d: write_report(d, self.config.hydra.get("callbacks")))
        return returns
