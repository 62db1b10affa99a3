"""logger=mlflow: runs land in a local SQLite store with their params and metrics, and MLflow never stops a run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pytest

from transferlab.train import train


@pytest.fixture(autouse=True)
def no_tracking_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default: the SQLite file under logs/


def _runs(cfg, experiment: str = "train"):
    mlflow.set_tracking_uri(f"sqlite:///{Path(cfg.paths.log_dir) / 'mlflow.db'}")
    try:
        return mlflow.search_runs(experiment_names=[experiment])
    finally:
        mlflow.set_tracking_uri(None)  # back to the default, for later tests of this process


def test_run_is_found_in_the_sqlite_store_with_params_and_metrics(tiny_cfg):
    cfg = tiny_cfg("logger=mlflow", "strategy=lora", "strategy.lr=0.002")
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    runs = _runs(cfg)  # the experiment is the task name when no experiment config is set
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["tags.mlflow.runName"] == "lora" and run["status"] == "FINISHED"
    assert run["params.strategy.name"] == "lora" and float(run["params.strategy.lr"]) == 0.002
    assert run["params.data.name"] == "digits"
    assert run["metrics.test/acc"] == pytest.approx(metrics["test/acc"])
    assert run["metrics.val/acc"] == pytest.approx(metrics["val/acc"])
    assert run["metrics.params/trainable"] == metrics["params/trainable"]  # the metrics.json numbers too
    assert (Path(cfg.paths.output_dir) / "mlflow_run_id.txt").read_text() == run["run_id"]


def test_params_are_logged_within_mlflow_limits_and_a_resumed_run_keeps_its_own(tmp_path, caplog):
    from transferlab.lightning.loggers import SafeMLFlowLogger

    uri = f"sqlite:///{tmp_path / 'nested' / 'mlflow.db'}"  # the folder does not exist yet
    logger = SafeMLFlowLogger(experiment_name=None, default_experiment_name="limits", tracking_uri=uri)
    logger.log_hyperparams({"long": "x" * 7000, "odd:key@v2": 1, "/lead//slash": 2, "lr": 0.1})
    run_id = logger.run_id
    logger.finalize("success")
    params = mlflow.MlflowClient(uri).get_run(run_id).data.params
    assert len(params["long"]) == 6000  # MLflow's value limit; the rest is cut
    assert params["odd_key_v2"] == "1" and params["lead/slash"] == "2"

    resumed = SafeMLFlowLogger(experiment_name="limits", tracking_uri=uri, run_id=run_id)
    with caplog.at_level(logging.WARNING, logger="transferlab.lightning.loggers"):
        resumed.log_hyperparams({"lr": 0.2, "resume": "/some/run"})  # MLflow refuses to change a logged param
    assert "keeps the first value of params it already has: lr" in caplog.text
    run = mlflow.MlflowClient(uri).get_run(run_id)
    assert run.data.params["lr"] == "0.1" and run.data.params["resume"] == "/some/run"
    assert run.info.status == "RUNNING"  # reopened

    unknown = SafeMLFlowLogger(experiment_name="limits", tracking_uri=uri, run_id="0" * 32)
    assert unknown.run_id not in (None, "0" * 32)  # a run this store does not know: a new run, not a crash


def test_store_that_cannot_start_is_one_warning_and_training_goes_on(tiny_cfg):
    cfg = tiny_cfg("logger=mlflow", "strategy=feature_extraction", "logger.mlflow.tracking_uri=nosuchscheme://x")
    with pytest.warns(UserWarning, match="Logger 'mlflow' failed to start"):
        train(cfg)
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["status"] == "ok"


def test_mlflow_failing_mid_run_is_one_warning_and_training_goes_on(tiny_cfg, monkeypatch, caplog):
    def outage(*args, **kwargs):
        raise ConnectionError("simulated MLflow outage")

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", outage)
    cfg = tiny_cfg("logger=mlflow", "strategy=feature_extraction")
    with caplog.at_level(logging.WARNING, logger="transferlab.lightning.loggers"):
        train(cfg)
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["status"] == "ok"
    failures = [r for r in caplog.records if "MLflow failed" in r.getMessage()]
    assert len(failures) == 1 and "simulated MLflow outage" in failures[0].getMessage()
