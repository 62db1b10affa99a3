"""GPU code paths exercised as far as a CPU allows: bf16 autocast, channels_last, torch.compile, the GPU configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_config
from transferlab.train import train


def _metrics(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def test_bf16_mixed_precision_trains(tiny_cfg):
    cfg = tiny_cfg("strategy=lora", "trainer.precision=bf16-mixed", "debug=fdr")
    train(cfg)
    assert _metrics(cfg)["status"] == "ok"


def test_channels_last_network_gives_same_outputs():
    from transferlab.models.backbone import build_network

    torch.manual_seed(0)
    a = build_network("test_efficientnet", 4, channels_last=False).eval()
    b = build_network("test_efficientnet", 4, channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert b.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(a(x), b(x.contiguous(memory_format=torch.channels_last)), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_compiled_network_trains(tiny_cfg):
    cfg = tiny_cfg("strategy=fine_tuning", "model.compile=true", "debug=fdr")
    train(cfg)
    assert _metrics(cfg)["status"] == "ok"


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainer_configs_compose_with_bf16(tmp_path, trainer):
    cfg = compose_config(tmp_path, [f"trainer={trainer}"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    if trainer == "ddp":
        assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm is True
