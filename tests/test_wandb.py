"""W&B runs offline without a key or network, groups sweeps, and never takes a run down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transferlab.train import train


@pytest.fixture
def no_wandb_key(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials either
    yield
    import wandb

    if wandb.run is not None:
        wandb.finish()


def test_offline_run_is_written_and_syncable(tiny_cfg, no_wandb_key):
    cfg = tiny_cfg("logger=wandb", "strategy=feature_extraction")
    train(cfg)
    runs = list(Path(cfg.paths.log_dir, "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb")), "the offline run file that `wandb sync` uploads"
    out = Path(cfg.paths.output_dir)
    assert json.loads((out / "metrics.json").read_text())["status"] == "ok"
    run_id = (out / "wandb_run_id.txt").read_text().strip()
    assert run_id and run_id in runs[0].name
    # the key never lands in the saved config
    assert "WANDB_API_KEY" not in (out / "config_tree.log").read_text()


def test_wandb_failure_falls_back_and_training_goes_on(tiny_cfg, no_wandb_key, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("simulated W&B outage")

    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = tiny_cfg("logger=wandb", "strategy=feature_extraction")
    with pytest.warns(UserWarning, match="simulated W&B outage"):
        train(cfg)
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_sweep_report_run_lands_in_the_jobs_group(tmp_path, no_wandb_key):
    """Every offline run file of a 2-job sweep, the report run's included, carries the same group."""
    import os
    import subprocess
    import sys

    from tests.helpers import TINY

    sweep = tmp_path / "sweep"
    # A fresh process, as a user's: no W&B state from earlier in-process tests (e.g. the address of this pytest
    # process's W&B service, which the sweep's runs would otherwise report to).
    env = {k: v for k, v in os.environ.items() if not k.upper().lstrip("_").startswith("WANDB")}
    env.update(TRANSFERLAB_LOG_DIR=str(tmp_path / "logs"), TRANSFERLAB_CACHE_DIR=str(tmp_path / "c"))
    overrides = [o for o in TINY if not o.startswith("logger")]
    proc = subprocess.run(
        [sys.executable, "-m", "transferlab.train", "-m", *overrides, "logger=wandb", "data.train_size=100",
         "strategy=feature_extraction", "seed=0,1", "experiment_name=wbgroup", f"hydra.sweep.dir={sweep}"],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    group = f"wbgroup-{sweep.name}".encode()
    files = sorted((tmp_path / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 3, files  # two jobs and the report
    assert sum(b"report-sweep" in f.read_bytes() for f in files) == 1
    for f in files:  # the run record (protobuf) holds the group as a plain string
        assert group in f.read_bytes(), f


def test_offline_says_so_in_one_line_and_the_config_tells_the_truth(tiny_cfg, no_wandb_key, caplog, monkeypatch):
    import logging

    import wandb

    wandb_warnings = []
    monkeypatch.setattr(wandb, "termwarn", lambda msg, *a, **k: wandb_warnings.append(str(msg)))
    cfg = tiny_cfg("logger=wandb", "strategy=feature_extraction")
    with caplog.at_level(logging.WARNING, logger="transferlab.lightning.loggers"):
        train(cfg)
    ours = [r.getMessage() for r in caplog.records if r.name == "transferlab.lightning.loggers"]
    lines = [m for m in ours if "offline" in m]  # (the tmp path itself holds "offline": match the logger's records)
    assert len(lines) == 1
    assert not wandb_warnings  # e.g. "git root … does not exist" (no log dir yet) or "anonymous has no effect"
    run = next(Path(cfg.paths.log_dir, "wandb").glob("offline-run-*"))
    assert str(run) in lines[0] and f"`wandb sync {run}`" in lines[0]
    tree = (Path(cfg.paths.output_dir) / "config_tree.log").read_text()
    assert "offline: true" in tree and "offline: false" not in tree
