"""Which process of a distributed job this is, read from the environment before anything distributed starts.

The process a sweep (or the user) launched decides everything about a job: its folder, its trial, whether it is
skipped or resumed. The extra ranks of a DDP job only follow. They come in two ways:

* spawned by our DDP launcher (``transferlab.lightning.ddp``), which sets ``TRANSFERLAB_DDP_RANK``;
* started by a cluster launcher (SLURM's ``srun`` with several tasks, or ``torchrun``), which sets its own rank
  variables: those ranks run the same entry point and must wait for rank 0's decision (``sweeps/job.py``).
"""

from __future__ import annotations

import os

OUR_RANK = "TRANSFERLAB_DDP_RANK"  # set by our launcher on the ranks it spawns
LEADER_PID = "TRANSFERLAB_DDP_LEADER"  # the pid of the rank-0 process that spawned them


def follower_rank() -> int:
    """0 for the process that decides (the sweep's own process, or rank 0 of a cluster launch); the rank otherwise."""
    if os.environ.get(OUR_RANK):
        return int(os.environ[OUR_RANK])
    return external_rank()


def external_rank() -> int:
    """This process's rank in a job whose ranks a cluster launcher started (srun tasks, torchrun); 0 otherwise."""
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and os.environ.get("SLURM_PROCID"):
        return int(os.environ["SLURM_PROCID"])
    if os.environ.get("TORCHELASTIC_RUN_ID") and os.environ.get("RANK"):
        return int(os.environ["RANK"])
    return 0


def externally_launched() -> bool:
    """Whether a cluster launcher started several ranks of this job (so rank 0 must publish its decision)."""
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and os.environ.get("SLURM_PROCID"):
        return True
    return bool(os.environ.get("TORCHELASTIC_RUN_ID")) and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def launch_token() -> str:
    """What every rank of one cluster launch shares and a later launch (a requeue, a re-run) does not."""
    if os.environ.get("SLURM_JOB_ID"):
        keys = ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT")
    else:
        keys = ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT")
    return ".".join(os.environ.get(k, "0") for k in keys)
