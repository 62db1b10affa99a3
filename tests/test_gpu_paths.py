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
    a = build_network("test_efficientnet", 4, channels_last=False).net.eval()
    b = build_network("test_efficientnet", 4, channels_last=True).net.eval()
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
def test_gpu_trainer_configs_build_bf16_and_ddp_trainers(tmp_path, trainer, monkeypatch):
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
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # Lightning sets this process-wide flag
    built = build_trainer(on_cpu, with_loggers=False)
    assert isinstance(built.precision_plugin, MixedPrecision) and built.precision_plugin.precision == "bf16-mixed"
    if trainer == "ddp":
        assert isinstance(built.strategy, DDPStrategy) and built.num_devices == 2
        assert isinstance(built.strategy._layer_sync, TorchSyncBatchNorm)  # BatchNorm stats over the global batch
    else:
        assert isinstance(built.strategy, SingleDeviceStrategy) and built.num_devices == 1
    assert torch.backends.cudnn.benchmark is True  # one kernel search per input shape (monkeypatch restores it)


@pytest.mark.parametrize(("trainer", "batch", "eval_batch", "rule"), [("gpu", 256, 1024, "sqrt"), ("ddp", 256, 1024, "sqrt"),
                                                                    ("cpu", 64, 256, "none"), ("default", 64, 256, "none")])  # fmt: skip
def test_gpu_presets_size_batches_and_scale_lrs_and_cpu_presets_keep_them(tmp_path, trainer, batch, eval_batch, rule):
    cfg = compose_config(tmp_path, [f"trainer={trainer}"])
    assert (cfg.data.batch_size, cfg.data.eval_batch_size, cfg.trainer.optim.lr_scaling) == (batch, eval_batch, rule)
    assert cfg.data.pin_memory is (rule == "sqrt")  # page-locked batches on the GPU presets only
    assert compose_config(tmp_path, [f"trainer={trainer}", "data.batch_size=32"]).data.batch_size == 32  # CLI wins


def test_lr_rule_follows_the_global_batch():
    from transferlab.strategies.optimizer_preset import OptimizerPreset

    assert OptimizerPreset("sqrt", batch_size=256).lr_factor() == 2.0
    assert OptimizerPreset("sqrt", batch_size=256).lr_factor(processes=4) == 4.0  # DDP: per-process batch x 4
    assert OptimizerPreset("linear", batch_size=128).lr_factor(accumulate=2) == 4.0
    assert OptimizerPreset("none", batch_size=1024).lr_factor(processes=8) == 1.0


def test_gpu_preset_run_trains_at_scaled_lrs_and_records_the_factor(tiny_cfg):
    # trainer=gpu on the CPU, with TINY's batch 32: factor sqrt(32 / 64); the optimizer is the plain AdamW here.
    cfg = tiny_cfg("trainer=gpu", "trainer.accelerator=cpu", "trainer.precision=32-true", "strategy=fine_tuning",
                   "strategy.scheduler=constant", "+trainer.max_steps=2")  # fmt: skip
    lrs = []

    class Spy(torch.optim.AdamW):
        def __init__(self, groups, **kwargs):
            lrs.extend(g["lr"] for g in groups)
            assert "fused" not in kwargs  # fused kernels only for CUDA parameters
            super().__init__(groups, **kwargs)

    from transferlab.strategies.base import TransferModule

    original = TransferModule.configure_optimizers

    def spied(self):
        self.optimizer_factory = Spy
        self._default_optimizer = True
        return original(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TransferModule, "configure_optimizers", spied)
        train(cfg)
    m = read_metrics(cfg)
    assert m["optim/lr_scaling"] == "sqrt" and m["optim/lr_scale"] == pytest.approx(0.5**0.5)
    assert max(lrs) == pytest.approx(cfg.strategy.lr * 0.5**0.5)


def test_unknown_lr_rule_is_one_clear_error(tiny_cfg):
    from transferlab.utils.errors import TransferlabError

    with pytest.raises(TransferlabError, match="trainer.optim.lr_scaling='cube' is unknown. Use none, sqrt, linear"):
        train.__wrapped__(tiny_cfg("trainer.optim.lr_scaling=cube"))


def test_run_stats_times_cuda_batches_with_events_read_once_per_epoch(monkeypatch):
    # A fake CUDA: events that record and count how often the host waits on them.
    from types import SimpleNamespace

    from transferlab.callbacks.run_stats import RunStats

    waits = []

    class FakeEvent:
        def __init__(self, enable_timing=False):
            self.t = None

        def record(self):
            self.t = len(waits) + 0.0

        def synchronize(self):
            waits.append(self)

        def elapsed_time(self, end):
            return 5.0  # milliseconds

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    stats, trainer = RunStats(), SimpleNamespace(world_size=1)
    stats._cuda, stats._train_time, stats._samples, stats._events = True, 0.0, 0, []
    batch = (torch.zeros(4, 3), torch.zeros(4))
    for epoch in range(2):
        for i in range(10):
            stats.on_train_batch_start(trainer, None, batch, i)
            stats.on_train_batch_end(trainer, None, None, batch, i)
        stats.on_train_epoch_end(trainer, None)
        assert len(waits) == epoch + 1  # one wait per epoch, none per batch
    assert stats._train_time == pytest.approx(20 * 0.005) and stats._samples == 80
