"""Optuna studies persist in SQLite under the sweep folder: a re-run (after a stop or a kill) continues the study to
n_trials completed trials, and the report names the best trial."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import ROOT, TINY, subprocess_env


def _command(sweep: Path, n_trials: int) -> list[str]:
    return [sys.executable, "-m", "transferlab.train", "-m", *TINY, "data.train_size=100", "hparams_search=lora_optuna",
            f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={sweep}"]  # fmt: skip


def _env(tmp_path: Path) -> dict:
    return subprocess_env(TRANSFERLAB_LOG_DIR=str(tmp_path / "logs"), TRANSFERLAB_CACHE_DIR=str(tmp_path / "cache"))


def _sweep(tmp_path: Path, n_trials: int) -> Path:
    sweep = tmp_path / "sweep"
    proc = subprocess.run(_command(sweep, n_trials), cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def _study(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name="lora_optuna", storage=f"sqlite:///{sweep / 'optuna.db'}")


def _assert_finished_study(sweep: Path, n_trials: int) -> None:
    study = _study(sweep)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * n_trials
    assert [t.number for t in study.trials] == list(range(n_trials))
    for t in study.trials:  # job N ran trial N, and its folder holds the value Optuna recorded
        assert t.system_attrs["transferlab:job"] == t.number
        metrics = json.loads((sweep / str(t.number) / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["val/acc"] == pytest.approx(t.value)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == n_trials  # no point proposed twice
    report = (sweep / "report.md").read_text()
    best = study.best_trial
    assert f"**Best trial: {best.number}** (job {best.number}), `val/acc` = {best.value:.4f}" in report
    assert f"`strategy.r={best.params['strategy.r']}`" in report
    assert f"{n_trials} trials, {n_trials} complete" in report


@pytest.mark.slow
def test_study_continues_to_n_trials_after_a_stop_and_a_kill(tmp_path):
    sweep = _sweep(tmp_path, n_trials=2)  # a finished study of 2 trials
    first = [t.params for t in _study(sweep).trials]
    assert len(first) == 2

    # Asked for 4 (the stock sweeper would run 4 more, 6 in all), then killed when trial 3 starts.
    proc = subprocess.Popen(_command(sweep, 4), cwd=ROOT, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (sweep / "3").is_dir():  # Hydra makes job 3's folder when trial 3 starts
            assert proc.poll() is None, "the sweep ended before its fourth trial"
            assert time.monotonic() < deadline, "the fourth trial never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no clean-up at all: a crash, an OOM kill, a lost node
    finally:
        proc.kill()
        proc.wait()
    trials = _study(sweep).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.RUNNING]
    assert [t.params for t in trials[:2]] == first  # the first trials were kept, not re-run
    killed = trials[3].params

    _sweep(tmp_path, n_trials=4)
    _assert_finished_study(sweep, 4)
    assert [t.params for t in _study(sweep).trials[:2]] == first
    assert _study(sweep).trials[3].params == killed  # the unfinished trial ran again, as itself
    _sweep(tmp_path, n_trials=4)  # nothing left to do: no new trial, the report is written again
    _assert_finished_study(sweep, 4)


def _fake_sweep(tmp_path: Path, values: list[float]) -> Path:
    """A sweep folder with a study whose trials have the given values (no training)."""
    from transferlab.reporting.optuna_summary import JOB_ATTR, STUDY_FILE

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for i, value in enumerate(values):
        trial = study.ask({"lr": optuna.distributions.LogUniformDistribution(1e-4, 1e-1)})
        trial.storage.set_trial_system_attr(trial._trial_id, JOB_ATTR, i)
        study.tell(trial, value)
    (sweep / STUDY_FILE).write_text(json.dumps({"storage": storage, "study_name": "s", "metric": "val/acc"}))
    return sweep


def test_report_section_names_the_best_trial_and_skips_failed_ones(tmp_path):
    from transferlab.reporting.optuna_summary import optuna_section

    sweep = _fake_sweep(tmp_path, [0.5, 0.9, -math.inf, 0.7])  # trial 2 failed: the worst value
    section = optuna_section(sweep)
    lr = optuna.load_study(study_name="s", storage=f"sqlite:///{sweep / 'optuna.db'}").trials[1].params["lr"]
    assert f"**Best trial: 1** (job 1), `val/acc` = 0.9000, parameters: `lr={lr:.4g}`" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| trial")]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 3", "| 0"]  # best first; the failed trial left out


def test_report_section_is_empty_without_a_study_and_one_line_when_unreadable(tmp_path):
    from transferlab.reporting.optuna_summary import STUDY_FILE, optuna_section

    assert optuna_section(tmp_path) == ""
    (tmp_path / STUDY_FILE).write_text(json.dumps({"storage": f"sqlite:///{tmp_path / 'x.db'}", "study_name": "gone"}))
    section = optuna_section(tmp_path)
    assert section.startswith("## Optuna study") and "Could not read the study" in section


def test_only_trials_of_dead_local_processes_are_orphans(tmp_path):
    from hydra_plugins.transferlab_optuna_sweeper._impl import _is_orphan, _owner

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.create_study()
    owners = {"dead": _owner().rsplit(":", 1)[0] + f":{dead.pid}", "alive": _owner(), "remote": "elsewhere:1"}
    trials = {}
    for name, owner in owners.items():
        trial = study.ask()
        trial.storage.set_trial_system_attr(trial._trial_id, "transferlab:owner", owner)
        trials[name] = study.trials[trial.number]
    number = study.ask().number  # no owner recorded
    trials["unknown"] = study.trials[number]
    assert {name: _is_orphan(t) for name, t in trials.items()} == {
        "dead": True, "alive": False, "remote": False, "unknown": False,
    }  # fmt: skip
