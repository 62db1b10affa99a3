"""Sweeps on a real one-node SLURM cluster (``hydra/launcher=slurm``): the same results as the basic launcher,
requeued and preempted jobs resume from last.ckpt, a sweep whose parent died completes on re-run, a cancelled job is
reported without a hang (no accounting database: sacct fails here, as on many lab clusters), DDP through srun.

One cluster per session (conftest.py); the jobs are the tiny config, and jobs that must be hit mid-fit wait for the
test at epoch 1 (hooks.py), so no test depends on timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import ROOT, TINY, read_metrics, subprocess_env
from tests.slurm.hooks import PAUSE_DIR, PAUSE_JOBS

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

RUN = [*TINY, "strategy=fine_tuning", "trainer.deterministic=true", "trainer.max_epochs=3", "trainer.threads=1",
       "+callbacks.slurm_pause._target_=tests.slurm.hooks.PauseFirstAttempt"]  # fmt: skip
ON_SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=30"]  # fmt: skip


def _env(tmp_path: Path, cluster: dict, pause_jobs: str | None = None) -> dict:
    extra = {"TRANSFERLAB_LOG_DIR": str(tmp_path / "logs"), "TRANSFERLAB_CACHE_DIR": str(tmp_path / "cache")}
    if pause_jobs is not None:
        (tmp_path / "paused").mkdir(exist_ok=True)
        extra |= {PAUSE_JOBS: pause_jobs, PAUSE_DIR: str(tmp_path / "paused")}
    return subprocess_env(**cluster, **extra)


def _command(sweep: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "transferlab.train", "-m", *RUN, f"hydra.sweep.dir={sweep}", *overrides]


def _sweep(sweep: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(_command(sweep, *overrides), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _start(sweep: Path, env: dict, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        _command(sweep, *overrides), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_paused(tmp_path: Path, jobs: list[int], proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until each of ``jobs`` waits at epoch 1 (its last.ckpt written)."""
    deadline = time.monotonic() + timeout
    while not all((tmp_path / "paused" / str(j)).exists() for j in jobs):
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before its jobs paused: {proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, "the jobs did not reach epoch 1"
        time.sleep(0.2)


def _sweep_hitting_paused_jobs(
    tmp_path: Path, cluster: dict, paused: list[int], hit: Callable[[Path, dict], None], *overrides: str
) -> Path:
    """Start a SLURM sweep whose jobs ``paused`` wait mid-fit; call ``hit(sweep, env)``; wait for the sweep to end
    (successfully) and return its folder."""
    sweep = tmp_path / "sweep"
    env = _env(tmp_path, cluster, pause_jobs=",".join(map(str, paused)))
    proc = _start(sweep, env, *ON_SLURM, *overrides)
    try:
        _wait_paused(tmp_path, paused, proc)
        hit(sweep, env)
        _, stderr = proc.communicate(timeout=400)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-4000:]
    return sweep


def _state(env: dict, job_id: str) -> str:
    return subprocess.run(
        ["squeue", "--noheader", "--format=%T", "-j", job_id], env=env, capture_output=True, text=True
    ).stdout.strip()


def _slurm_id(sweep: Path, job: int) -> str:
    """The SLURM job id (``ARRAY_TASK``) of sweep job ``job``: its slurm.log links into ``.submitit/<id>/``."""
    return Path(os.readlink(sweep / str(job) / "slurm.log")).parent.name


def _queue_empty(env: dict, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "--noheader"], env=env, capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "jobs still queued"
        time.sleep(0.5)


def _results(sweep: Path) -> pd.DataFrame:
    return pd.read_csv(sweep / "results.csv").set_index("job")


def _slurm_log(sweep: Path, job: int) -> str:
    return (sweep / str(job) / "slurm.log").read_text()


@pytest.fixture(scope="session")
def local_acc(slurm_cluster, tmp_path_factory) -> dict[int, float]:
    """test/acc by seed of the same 3 jobs under the basic launcher: what every cluster run must reproduce."""
    tmp = tmp_path_factory.mktemp("local")
    sweep = tmp / "sweep"
    _sweep(sweep, _env(tmp, {}), "seed=0,1,2")
    results = _results(sweep)
    assert list(results["status"]) == ["ok"] * 3
    return dict(zip(results["seed"], results["test/acc"], strict=True))


def test_slurm_sweep_equals_the_local_sweep(slurm_cluster, local_acc, tmp_path):
    sweep = tmp_path / "sweep"
    _sweep(sweep, _env(tmp_path, slurm_cluster), *ON_SLURM, "seed=0,1,2")
    results = _results(sweep)
    assert list(results["status"]) == ["ok"] * 3
    assert dict(zip(results["seed"], results["test/acc"], strict=True)) == local_acc
    assert list(results["slurm/requeues"]) == [0, 0, 0]
    assert "Wrote" in _slurm_log(sweep, 2)  # the job's SLURM log, read from its folder
    assert (sweep / "report.md").is_file()


def test_requeued_and_preempted_jobs_resume_and_equal_uninterrupted_ones(slurm_cluster, local_acc, tmp_path):
    # Job 0: `scontrol requeue` (SLURM's SIGTERM). Job 1: preempted by a job in the higher-priority partition `high`
    # that needs the whole node; with a grace time and preempt_send_user_signal SLURM sends it submitit's USR2 first
    # (as before a time limit), and the job has SLURM requeue it at once.
    def requeue_then_preempt(sweep: Path, env: dict) -> None:
        job_0 = _slurm_id(sweep, 0)
        subprocess.run(["scontrol", "requeue", job_0], env=env, check=True)
        deadline = time.monotonic() + 60
        while _state(env, job_0) != "PENDING":  # its CPU is free: the high job now preempts job 1 alone
            assert time.monotonic() < deadline, "job 0 was not requeued"
            time.sleep(0.2)
        urgent = ["sbatch", "--partition=high", "--cpus-per-task=2", f"--output={tmp_path / 'urgent.out'}"]
        subprocess.run([*urgent, "--wrap=sleep 1"], env=env, check=True, capture_output=True)

    sweep = _sweep_hitting_paused_jobs(tmp_path, slurm_cluster, [0, 1], requeue_then_preempt, "seed=0,1")
    results = _results(sweep)
    assert list(results["status"]) == ["ok", "ok"]
    assert dict(zip(results["seed"], results["test/acc"], strict=True)) == {s: local_acc[s] for s in (0, 1)}
    assert list(results["slurm/requeues"]) == [1, 1]
    for job in (0, 1):
        log = _slurm_log(sweep, job)
        assert "SIGTERM stopped job" in log and "resumes from" in log, log[-3000:]
    assert "USR2: asking SLURM to requeue" in _slurm_log(sweep, 1)


def test_sweep_whose_parent_was_killed_completes_on_rerun(slurm_cluster, local_acc, tmp_path):
    sweep = tmp_path / "sweep"
    env = _env(tmp_path, slurm_cluster, pause_jobs="1")
    proc = _start(sweep, env, *ON_SLURM, "seed=0,1")
    try:
        _wait_paused(tmp_path, [1], proc)
    finally:
        proc.send_signal(signal.SIGKILL)  # the parent dies; its jobs go on
        proc.communicate()
    subprocess.run(["scancel", _slurm_id(sweep, 1)], env=env, check=True)  # job 1 stops mid-fit, last.ckpt kept
    _queue_empty(env)
    assert read_metrics(sweep / "0")["status"] == "ok"  # finished on the cluster without its parent
    assert read_metrics(sweep / "1")["status"] == "interrupted"
    finished = (sweep / "0" / "metrics.json").stat().st_mtime_ns

    rerun = _sweep(sweep, _env(tmp_path, slurm_cluster), *ON_SLURM, "seed=0,1")  # the same command
    results = _results(sweep)
    assert list(results["status"]) == ["ok", "ok"]
    assert dict(zip(results["seed"], results["test/acc"], strict=True)) == {s: local_acc[s] for s in (0, 1)}
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == finished  # skipped, not run again
    assert "Job 0 skipped" in _slurm_log(sweep, 0) and "Job 1 resumes from" in _slurm_log(sweep, 1)
    assert "Report:" in rerun.stdout + rerun.stderr


def test_cancelled_job_is_reported_and_the_sweep_returns(slurm_cluster, tmp_path):
    sacct = subprocess.run(["sacct", "-j", "1"], env=_env(tmp_path, slurm_cluster), capture_output=True, text=True)
    assert sacct.returncode != 0  # no accounting database: submitit alone would wait for job 0 forever

    def cancel_job_0(sweep: Path, env: dict) -> None:
        subprocess.run(["scancel", _slurm_id(sweep, 0)], env=env, check=True)

    sweep = _sweep_hitting_paused_jobs(tmp_path, slurm_cluster, [0], cancel_job_0, "seed=0,1")
    results = _results(sweep)
    assert list(results["status"]) == ["cancelled", "ok"]
    assert f"SLURM job {_slurm_id(sweep, 0)} ended CANCELLED" in results.loc[0, "error"]
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "cancelled"
    failed = (sweep / "report.md").read_text().split("## Failed jobs")[1]
    assert "| 0 |" in failed and "cancelled" in failed


def test_ddp_through_srun_trains_into_one_run_folder(slurm_cluster, tmp_path):
    # Two srun tasks are the two DDP ranks (Lightning's SLURM environment): one job folder, metrics written once.
    sweep = tmp_path / "sweep"
    overrides = ["trainer=ddp_cpu", "data.batch_size=16", "hydra.launcher.tasks_per_node=2", "hydra.launcher.nodes=1"]
    _sweep(sweep, _env(tmp_path, slurm_cluster), *ON_SLURM, *overrides, "seed=0")
    assert [p.name for p in sweep.iterdir() if p.name.isdigit()] == ["0"]
    assert not list((sweep / "0").glob("replaced-*"))
    metrics = read_metrics(sweep / "0")
    assert metrics["status"] == "ok" and metrics["epochs"] == 3
    ranks = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert len(ranks) == 2 and "global_rank=1(2)" in ranks[1].read_text()  # both srun tasks ran the job
    assert sum(p.read_text().count("Wrote ") for p in ranks) == 1  # metrics.json written once, by rank 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hydra.launcher.partition=gpu", "hydra.launcher.partition=gpu: no such partition on this cluster; sinfo shows debug, high."),
        ("hydra.launcher.mem_gb=4096", "hydra.launcher.mem_gb=4096, but the largest node of the default partition has"),
    ],
)  # fmt: skip
def test_a_request_the_cluster_cannot_meet_gets_one_line(slurm_cluster, tmp_path, override, message):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        _command(sweep, *ON_SLURM, override), cwd=ROOT, env=_env(tmp_path, slurm_cluster), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), proc.stderr[-3000:]
    assert not (sweep / ".submitit").exists()  # nothing was submitted
