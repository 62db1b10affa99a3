"""Lightning's SLURM environment for runs srun started, with its auto-requeue off.

Under srun, Lightning takes the ranks, world size and master address from SLURM (``SLURMEnvironment``), which is
what DDP across tasks and nodes needs. Its auto-requeue (save ``hpc_ckpt``, then ``scontrol requeue`` on SIGUSR1)
would be a second requeue mechanism beside ours: requeue is owned by SLURM and the sweep launcher
(:mod:`transferlab.sweeps.slurm_jobs`), and a requeued job resumes from ``last.ckpt``.
"""

from __future__ import annotations

from lightning.pytorch.plugins.environments import SLURMEnvironment


def slurm_plugins() -> list[SLURMEnvironment]:
    """``[SLURMEnvironment(auto_requeue=False)]`` when this process runs under SLURM, else ``[]``."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
