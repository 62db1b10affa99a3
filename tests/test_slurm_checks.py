"""hydra/launcher=slurm's checks before anything is submitted (no cluster needed: sinfo and squeue are stand-ins
printing what a one-node cluster prints), and the SLURM facts a run records."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, TINY, subprocess_env
from transferlab.sweeps.slurm_checks import check_request, jobs_still_queued
from transferlab.utils.errors import TransferlabError
from transferlab.utils.slurm import slurm_job_metrics

SINFO = "debug*|2|24105\nhigh|2|24105\n"  # sinfo --Node --format=%P|%c|%m: partition (* default), CPUs, MB


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch) -> Path:
    """sbatch, sinfo and squeue stand-ins first on PATH: two partitions of one 2-CPU, 24 GB node; jobs 5_0 and 7
    queued."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, output in {"sbatch": "", "sinfo": SINFO, "squeue": "5_0\n7\n"}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\nprintf '{output}'\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_a_request_the_cluster_can_run_passes(fake_cluster):
    check_request({"partition": "high", "cpus_per_task": 1, "tasks_per_node": 2, "mem_gb": 16})
    check_request({"partition": None, "cpus_per_task": 2, "mem_gb": None})  # the default partition


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"partition": "gpu"}, "hydra.launcher.partition=gpu: no such partition on this cluster; sinfo shows debug, high."),
        ({"partition": "debug", "cpus_per_task": 2, "tasks_per_node": 2}, "hydra.launcher.cpus_per_task=2 x tasks_per_node=2 = 4 CPUs per node, but the largest node of partition debug has 2."),
        ({"partition": None, "mem_gb": 32}, "hydra.launcher.mem_gb=32, but the largest node of the default partition has 23.5 GB. Lower hydra.launcher.mem_gb (at most 23)."),
    ],
)  # fmt: skip
def test_a_request_no_node_can_meet_gets_one_line(fake_cluster, params, message):
    with pytest.raises(TransferlabError, match="^" + re.escape(message)):
        check_request(params)


def test_jobs_of_an_earlier_launch_still_queued_are_found(fake_cluster, tmp_path):
    folder = tmp_path / ".submitit"
    for job in ("5", "5_0", "5_1", "6_0"):
        (folder / job).mkdir(parents=True)
    assert jobs_still_queued(folder) == ["5_0"]
    assert jobs_still_queued(tmp_path / "no-such-folder") == []


def test_slurm_launcher_without_sbatch_says_so_before_submitting(tmp_path):
    sweep = tmp_path / "sweep"
    env = subprocess_env(PATH=str(Path(sys.executable).parent), TRANSFERLAB_LOG_DIR=str(tmp_path / "logs"))
    proc = subprocess.run(
        [sys.executable, "-m", "transferlab.train", "-m", *TINY, "hydra/launcher=slurm", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: hydra/launcher=slurm needs SLURM's sbatch, which is not on PATH. Run the sweep on the cluster's login "
        "node (or load its slurm module), or use hydra/launcher=basic or hydra/launcher=parallel here."
    ]
    assert not (sweep / ".submitit").exists()


def test_a_run_records_its_slurm_job_and_requeues(monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)
    assert slurm_job_metrics() == {}
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    assert slurm_job_metrics() == {"slurm/job_id": "12", "slurm/requeues": 0}
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "10")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    assert slurm_job_metrics() == {"slurm/job_id": "10_2", "slurm/requeues": 3}


def test_lightning_auto_requeue_is_off_under_slurm(tiny_cfg, monkeypatch):
    # One requeue mechanism: under srun Lightning's SLURM environment supplies the ranks, but must not requeue.
    from transferlab.build import build_trainer

    slurm = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "5",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "vm"}  # fmt: skip
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    trainer = build_trainer(tiny_cfg(), with_loggers=False)
    environment = trainer._accelerator_connector.cluster_environment
    assert type(environment).__name__ == "SLURMEnvironment" and environment.auto_requeue is False
    assert type(trainer.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"  # the config's plugins stay


@pytest.mark.parametrize(("rank", "restarts", "requeued"), [("0", "0", True), ("1", "0", False), ("0", "3", False)])
def test_usr2_asks_slurm_to_requeue_the_job(fake_cluster, monkeypatch, rank, restarts, requeued):
    # submitit's signal (before the time limit, or a preemption's grace time): rank 0 requeues, at most 3 times.
    import signal

    from transferlab.sweeps.slurm_jobs import take_requeue_signal

    calls = fake_cluster / "scontrol.calls"
    (fake_cluster / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake_cluster / "scontrol").chmod(0o755)
    for key, value in {"SLURM_JOB_ID": "12", "SLURM_PROCID": rank, "SLURM_RESTART_COUNT": restarts}.items():
        monkeypatch.setenv(key, value)
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        take_requeue_signal(max_requeues=3)
        signal.raise_signal(signal.SIGUSR2)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert (calls.read_text() if calls.exists() else "") == ("requeue 12\n" if requeued else "")
