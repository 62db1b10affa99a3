"""What a new user meets in the first hour: thread count on record, one-line warnings, ViTs at any image size."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY, compose_config
from transferlab.build import build_run
from transferlab.train import train
from transferlab.utils.threads import warn_if_overloaded


@pytest.fixture
def keep_threads():
    """Restore torch's thread count: a run's trainer.threads must not leak into other tests."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_are_set_and_recorded(tiny_cfg, keep_threads):
    cfg = tiny_cfg("trainer.threads=1", "data.train_size=60")
    metrics = train(cfg)  # the wrapped task returns the optimized metric; read the files it wrote
    assert metrics is None or isinstance(metrics, float)
    out = Path(cfg.paths.output_dir)
    assert json.loads((out / "metrics.json").read_text())["threads"] == 1
    assert json.loads((out / "run_info.json").read_text())["threads"] == 1
    assert torch.get_num_threads() == 1


def test_eval_applies_its_own_threads_once(tiny_cfg, tmp_path, keep_threads, monkeypatch):
    import transferlab.build
    from transferlab.eval import evaluate

    cfg = tiny_cfg("trainer.threads=1", "data.train_size=60")
    train(cfg)
    applied = []
    apply_threads = transferlab.build.apply_threads
    monkeypatch.setattr(transferlab.build, "apply_threads", lambda n: applied.append(n) or apply_threads(n))
    ckpt = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    evaluate(compose_config(tmp_path / "eval", [f"ckpt_path={ckpt}", "trainer=cpu", "trainer.threads=2"], "eval"))
    assert applied == [2] and torch.get_num_threads() == 2  # the eval machine's value, not the training run's 1


def test_busy_machine_warns_once_naming_the_key(caplog):
    with caplog.at_level(logging.WARNING, logger="transferlab.utils.threads"):
        assert warn_if_overloaded(threads=2, load=3.0, cores=2)
        assert not warn_if_overloaded(threads=2, load=0.1, cores=2)  # idle machine
        assert not warn_if_overloaded(threads=1, load=3.0, cores=2)  # one thread: nothing left to lower
        assert not warn_if_overloaded(threads=4, load=1.0, cores=8)  # room to spare
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "trainer.threads=1" in lines[0] and "OMP_NUM_THREADS" in lines[0] and "load 3.0" in lines[0]


def test_vit_takes_data_image_size(tmp_path):
    """model=vit_tiny at 32 px trains one tiny epoch without +model.img_size (timm gets img_size)."""
    tiny = [o for o in TINY if not o.startswith("model.")]
    cfg = compose_config(
        tmp_path, [*tiny, "model=vit_tiny", "model.weights=none", "data.image_size=32", "data.train_size=40"]
    )
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["model"] == "vit_tiny_patch16_224"


def test_convnet_gets_no_img_size(tiny_cfg):
    run = build_run(tiny_cfg("data.image_size=48"), trainer=False)  # an EfficientNet: img_size would be a TypeError
    assert run.module.net(torch.zeros(1, 3, 48, 48)).shape == (1, 10)


@pytest.mark.parametrize(
    ("strategy", "warns"), [("feature_extraction", True), ("lora", True), ("fine_tuning", False), ("bitfit", False)]
)
def test_random_backbone_warning(tiny_cfg, caplog, strategy, warns):
    with caplog.at_level(logging.WARNING, logger="transferlab.build"):
        build_run(tiny_cfg(f"strategy={strategy}"), trainer=False)
    lines = [r.getMessage() for r in caplog.records if "backbone is random" in r.getMessage()]
    assert len(lines) == (1 if warns else 0)
    if warns:
        assert f"strategy={strategy}" in lines[0] and "model.weights" in lines[0]


def test_lightning_tips_are_not_printed(tiny_cfg, caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from transferlab.build import build_trainer

    # Lightning stops its loggers propagating to the root when it finds no root handler at import, which depends
    # on test order: listen on its rank-zero logger itself.
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            build_trainer(tiny_cfg(), with_loggers=False)  # Lightning's logger connector emits its litlogger tip here
            rank_zero_info("💡 Tip: For seamless cloud uploads and versioning, try installing litmodels")
            rank_zero_info("a real message")
    finally:
        logger.removeHandler(caplog.handler)
    messages = [r.getMessage() for r in caplog.records]
    assert "a real message" in messages
    assert not [m for m in messages if "Tip" in m]


def test_cpu_eta_warns_with_the_keys_that_shrink_it(tiny_cfg, caplog):
    from transferlab.callbacks import CpuEta

    with caplog.at_level(logging.WARNING, logger="transferlab.callbacks.cpu_eta"):
        train(tiny_cfg("callbacks.cpu_eta.steps=2", "callbacks.cpu_eta.limit_s=0"))  # any epoch is "too long"
    lines = [r.getMessage() for r in caplog.records if "first epoch will take" in r.getMessage()]
    assert len(lines) == 1
    assert "data.train_size" in lines[0] and "data.image_size" in lines[0] and "trainer.max_epochs" in lines[0]

    eta = CpuEta(steps=2)
    assert eta.limit_s == 3600  # the default: a one-epoch tiny run stays quiet
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="transferlab.callbacks.cpu_eta"):
        train(tiny_cfg("data.train_size=60"))
    assert not [r for r in caplog.records if "first epoch will take" in r.getMessage()]


def test_report_and_results_record_the_thread_count(tmp_path):
    import pandas as pd

    from tests.test_report_stats import FE, FT, _job
    from transferlab.report import build_report

    sweep = tmp_path / "sweep"
    _job(sweep, 0, FT, 0.9, threads=1)
    _job(sweep, 1, FE, 0.8, threads=1)
    build_report(sweep)
    assert set(pd.read_csv(sweep / "results.csv")["threads"]) == {1}
    assert "torch ran with 1 intra-op CPU thread(s) per job (`trainer.threads`)." in (sweep / "report.md").read_text()
