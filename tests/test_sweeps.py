"""Sweeps: a failed job does not stop the others, the report is built, launchers and Optuna work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import ROOT, TINY, compose_config


def _multirun(tmp_path: Path, *overrides: str, timeout: int = 900) -> Path:
    sweep = tmp_path / "sweep"
    env = {
        **os.environ,
        "TRANSFERLAB_LOG_DIR": str(tmp_path / "logs"),
        "TRANSFERLAB_CACHE_DIR": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "transferlab.train", "-m", *TINY, "data.train_size=100", f"hydra.sweep.dir={sweep}", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


@pytest.mark.slow
def test_sweep_survives_a_failed_job_and_reports_it(tmp_path):
    sweep = _multirun(tmp_path, "strategy=lora", "strategy.r=0,4")
    results = pd.read_csv(sweep / "results.csv")
    assert list(results["status"]) == ["failed", "ok"]
    assert "strategy.r=0" in results.loc[0, "error"]
    report = (sweep / "report.md").read_text()
    assert "## Failed jobs" in report and "strategy.r=0" in report
    assert "lora r=4 a=16" in report
    ok = json.loads((sweep / "1" / "metrics.json").read_text())
    assert results.loc[1, "test/acc"] == pytest.approx(ok["test/acc"])


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    sweep = _multirun(tmp_path, "hydra/launcher=parallel", "strategy=feature_extraction", "seed=0,1")
    results = pd.read_csv(sweep / "results.csv")
    assert list(results["status"]) == ["ok", "ok"] and sorted(results["seed"]) == [0, 1]
    assert "± " in (sweep / "report.md").read_text()  # two seeds: mean ± std


@pytest.mark.slow
def test_optuna_study_continues_after_failed_trials(tmp_path):
    # every trial fails (targets that match nothing): the study must still run all of them and end normally
    sweep = _multirun(
        tmp_path, "hparams_search=lora_optuna", "hydra.sweeper.n_trials=3", "strategy.target_modules=[nope]"
    )
    results = pd.read_csv(sweep / "results.csv")
    assert len(results) == 3 and set(results["status"]) == {"failed"}
    assert all("matches no module" in e for e in results["error"])
    assert "## Failed jobs" in (sweep / "report.md").read_text()


def test_slurm_launcher_config_makes_a_valid_sbatch_script(tmp_path, monkeypatch):
    # The launcher as Hydra instantiates it, its parameters handed to submitit the way our launcher's launch()
    # does (submitit rejects unknown keys), and the sbatch script submitit would submit.
    import hydra
    import submitit

    from transferlab.sweeps.slurm_jobs import job_parameters

    cfg = compose_config(tmp_path, ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=gpu"])
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun on this machine
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(**job_parameters(launcher.params))
    script = executor._executor._make_submission_file_text("python -m transferlab.train", "0")
    lines = ["--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=240", "--nodes=1"]
    for line in [*lines, "--signal=USR2@120"]:  # USR2: the job asks SLURM to requeue it (slurm_jobs.py)
        assert f"#SBATCH {line}\n" in script, line


def test_report_rebuilds_from_a_partial_sweep(tmp_path):
    from transferlab.report import build_report

    sweep = tmp_path / "sweep"
    # metrics.json as training writes it, with the arm's label and family (run_summary.arm_record)
    rows = [("fine_tuning", "FineTuning", {"test/acc": 0.9, "params/trainable": 1000, "time/fit_s": 10.0,
                                           "label": "fine_tuning (all)", "family": "fine-tuning"}),
            ("feature_extraction", "FeatureExtraction", {"test/acc": 0.8, "params/trainable": 10, "time/fit_s": 2.0,
                                                         "label": "feature_extraction", "family": "frozen"})]  # fmt: skip
    for i, (name, cls, metrics) in enumerate(rows):
        job = sweep / str(i) / ".hydra"
        job.mkdir(parents=True)
        (job / "config.yaml").write_text(
            f"seed: 0\nstrategy:\n  _target_: transferlab.strategies.{cls}\n  name: {name}\n  unfreeze: all\n"
            "data:\n  train_size: 100\n"
        )
        (job / "overrides.yaml").write_text(f"- strategy={name}\n")
        (sweep / str(i) / "metrics.json").write_text(json.dumps({"status": "ok", **metrics}))
    (sweep / "2" / ".hydra").mkdir(parents=True)  # a job that never finished
    build_report(sweep)
    report = (sweep / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert "fine_tuning (all)" in table[0] and "feature_extraction" in table[1]  # ranked by test acc
    assert "missing" in report
    assert (sweep / "plots" / "acc_vs_params.png").is_file()
