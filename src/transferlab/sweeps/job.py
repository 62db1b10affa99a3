"""The sweep-aware wrapper around a training task: a re-run sweep job is skipped, resumed or run, and a signal
ends the job with ``status: interrupted``, a report over what exists, one console line and a non-zero exit."""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from transferlab.sweeps import interrupt
from transferlab.sweeps.interrupt import JobInterrupted, print_interrupted
from transferlab.sweeps.resume import last_checkpoint, prepare_job
from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import atomic_write_json
from transferlab.utils.ranks import externally_launched, follower_rank, launch_token
from transferlab.utils.task import importable_module, is_multirun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    multirun: bool
    job_dir: Path | None  # Hydra's output dir of this job
    sweep_dir: Path | None  # multiruns only


def _current_job() -> _Job:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return _Job(False, None, None)
    hc = HydraConfig.get()
    multirun = is_multirun()
    job_dir = Path(hc.runtime.output_dir).resolve() if hc.runtime.get("output_dir") else None
    return _Job(multirun, job_dir, Path(hc.sweep.dir).resolve() if multirun else None)


def resumable(fn: Callable[[DictConfig], dict]) -> Callable[[DictConfig], dict]:
    """Wrap a task returning metrics (put it under ``task_wrapper``).

    In a multirun: a job whose folder holds an ok metrics.json for the same config returns those metrics
    untouched; one with a checkpoints/last.ckpt resumes (``resume=JOB_DIR``); the others run afresh.
    Anywhere: SIGTERM/SIGINT stop the job, record it as interrupted and exit with 128 + the signal number.
    """

    # Resolved here, in the launching process: a pool worker's __main__ is joblib's, not ours.
    program = program_of(fn)

    @functools.wraps(fn)
    def wrapped(cfg: DictConfig) -> dict:
        job = _current_job()
        interrupt.install()
        try:
            if interrupt.pending() is not None:  # it came between two sweep jobs: this one does not start
                _stop(cfg, job, interrupt.pending(), None, program)
            if job.multirun and job.job_dir is not None and follower_rank() > 0:
                # A rank a cluster launcher started (srun): rank 0 decides about the job folder; this rank follows.
                record = _wait_for_leader(job.job_dir)
                if record is None or record.get("skip"):
                    return record.get("metrics") if record else {}
                cfg = OmegaConf.create(record["config"])
            elif job.multirun and job.job_dir is not None:
                plan = prepare_job(job.job_dir, cfg)
                if plan.action == "skip":
                    if externally_launched():  # the other ranks wait for this decision
                        _publish_skip(job.job_dir, plan.metrics)
                    return plan.metrics
            started = time.time()
            try:
                with interrupt.armed():
                    return fn(cfg)
            except JobInterrupted as e:
                _stop(cfg, job, e.signum, started, program)
            except SystemExit as e:
                if not isinstance(e, _lightning_sigterm()):
                    raise
                _stop(cfg, job, signal.SIGTERM, started, program)  # Lightning's, if ours was not installed
        finally:
            if not job.multirun:  # a sweep keeps them between jobs, so a signal there stops it too
                interrupt.restore()

    return wrapped


def _publish_skip(job_dir: Path, metrics: dict | None) -> None:
    from transferlab.lightning.ddp import record_path  # Lightning loads only for distributed jobs

    atomic_write_json(record_path(job_dir), {"token": launch_token(), "skip": True, "metrics": metrics})


def _wait_for_leader(job_dir: Path, timeout_s: float | None = None) -> dict | None:
    """The job rank 0 prepared (its record in the job folder, from this launch), or None if rank 0's job ended
    (failed, interrupted) before it got that far; one line if nothing comes within ``timeout_s``."""
    from transferlab.lightning.ddp import record_path

    timeout_s = float(os.environ.get("TRANSFERLAB_DDP_WAIT_S", 600)) if timeout_s is None else timeout_s
    path, token, started = record_path(job_dir), launch_token(), time.time()
    while time.time() - started < timeout_s:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            record = None
        if record is not None and record.get("token") == token:
            return record
        metrics = job_dir / "metrics.json"
        if metrics.is_file() and metrics.stat().st_mtime >= started:  # rank 0 ended the job without training
            return None
        time.sleep(0.5)
    raise TransferlabError(
        f"DDP rank {follower_rank()} waited {timeout_s:.0f} s for rank 0 to prepare job {job_dir.name} ({path} from "
        "this launch). Check rank 0's log in that folder; raise TRANSFERLAB_DDP_WAIT_S if it is only slow."
    )


def _lightning_sigterm() -> type[SystemExit]:
    # Imported here, not at the top: the entry points import Lightning only after Hydra composed the config.
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return SIGTERMException


def program_of(fn: Callable) -> str:
    """How to start ``fn``'s program again: ``python -m MODULE``, or the script's path."""
    module = importable_module(fn)
    return f"python -m {module}" if module else shlex.quote(sys.argv[0])


def resume_command(program: str, argv: list[str], key: str | None, value: Path | None = None) -> str:
    """``program argv`` with ``key=value`` in place of any earlier ``key=`` (``hydra.sweep.dir``, ``resume``)."""
    args = [a for a in argv if key is None or a.lstrip("+").split("=", 1)[0] != key]
    if key is not None:
        args.append(f"{key}={value}")
    return " ".join([program, shlex.join(args)]) if args else program


def _interrupted_metrics(out_dir: Path, signum: int, started: float | None, has_checkpoint: bool) -> None:
    path = out_dir / "metrics.json"
    try:
        done = path.stat().st_mtime >= (started or 0) and json.loads(path.read_text()).get("status") == "ok"
    except (OSError, json.JSONDecodeError, AttributeError):
        done = False
    if done:  # the signal came after this job wrote its results: they stand
        return
    name = signal.Signals(signum).name
    how = "resume from checkpoints/last.ckpt" if has_checkpoint else "no checkpoint yet, it starts over"
    atomic_write_json(path, {"status": "interrupted", "error": f"{name} stopped the job; {how}"})


def _is_report_callback(conf) -> bool:
    from hydra.utils import get_class

    from transferlab.sweeps.report_callback import ReportCallback

    try:
        return issubclass(get_class(str((conf or {}).get("_target_", ""))), ReportCallback)
    except Exception:  # noqa: BLE001 - another callback Hydra itself will load (or fail to)
        return False


def write_report(sweep_dir: Path, callbacks=None) -> None:
    """Rebuild the sweep's report over the files its jobs wrote, if the sweep has the report callback
    (``callbacks``: ``hydra.callbacks``; by default this job's)."""
    from hydra.core.hydra_config import HydraConfig

    if callbacks is None:
        callbacks = HydraConfig.get().get("callbacks")
    callbacks = callbacks or {}
    if not any(_is_report_callback(c) for c in callbacks.values()):
        return
    from transferlab.reporting.build import build_report

    try:
        build_report(sweep_dir)
    except Exception as e:  # noqa: BLE001 - the jobs' own files are already on disk
        log.error("Could not build the report for %s: %s", sweep_dir, e)


def _message(name: str, job: _Job, out_dir: Path, started: float | None, program: str) -> str:
    argv = sys.argv[1:]
    if job.multirun:
        command = resume_command(program, argv, "hydra.sweep.dir", job.sweep_dir)
        if started is None:
            return (
                f"{name} stopped {job.sweep_dir} before job {out_dir.name}; finished jobs are kept. Resume: {command}"
            )
        where = f"{name} stopped job {out_dir.name} of {job.sweep_dir}"
    else:
        command = resume_command(program, argv, "resume", out_dir)
        where = f"{name} stopped the run in {out_dir}"
    checkpoint = last_checkpoint(out_dir)
    if checkpoint.is_file():
        return f"{where}; last checkpoint {checkpoint}. Resume: {command}"
    if not job.multirun:  # resume=RUN_DIR needs a last.ckpt: the same command starts over
        command = resume_command(program, argv, None)
    return f"{where}; no checkpoint yet (stopped in its first epoch), it starts over. Re-run: {command}"


def _stop(cfg: DictConfig, job: _Job, signum: int, started: float | None, program: str) -> None:
    """Record the interrupted job (``started`` None: it never began, its folder is left alone), rebuild the
    sweep's report, print how to resume, and exit with 128 + the signal number."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only  # loaded by now: the job imported Lightning

    out_dir = Path(cfg.paths.output_dir).resolve()  # after resume=RUN_DIR this is that run's folder
    name = signal.Signals(signum).name
    if rank_zero_only.rank == 0:
        if started is not None:
            _interrupted_metrics(out_dir, signum, started, last_checkpoint(out_dir).is_file())
        if job.multirun:
            write_report(job.sweep_dir)
        print_interrupted(_message(name, job, out_dir, started, program))
    raise SystemExit(interrupt.exit_status(signum))
