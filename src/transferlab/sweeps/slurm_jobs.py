"""What a SLURM sweep does around its jobs: parameters for submitit, the requeue signal inside a job, and in the
parent a wait that needs no accounting database plus a record of every job that ended without a result.

**One owner per signal.** Four parties could react to SLURM's signals in a job; each gets one job:

- SIGTERM (``scontrol requeue``, preemption with ``PreemptMode=REQUEUE``, ``scancel``, the time limit) belongs to
  transferlab's clean stop (:mod:`transferlab.sweeps.interrupt`): the job keeps ``checkpoints/last.ckpt``, records
  ``status: interrupted`` and exits 143. SLURM alone decides whether it runs again; when it does, the resumable
  wrapper (:mod:`transferlab.sweeps.resume`) resumes it from last.ckpt. submitit ignores SIGTERM, so nothing clashes.
- USR2, submitit's ``--signal`` (sent ``signal_delay_s`` before the time limit, and at the start of a preemption
  grace time where the cluster sets ``SlurmctldParameters=preempt_send_user_signal``), is taken over from submitit
  (:func:`take_requeue_signal`). Its own handler would pickle a new submission and ``sys.exit`` from inside the
  training step; ours only asks SLURM to requeue the job (while ``max_num_timeout`` allows), whose SIGTERM then
  stops it as above. The state that matters, last.ckpt, is on disk, so the original submission is the one to rerun.
- SIGUSR1, Lightning's ``SLURMEnvironment`` auto-requeue, is switched off (:mod:`transferlab.lightning.slurm`):
  it would save its own ``hpc_ckpt`` and requeue a second time.

**Waiting without accounting.** submitit asks ``sacct`` whether a job ended. Without an accounting database
(common on lab clusters) sacct fails, submitit sees ``UNKNOWN`` forever, and a job that dies before writing its
result (``scancel``, a node failure) makes ``job.results()`` wait forever; one failed job also stopped the wait for
all others. :func:`wait_for` polls ``squeue`` and the result files instead, gives a job that left the queue a few
seconds for its result, and :func:`record_unfinished` writes every job that ended without one into its
``metrics.json`` (``cancelled``, ``interrupted`` or ``failed``, with the SLURM state and its log), so the report
names it and the sweep returns.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from transferlab.sweeps.resume import last_checkpoint, read_metrics
from transferlab.utils.io import atomic_write_json, atomic_write_text
from transferlab.utils.task import _failed_value  # the value a job that fails in our task wrapper returns

log = logging.getLogger(__name__)

POLL_S = 2.0  # squeue is cheap; submitit's own back-off waits up to a minute between checks
RESULT_GRACE_S = 10.0  # a job that left the queue may still be writing its result (shared file systems lag)
# squeue states of a job that may still write a result; anything else (CANCELLED, FAILED, TIMEOUT, ...) is final
ACTIVE_STATES = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
    "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED",
}  # fmt: skip


def job_parameters(params: dict) -> dict:
    """The launcher's parameters as ``executor.update_parameters`` takes them (generic names plain, SLURM ones
    prefixed), as the stock launcher maps them; the folder and the requeue bound go to the executor itself."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    return {
        key if key in generic else f"slurm_{key}": value
        for key, value in params.items()
        if key not in ("submitit_folder", "max_num_timeout")
    }


def last_line(text: str) -> str:
    """The last non-blank line of ``text`` (where a traceback or a command's error says what went wrong)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


# --- inside the job ---------------------------------------------------------------------------------------------


def take_requeue_signal(max_requeues: int) -> None:
    """Replace submitit's USR2 handler: ask SLURM to requeue this job (rank 0 only, while the job has been
    requeued fewer than ``max_requeues`` times); SLURM's SIGTERM then stops it cleanly with last.ckpt kept."""

    def requeue(signum: int, frame) -> None:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        job_id = os.environ.get("SLURM_JOB_ID")
        if os.environ.get("SLURM_PROCID", "0") != "0" or job_id is None:
            return  # one request per job: rank 0 makes it, every rank gets SLURM's SIGTERM
        if restarts >= max_requeues:
            log.warning(
                "USR2: requeued %d times already (max_num_timeout); the job runs until SLURM stops it.", restarts
            )
            return
        log.warning("USR2: asking SLURM to requeue job %s; it resumes from its last checkpoint.", job_id)
        subprocess.run(["scontrol", "requeue", job_id], check=False, timeout=60)

    signal.signal(signal.SIGUSR2, requeue)


# --- in the parent, while the jobs run ----------------------------------------------------------------------------


def _queue_states() -> dict[str, str] | None:
    """SLURM's state of each of our jobs it still lists (array tasks as ``ARRAY_TASK``), or None if squeue failed.
    (Not ``squeue -j IDS``: it fails outright once any of the ids has been purged from the controller.)"""
    try:
        out = subprocess.run(
            ["squeue", "--me", "--noheader", "--array", "--states=all", "--format=%i|%T"],  # ours: not the cluster's
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
    except (subprocess.SubprocessError, OSError) as e:
        log.warning("squeue failed (%s); waiting for the controller.", e)
        return None
    return dict(line.strip().split("|", 1) for line in out.splitlines() if "|" in line)


def _has_result(job) -> bool:
    return job.task(0).paths.result_pickle.exists()  # rank 0's result: what the stock launcher returns


def wait_for(jobs: list) -> dict[str, str]:
    """Block until each job has written its result or left SLURM's queue without one; return the last SLURM
    state of the latter (``left the queue`` when squeue no longer lists it)."""
    waiting = {job.job_id: job for job in jobs}
    ended: dict[str, str] = {}
    gone_since: dict[str, float] = {}
    while waiting:
        states = _queue_states()
        now = time.monotonic()
        for job_id, job in list(waiting.items()):
            if _has_result(job):
                del waiting[job_id]
                ended.pop(job_id, None)
                continue
            if states is None:
                continue
            state = states.get(job_id, "left the queue").split()[0]
            if state in ACTIVE_STATES:  # again, after a requeue: its earlier end was not the last
                gone_since.pop(job_id, None)
                ended.pop(job_id, None)
                continue
            ended[job_id] = state
            if now - gone_since.setdefault(job_id, now) >= RESULT_GRACE_S:
                del waiting[job_id]
        if waiting:
            time.sleep(POLL_S)
    return ended


def link_log(job, job_dir: Path) -> None:
    """Link the job's SLURM log into its folder as ``slurm.log`` (a ``.log`` file, so a re-run keeps it in place)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    link = job_dir / "slurm.log"
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(job.task(0).paths.stdout, job_dir))


def job_return(job, job_dir: Path, overrides: list[str], end_state: str | None) -> JobReturn:
    """The job's own return when it wrote one; otherwise its end recorded in metrics.json and a failed value."""
    if end_state is None:
        try:
            return job.task(0).result()
        except Exception as e:  # noqa: BLE001 - the job raised outside our task wrapper (e.g. in Hydra)
            record_unfinished(job_dir, job.job_id, "FAILED", overrides, last_line(str(e)))
    else:
        record_unfinished(job_dir, job.job_id, end_state, overrides)
    return JobReturn(
        overrides=overrides,
        working_dir=str(job_dir),
        status=JobStatus.COMPLETED,
        _return_value=_failed_value(),  # as a failed job's own
    )


def record_unfinished(job_dir: Path, job_id: str, state: str, overrides: list[str], error: str = "") -> None:
    """Write what became of a job that ended without a result: ``cancelled`` (scancel), ``interrupted`` (stopped
    by a signal with its checkpoint kept) or ``failed``, naming the SLURM job, its state and its log."""
    metrics = read_metrics(job_dir) or {}
    if metrics.get("status") == "ok":  # it finished; only its result file is missing
        return
    if state == "CANCELLED":
        status = "cancelled"
    elif metrics.get("status") == "interrupted":
        status = "interrupted"
    else:
        status = "failed"
    resume = (
        "its checkpoints/last.ckpt is kept, re-run the same command to resume it"
        if last_checkpoint(job_dir).is_file()
        else "re-run the same command to run it again"
    )
    cause = f" ({error})" if error else ""
    message = f"SLURM job {job_id} ended {state} without a result{cause}; {resume}. Its log: {job_dir / 'slurm.log'}"
    atomic_write_json(job_dir / "metrics.json", {"status": status, "error": message, "slurm/job_id": job_id})
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():  # it never started: the report still names its overrides
        overrides_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(overrides_file, OmegaConf.to_yaml(OmegaConf.create(overrides)))
    log.warning("Job %s: %s", job_dir.name, message)
