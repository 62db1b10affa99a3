"""Sweeps that survive a kill: SIGTERM during job 2 of 3 exits non-zero and records `interrupted`; re-running into
the same folder skips the finished job, resumes the killed one and runs the last, matching an uninterrupted sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra.core.hydra_config import HydraConfig
from lightning import Callback
from omegaconf import OmegaConf, open_dict, read_write

from tests.helpers import ROOT, TINY, compose_config, read_metrics, subprocess_env
from transferlab.sweeps import interrupt
from transferlab.sweeps.job import resume_command
from transferlab.sweeps.resume import comparable_config, plan_job, prepare_job, write_record
from transferlab.train import train

PAUSE_JOB, PAUSE_FILE = "TRANSFERLAB_TEST_PAUSE_JOB", "TRANSFERLAB_TEST_PAUSE_FILE"
SWEEP = [*TINY, "strategy=fine_tuning", "trainer.deterministic=true", "trainer.max_epochs=3", "logger=csv",
         "+callbacks.pause._target_=tests.test_sweep_resume.PauseForKill", "seed=0,1,2"]  # fmt: skip


class PauseForKill(Callback):
    """Test hook: the sweep job numbered $TRANSFERLAB_TEST_PAUSE_JOB stops at epoch 1, batch 2 (after epoch 0's
    last.ckpt), touches $TRANSFERLAB_TEST_PAUSE_FILE and waits to be killed. Without the variables it does nothing."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        from hydra.core.hydra_config import HydraConfig

        job = os.environ.get(PAUSE_JOB)
        if job is None or (trainer.current_epoch, batch_idx) != (1, 2) or HydraConfig.get().job.num != int(job):
            return
        Path(os.environ[PAUSE_FILE]).touch()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.05)
        raise RuntimeError("PauseForKill: nobody sent the signal")


class KillSelf(Callback):
    """Test hook: sends ``signum`` to this very process at epoch 1, batch 2 (after epoch 0's last.ckpt)."""

    def __init__(self, signum: int):
        self.signum = signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (1, 2):
            os.kill(os.getpid(), self.signum)


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    yield
    interrupt.restore()  # a multirun job keeps its handlers installed; give pytest its own back


def _sweep_job(tmp_path: Path, *overrides: str):
    """A composed config that believes it is job 0 of a multirun in ``tmp_path/sweep``."""
    cfg = compose_config(tmp_path, [*TINY, *overrides])
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True, exist_ok=True)
    with read_write(cfg.hydra), open_dict(cfg):  # compose_config registered it with Hydra, which made hydra read-only
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.sweep.dir = str(job.parent)
        cfg.hydra.runtime.output_dir = cfg.paths.output_dir = str(job)
    HydraConfig().set_config(cfg)
    task_cfg = cfg.copy()
    with open_dict(task_cfg):
        task_cfg.pop("hydra")
    OmegaConf.save(task_cfg, job / ".hydra" / "config.yaml")  # what Hydra saves before the job starts
    return cfg, job


def test_same_config_ignores_paths_loggers_and_labels(tmp_path):
    base = comparable_config(compose_config(tmp_path, TINY))
    moved = compose_config(tmp_path / "elsewhere", [*TINY, "logger=csv", "tags=[x]", "paths.data_dir=/tmp/d"])
    assert comparable_config(moved) == base
    assert comparable_config(compose_config(tmp_path, [*TINY, "strategy.lr=0.5"])) != base
    assert comparable_config(compose_config(tmp_path, [*TINY, "seed=1"])) != base


def test_a_key_added_later_with_a_null_default_keeps_finished_jobs(tmp_path):
    """A job finished before transferlab added ``data.task`` (null by default) or declared LoRA's ``knobs`` is
    skipped, not re-run; the same key set to a value is a change."""
    cfg, job = _sweep_job(tmp_path, "strategy=lora")
    old = OmegaConf.to_container(cfg, resolve=False)
    old.pop("hydra")
    del old["data"]["task"], old["strategy"]["knobs"]  # the record an older transferlab wrote
    (job / "job_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(old)))
    (job / "metrics.json").write_text(json.dumps({"status": "ok", "val/acc": 0.5}))
    assert plan_job(job, cfg).action == "skip"
    with open_dict(cfg):
        cfg.data.task = "dtd"
    assert plan_job(job, cfg).action == "run"


def test_skipped_job_returns_its_metric_and_keeps_its_file(tmp_path):
    cfg, job = _sweep_job(tmp_path, "strategy=fine_tuning")
    write_record(job, cfg)
    metrics = job / "metrics.json"
    metrics.write_text(json.dumps({"status": "ok", "val/acc": 0.625, "test/acc": 0.5}))
    before = (metrics.read_bytes(), metrics.stat().st_mtime_ns)
    assert train(cfg) == 0.625  # what the sweeper gets, with nothing trained
    assert (metrics.read_bytes(), metrics.stat().st_mtime_ns) == before


def test_changed_config_runs_afresh_and_moves_the_old_outputs_aside(tmp_path):
    old, job = _sweep_job(tmp_path, "strategy.lr=0.01")
    write_record(job, old)
    (job / "metrics.json").write_text('{"status": "ok"}')
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"old")
    new, _ = _sweep_job(tmp_path, "strategy.lr=0.003")
    plan = prepare_job(job, new)
    assert plan.action == "run" and "changed" in plan.reason and new.resume is None
    (moved,) = job.glob("replaced-*")
    assert (moved / "metrics.json").is_file() and (moved / "checkpoints" / "last.ckpt").is_file()
    assert not (job / "metrics.json").exists() and not (job / "checkpoints").exists()
    assert (job / ".hydra" / "config.yaml").is_file()
    assert prepare_job(job, new).action == "run"  # recorded: now the same config, with nothing to resume


def test_interrupted_job_with_a_checkpoint_resumes_in_place(tmp_path):
    cfg, job = _sweep_job(tmp_path)
    write_record(job, cfg)
    (job / "metrics.json").write_text('{"status": "interrupted"}')
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    assert prepare_job(job, cfg).action == "resume" and cfg.resume == str(job)
    assert (job / "metrics.json").is_file() and not list(job.glob("replaced-*"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_a_run_non_zero_and_resume_finishes_it(tmp_path, signum, capsys):
    base = [*TINY, "strategy=fine_tuning", "trainer.max_epochs=2", "logger=csv"]
    cfg = compose_config(tmp_path, [*base, "+callbacks.kill._target_=tests.test_sweep_resume.KillSelf",
                                    f"+callbacks.kill.signum={int(signum)}"])  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        train(cfg)
    assert stopped.value.code == 128 + signum
    run_dir = Path(cfg.paths.output_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    line = capsys.readouterr().err
    assert line.startswith("interrupted:") and signal.Signals(signum).name in line and f"resume={run_dir}" in line
    assert signal.getsignal(signal.SIGINT) is not interrupt._handler  # a single run gives the handlers back

    train(compose_config(tmp_path / "again", [*base, f"resume={run_dir}"]))
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "ok"


def test_lightnings_own_sigterm_exit_is_recorded_and_other_exits_pass_through(tmp_path, capsys):
    """Without our handler (e.g. Lightning installed its own), SIGTERM arrives as Lightning's SIGTERMException, a
    SystemExit with no code: still an interrupted job and exit 143. Any other SystemExit is not ours to handle."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from transferlab.sweeps import resumable

    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}})

    @resumable
    def lightning_stopped(cfg):
        raise SIGTERMException

    @resumable
    def exits(cfg):
        raise SystemExit(3)

    with pytest.raises(SystemExit) as stopped:
        lightning_stopped(cfg)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "interrupted"
    assert "SIGTERM" in capsys.readouterr().err
    with pytest.raises(SystemExit) as other:
        exits(cfg)
    assert other.value.code == 3


def test_signal_between_sweep_jobs_stops_before_the_next_one(tmp_path, capsys):
    cfg, job = _sweep_job(tmp_path)
    write_record(job, cfg)
    (job / "metrics.json").write_text('{"status": "ok", "val/acc": 0.5}')
    interrupt.install()
    os.kill(os.getpid(), signal.SIGTERM)  # no job running: remembered, not raised
    assert interrupt.pending() == signal.SIGTERM
    with pytest.raises(SystemExit) as stopped:
        train(cfg)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert json.loads((job / "metrics.json").read_text()) == {"status": "ok", "val/acc": 0.5}
    assert "before job 0" in capsys.readouterr().err


def test_resume_command_replaces_an_earlier_sweep_dir():
    argv = ["-m", "seed=0,1", "hydra.sweep.dir=old", "strategy.unfreeze_schedule={1: all}"]
    command = resume_command("python -m transferlab.train", argv, "hydra.sweep.dir", Path("/new"))
    assert (
        command == "python -m transferlab.train -m seed=0,1 'strategy.unfreeze_schedule={1: all}' hydra.sweep.dir=/new"
    )


def _env(tmp_path: Path, **extra: str) -> dict:
    return subprocess_env(
        TRANSFERLAB_LOG_DIR=str(tmp_path / "logs"), TRANSFERLAB_CACHE_DIR=str(tmp_path / "cache"), **extra
    )


def _sweep_cmd(sweep: Path) -> list[str]:
    return [sys.executable, "-m", "transferlab.train", "-m", *SWEEP, f"hydra.sweep.dir={sweep}"]


def _run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"sweep ended early:\n{proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    expected = tmp_path / "uninterrupted"
    _run(_sweep_cmd(expected), _env(tmp_path))

    sweep, paused = tmp_path / "sweep", tmp_path / "paused"
    proc = subprocess.Popen(
        _sweep_cmd(sweep), cwd=ROOT, env=_env(tmp_path, **{PAUSE_JOB: "1", PAUSE_FILE: str(paused)}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(paused, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]

    # The killed job: interrupted, its epoch-0 checkpoint kept, the sweep stopped before job 3, a report written.
    assert read_metrics(sweep / "1")["status"] == "interrupted"
    assert (sweep / "1" / "checkpoints" / "last.ckpt").is_file()
    assert not (sweep / "2").exists()
    assert list(pd.read_csv(sweep / "results.csv")["status"]) == ["ok", "interrupted"]
    line = next(ln for ln in stderr.splitlines() if ln.startswith("interrupted:"))
    assert "SIGTERM" in line and str(sweep / "1" / "checkpoints" / "last.ckpt") in line
    assert f"hydra.sweep.dir={sweep}" in line and "python -m transferlab.train -m" in line

    first = (sweep / "0" / "metrics.json").read_bytes()
    first_mtime = (sweep / "0" / "metrics.json").stat().st_mtime_ns
    rerun = _run(_sweep_cmd(sweep), _env(tmp_path))
    log = rerun.stdout + rerun.stderr
    assert "Job 0 skipped" in log and "Job 1 resumes from" in log and "Job 2 runs: new job" in log

    # Skipped: the very same file. Resumed and fresh: the uninterrupted sweep's numbers.
    assert (sweep / "0" / "metrics.json").read_bytes() == first
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == first_mtime
    for job in ("1", "2"):
        got, want = read_metrics(sweep / job), read_metrics(expected / job)
        assert got["status"] == "ok"
        assert got["test/acc"] == want["test/acc"], job
        for key in ("val/acc", "val/loss", "test/loss", "test/f1_macro", "train/loss"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), (job, key)
    results = pd.read_csv(sweep / "results.csv")
    assert list(results["status"]) == ["ok", "ok", "ok"]
    assert list(results["test/acc"]) == list(pd.read_csv(expected / "results.csv")["test/acc"])


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc), e.g. a parallel sweep's pool workers."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_parallel_sweep_stops_its_workers_on_sigterm_and_resumes(tmp_path):
    # SIGTERM to the sweep's own process (kill PID, a scheduler): joblib alone died at once and left its workers
    # training. Now the running jobs stop cleanly, no worker is left behind, and a re-run finishes the sweep.
    sweep, paused = tmp_path / "sweep", tmp_path / "paused"
    cmd = [*_sweep_cmd(sweep), "hydra/launcher=parallel"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(tmp_path, **{PAUSE_JOB: "1", PAUSE_FILE: str(paused)}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(paused, proc)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert workers and all(_gone(pid) for pid in workers), "a pool worker outlived the sweep"

    assert read_metrics(sweep / "1")["status"] == "interrupted"
    assert (sweep / "1" / "checkpoints" / "last.ckpt").is_file()
    statuses = [read_metrics(job)["status"] for job in sorted(sweep.glob("[0-9]")) if (job / "metrics.json").exists()]
    assert set(statuses) <= {"ok", "interrupted"}, statuses
    assert "interrupted" in pd.read_csv(sweep / "results.csv")["status"].tolist()
    lines = [ln for ln in stderr.splitlines() if ln.startswith("interrupted:")]
    assert lines[-1].startswith(f"interrupted: SIGTERM stopped the sweep {sweep}"), lines
    for line in lines:  # every resume command is ours, none joblib's worker module
        assert "python -m transferlab.train -m" in line and f"hydra.sweep.dir={sweep}" in line, line

    rerun = _run(cmd, _env(tmp_path))
    assert "Job 1 resumes from" in rerun.stdout + rerun.stderr
    assert list(pd.read_csv(sweep / "results.csv")["status"]) == ["ok", "ok", "ok"]
