"""Resume and determinism: an interrupted fit continues to the same result as an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning import Callback

from tests.conftest import compose_config
from transferlab.train import train

DETERMINISTIC = ["trainer.deterministic=true", "trainer.max_epochs=3"]


class _Crash(Callback):
    """Simulates a kill: raises in the middle of an epoch."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise KeyboardInterrupt("simulated kill")


def _metrics(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


STRATEGIES = {
    "feature_extraction": ["strategy=feature_extraction"],
    "fine_tuning_gradual": [
        "strategy=fine_tuning",
        "strategy.unfreeze=none",
        "+strategy.unfreeze_schedule={1: last_n_blocks, 2: all}",
    ],
    "lora": ["strategy=lora"],
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_resume_after_kill_matches_uninterrupted(tmp_path, name, monkeypatch):
    from tests.conftest import TINY

    base = [*TINY, *DETERMINISTIC, *STRATEGIES[name], "logger=csv"]
    full = compose_config(tmp_path / "full", base)
    train(full)
    expected = _metrics(full)

    crashed = compose_config(tmp_path / "crash", base)
    import transferlab.build as build

    real = build.instantiate_callbacks
    monkeypatch.setattr(build, "instantiate_callbacks", lambda c: [*real(c), _Crash(epoch=1, batch=3)])
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(crashed)
    monkeypatch.setattr(build, "instantiate_callbacks", real)
    run_dir = Path(crashed.paths.output_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "metrics.json").exists()

    resumed = compose_config(tmp_path / "resumed", [*base, f"resume={run_dir}"])
    train(resumed)
    got = json.loads((run_dir / "metrics.json").read_text())  # written into the resumed run's own folder
    for key in ("test/acc", "test/loss", "val/acc", "val/loss", "params/trainable"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    assert rows and "epoch" in rows[0]


def test_same_seed_same_metrics(tmp_path):
    from tests.conftest import TINY

    runs = []
    for i in range(2):
        cfg = compose_config(
            tmp_path / str(i), [*TINY, "strategy=fine_tuning", "trainer.deterministic=true", "trainer.max_epochs=2"]
        )
        train(cfg)
        m = _metrics(cfg)
        runs.append({k: v for k, v in m.items() if k.startswith(("train/", "val/", "test/", "params/"))})
    assert runs[0] == runs[1]
    info = json.loads((Path(cfg.paths.output_dir) / "run_info.json").read_text())
    assert info["seed"] == 0 and info["packages"]["torch"] and "git_commit" in info
