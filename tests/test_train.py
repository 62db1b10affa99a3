"""The train entry point end to end on tiny settings: outputs, checkpoints, eval and export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers import read_metrics
from transferlab.train import train

KEYS = [
    "train/loss", "val/loss", "val/acc", "test/acc", "test/f1_macro", "params/trainable", "params/total",
    "params/trainable_pct", "time/fit_s", "throughput/train_samples_per_s", "memory/peak_mb", "memory/fit_increase_mb",
    "checkpoint/size_mb", "time/run_s", "time/data_setup_s", "optim/lr_scale",
]  # fmt: skip


@pytest.mark.parametrize("strategy", ["feature_extraction", "fine_tuning", "lora", "lp_ft"])
def test_every_strategy_trains_and_writesread_metrics(tiny_cfg, strategy):
    cfg = tiny_cfg(f"strategy={strategy}", "trainer.max_epochs=2")
    value = train(cfg)
    m = read_metrics(cfg)
    assert m["status"] == "ok" and value == pytest.approx(m["val/acc"])
    for key in KEYS:
        assert key in m and m[key] is not None and not (isinstance(m[key], float) and math.isnan(m[key])), key
    assert 0 < m["params/trainable"] <= m["params/total"]
    out = Path(cfg.paths.output_dir)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "run_info.json").is_file() and (out / "config_tree.log").is_file()
    if strategy == "lora":
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
        assert (out / "adapter" / "adapter_config.json").is_file()


def test_feature_cache_is_reused_and_rebuilt_when_corrupt(tiny_cfg, caplog):
    cfg = tiny_cfg("strategy=feature_extraction")
    train(cfg)
    first = read_metrics(cfg)
    assert first["time/feature_extraction_s"] > 0
    files = sorted(Path(cfg.paths.cache_dir, "features").glob("*.safetensors"))
    assert len(files) == 3
    train(cfg)  # warm: no extraction at all
    assert "time/feature_extraction_s" not in read_metrics(cfg)
    assert read_metrics(cfg)["test/acc"] == pytest.approx(first["test/acc"])
    assert files[0].name.startswith("digits-test-")
    files[0].write_bytes(files[0].read_bytes()[:100])  # corrupt the test split's file
    train(cfg)
    assert "corrupt" in caplog.text
    rebuilt = read_metrics(cfg)
    assert rebuilt["time/test_feature_extraction_s"] > 0  # rebuilt, and not counted as fit time:
    assert "time/feature_extraction_s" not in rebuilt  # train and val came from the cache


def test_feature_cache_key_changes_with_image_size(tiny_cfg):
    train(tiny_cfg("strategy=feature_extraction"))
    cfg = tiny_cfg("strategy=feature_extraction", "data.image_size=40")
    train(cfg)
    assert len(list(Path(cfg.paths.cache_dir, "features").glob("*.safetensors"))) == 6


def test_lora_checkpoint_holds_only_adapters_and_head(tiny_cfg):
    cfg = tiny_cfg(
        "strategy=lora",
        "model.weights=bundled",
        "model.name=tf_efficientnet_lite0",
        "data.train_size=40",
        "data.image_size=32",
    )
    train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    net_keys = [k for k in ckpt["state_dict"] if k.startswith("net.")]
    params = [k for k in net_keys if "running_" not in k and "num_batches" not in k]
    assert params and all("lora_" in k or "modules_to_save" in k for k in params)
    assert ckpt["transferlab"]["strategy"] == "Lora"


def test_eval_reproduces_test_accuracy(tiny_cfg, tmp_path):
    from tests.helpers import compose_config
    from transferlab.eval import evaluate

    cfg = tiny_cfg("strategy=fine_tuning")
    train(cfg)
    trained = read_metrics(cfg)
    best = next(Path(cfg.paths.output_dir, "checkpoints").glob("best-*.ckpt"))
    eval_cfg = compose_config(tmp_path / "eval", [f"ckpt_path={best}", "trainer=cpu"], config_name="eval")
    evaluate(eval_cfg)
    evaluated = json.loads(Path(eval_cfg.paths.output_dir, "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-3)
    # both write per-example predictions; eval's are the training run's own (same best checkpoint)
    from transferlab.predictions import load_predictions

    at_train, at_eval = load_predictions(cfg.paths.output_dir), load_predictions(eval_cfg.paths.output_dir)
    assert (at_train["pred"] == at_train["target"]).mean() == pytest.approx(trained["test/acc"], abs=1e-6)
    assert (at_eval["pred"] == at_train["pred"]).all() and (at_eval["target"] == at_train["target"]).all()


def test_lora_export_merges_and_loads_as_plain_timm(tiny_cfg, tmp_path):
    import timm
    from safetensors.torch import load_file

    from tests.helpers import compose_config
    from transferlab.checkpoints import read_checkpoint, rebuild, run_config
    from transferlab.export import export

    cfg = tiny_cfg("strategy=lora", "trainer.max_epochs=2", "strategy.lr=0.05")
    train(cfg)
    last = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    export(compose_config(tmp_path / "export", [f"ckpt_path={last}"], config_name="export"))
    state = load_file(str(Path(cfg.paths.output_dir, "export", "model.safetensors")))
    assert not any("lora" in k for k in state)
    plain = timm.create_model("test_efficientnet", num_classes=10).eval()
    plain.load_state_dict(state)  # strict: a plain timm model, no PEFT needed

    checkpoint = read_checkpoint(last)
    adapted, datamodule = rebuild(checkpoint, run_config(checkpoint))
    adapted.eval()
    assert any(p.abs().sum() > 0 for n, p in adapted.net.named_parameters() if "lora_B" in n)  # adapters did train
    images = datamodule.image_data
    images.setup()
    x = images.preprocess(next(iter(images.test_dataloader()))[0])
    with torch.no_grad():
        assert (adapted(x) - plain(x)).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    "overrides",
    [
        ("strategy=feature_extraction", "strategy.cache_features=false"),
        ("strategy=lora",),
        ("strategy=fine_tuning", "strategy.unfreeze=last_n_blocks", "strategy.n_blocks=1"),
    ],
)
def test_frozen_batchnorm_keeps_pretrained_stats_through_fit(tiny_cfg, overrides):
    # Lightning does not call .train() on the module, so this must hold through a real fit, not only module.train().
    from transferlab.build import build_datamodule, build_module, build_trainer

    cfg = tiny_cfg(*overrides, "train=true", "test=false")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.num_classes)
    frozen = {
        n: m.running_mean.clone()
        for n, m in module.net.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters(recurse=False))
    }
    trained = [n for n, m in module.net.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and n not in frozen]
    assert frozen
    build_trainer(cfg, with_loggers=False).fit(module, datamodule=datamodule)
    bns = dict(module.net.named_modules())
    assert all(torch.equal(stats, bns[n].running_mean) for n, stats in frozen.items())
    if "strategy=fine_tuning" in overrides:  # the unfrozen top block's BatchNorm does adapt
        assert any(not torch.equal(bns[n].running_mean, torch.zeros_like(bns[n].running_mean)) for n in trained)


def test_checkpoints_in_torchs_pre_zip_format_still_read(tmp_path):
    """Checkpoints are read memory-mapped (Lightning reads them again), which needs torch's zip format: an older
    file falls back to a plain read instead of being called corrupt."""
    import torch

    from tests.helpers import ROOT
    from transferlab.checkpoints import read_checkpoint

    mapped = read_checkpoint(ROOT / "tests" / "fixtures" / "lora_v0" / "best.ckpt")
    torch.save(mapped, tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    plain = read_checkpoint(tmp_path / "old.ckpt")
    assert plain["transferlab"] == mapped["transferlab"] and plain["state_dict"].keys() == mapped["state_dict"].keys()
    assert all(torch.equal(plain["state_dict"][k], v) for k, v in mapped["state_dict"].items())
