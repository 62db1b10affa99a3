"""What a run records about the SLURM job it ran in (nothing outside SLURM)."""

from __future__ import annotations

import os


def slurm_job_metrics() -> dict:
    """``slurm/job_id`` and ``slurm/requeues`` (SLURM_RESTART_COUNT: how often SLURM requeued this job) inside a
    SLURM job; ``{}`` elsewhere."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id is None:
        return {}
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return {
        "slurm/job_id": f"{array}_{task}" if array and task else job_id,  # as squeue and the .submitit/ folders say
        "slurm/requeues": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
    }
