"""GPU code paths exercised as far as a CPU allows: bf16 autocast, channels_last, torch.compile, the GPU configs."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import compose_config, read_metrics
from transferlab.train import train


def test_bf16_mixed_precision_trains(tiny_cfg):
    cfg = tiny_cfg("strategy=lora", "trainer.precision=bf16-mixed", "debug=fdr")
    train(cfg)
    assert read_metrics(cfg)["status"] == "ok"


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
    assert read_metrics(cfg)["status"] == "ok"


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainer_configs_build_bf16_and_ddp_trainers(tmp_path, trainer):
    # The GPU configs built into real Trainers, only the accelerator swapped for the CPU's: what Lightning
    # makes of them (precision plugin, strategy, layer sync) is what a GPU machine gets.
    from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
    from lightning.pytorch.plugins.precision import MixedPrecision
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    from transferlab.build import build_trainer

    cfg = compose_config(tmp_path, [f"trainer={trainer}"])
    assert cfg.trainer.accelerator == "gpu"
    devices = 2 if trainer == "ddp" else 1  # ddp's -1 (all GPUs) means nothing on a CPU
    on_cpu = compose_config(tmp_path, [f"trainer={trainer}", "trainer.accelerator=cpu", f"trainer.devices={devices}"])
    built = build_trainer(on_cpu, with_loggers=False)
    assert isinstance(built.precision_plugin, MixedPrecision) and built.precision_plugin.precision == "bf16-mixed"
    if trainer == "ddp":
        assert isinstance(built.strategy, DDPStrategy) and built.num_devices == 2
        assert isinstance(built.strategy._layer_sync, TorchSyncBatchNorm)  # BatchNorm stats over the global batch
    else:
        assert isinstance(built.strategy, SingleDeviceStrategy) and built.num_devices == 1
