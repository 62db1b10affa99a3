"""Feature extraction's frozen pass in bf16 where the device runs it natively: choice, cache key, parity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import read_metrics
from transferlab.train import train
from transferlab.utils import precision
from transferlab.utils.errors import TransferlabError

CPU = torch.device("cpu")


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "32")])
def test_auto_follows_the_capability_check(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    assert precision.resolve("auto", CPU) == expected
    assert precision.resolve(32, CPU) == "32"  # YAML's int form
    assert precision.resolve("bf16", CPU) == "bf16"  # an explicit choice is obeyed either way


def test_cpu_without_native_bf16_keeps_fp32(monkeypatch):
    # The capability check itself, with torch's CPU probes forced off (an older CPU or torch build).
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert precision.native_bf16(CPU) is False
    assert precision.resolve("auto", CPU) == "32"


def test_unknown_precision_is_one_clear_error(tiny_cfg):
    with pytest.raises(TransferlabError, match=r"strategy.extract_precision='fp8' is unknown. Use auto, 32 or bf16"):
        train.__wrapped__(tiny_cfg("strategy=feature_extraction", "strategy.extract_precision=fp8"))


def test_cache_key_holds_the_precision_and_metrics_record_it(tiny_cfg):
    fp32 = tiny_cfg("strategy=feature_extraction", "strategy.extract_precision=32")
    train(fp32)
    assert read_metrics(fp32)["extract_precision"] == "32"
    bf16 = tiny_cfg("strategy=feature_extraction", "strategy.extract_precision=bf16")
    train(bf16)  # same data and model: an fp32 cache must not serve it
    m = read_metrics(bf16)
    assert m["extract_precision"] == "bf16" and m["time/feature_extraction_s"] > 0
    assert len(list(Path(bf16.paths.cache_dir, "features").glob("*.safetensors"))) == 6
    train(fp32)  # and the fp32 cache is still there for fp32
    assert "time/feature_extraction_s" not in read_metrics(fp32)


def test_bf16_features_are_stored_as_fp32_and_close_to_fp32(tiny_cfg):
    from safetensors import safe_open

    for p in ("32", "bf16"):
        cfg = tiny_cfg("strategy=feature_extraction", f"strategy.extract_precision={p}")
        train(cfg)
    runs = {}
    for path in Path(cfg.paths.cache_dir, "features").glob("*-train-*.safetensors"):
        with safe_open(str(path), "pt") as f:
            key = json.loads(f.metadata()["key"])
            if key["n"] == 300:  # the training subset (validation is cached from the train split too)
                runs[key["precision"]] = f.get_tensor("features")
    assert runs["bf16"].dtype == torch.float32
    assert not torch.equal(runs["bf16"], runs["32"])  # the pass really ran in bf16
    rel = (runs["bf16"] - runs["32"]).norm() / runs["32"].norm()
    assert rel < 0.05, rel


def test_bf16_evaluation_leaves_training_alone_and_keeps_test_accuracy(tiny_cfg):
    runs = {}
    for p in ("32", "bf16"):
        cfg = tiny_cfg("strategy=fine_tuning", f"strategy.eval_precision={p}", "trainer.max_epochs=2")
        train(cfg)
        runs[p] = read_metrics(cfg)
    assert runs["bf16"]["train/loss"] == runs["32"]["train/loss"]  # training steps are untouched
    assert abs(runs["bf16"]["test/acc"] - runs["32"]["test/acc"]) < 0.03
    with pytest.raises(TransferlabError, match="strategy.eval_precision='half' is unknown"):
        train.__wrapped__(tiny_cfg("strategy=lora", "strategy.eval_precision=half"))
