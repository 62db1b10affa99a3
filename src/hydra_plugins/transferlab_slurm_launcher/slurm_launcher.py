"""``SlurmLauncher`` (``hydra/launcher=slurm``): hydra-submitit-launcher's SLURM launcher, made safe for sweeps
whose jobs are preempted, requeued or cancelled, on clusters with or without an accounting database.

Checks the request against ``sinfo`` before anything is submitted, refuses to launch beside jobs of an earlier
launch of the same sweep that still run, owns the requeue signal inside each job and waits with a bound
(:mod:`transferlab.sweeps.slurm_jobs` says who owns which signal, and why). Kept light: Hydra imports every module
under ``hydra_plugins`` at start-up; submitit loads on use.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import OmegaConf, open_dict

from transferlab.sweeps.slurm_checks import check_request, jobs_still_queued
from transferlab.sweeps.slurm_jobs import job_parameters, job_return, last_line, link_log, take_requeue_signal, wait_for
from transferlab.utils.errors import TransferlabError

log = logging.getLogger(__name__)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """submitit's SLURM launcher with checks before submission, a bounded wait, and the requeue signal owned."""

    def __call__(self, *args, **kwargs) -> JobReturn:
        """Run one sweep job inside its SLURM allocation (after submitit installed its handlers)."""
        take_requeue_signal(int(self.params.get("max_num_timeout") or 0))
        return super().__call__(*args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Check the request against the cluster, submit one array job, wait for every task, return their values."""
        try:
            return self._launch(job_overrides, initial_job_idx)
        except TransferlabError as e:  # bad input: one line, as the entry points print it
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            from transferlab.utils.console import print_error

            print_error(str(e))
            sys.exit(1)

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None and self.hydra_context is not None
        check_request(self.params)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        submitit_folder = Path(self.params["submitit_folder"])
        running = jobs_still_queued(submitit_folder.parent)
        if running:
            raise TransferlabError(
                f"SLURM jobs {', '.join(running)} of an earlier launch of {sweep_dir} are still queued or running. "
                "Wait for them (squeue) or cancel them (scancel), then re-run the same command."
            )
        executor = submitit.AutoExecutor(
            folder=submitit_folder, cluster="slurm", slurm_max_num_timeout=self.params["max_num_timeout"]
        )
        executor.update_parameters(**job_parameters(self.params))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        calls = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            calls.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*calls, strict=True))
        except Exception as e:  # sbatch refused the request (e.g. a GPU or QOS this cluster does not have)
            raise TransferlabError(f"sbatch refused the sweep's jobs: {last_line(str(e))}") from e
        log.info("Submitted SLURM array %s (%d jobs) for %s", jobs[0].job_id.split("_")[0], len(jobs), sweep_dir)
        numbered = enumerate(job_overrides, start=initial_job_idx)
        job_dirs = [self._job_dir(sweep_dir, overrides, idx) for idx, overrides in numbered]
        for job, job_dir in zip(jobs, job_dirs, strict=True):
            link_log(job, job_dir)
        ended = wait_for(jobs)
        return [
            job_return(job, job_dir, list(overrides), ended.get(job.job_id))
            for job, job_dir, overrides in zip(jobs, job_dirs, job_overrides, strict=True)
        ]

    def _job_dir(self, sweep_dir: Path, overrides: Sequence[str], idx: int) -> Path:
        """The folder Hydra will give job ``idx`` (its ``hydra.sweep.subdir``, composed as the job composes it)."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
        return sweep_dir / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
