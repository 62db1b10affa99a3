"""The benchmarks package imports, and its cheapest benchmark runs on tiny settings and returns its JSON keys.

No timing assertions: benchmark numbers depend on the machine and its load; only the shape is checked.
"""

from __future__ import annotations

import json
import math

import pytest

import benchmarks
from benchmarks import common
from tests.helpers import TINY

# The tiny mechanics setting (random tiny EfficientNet, digits at 32px), with the benchmark's own trainer.
TINY_BENCH = [o for o in TINY if not o.startswith(("trainer", "callbacks"))]


def test_every_benchmark_module_loads_and_has_a_run_function():
    for name in benchmarks.NAMES:
        module = benchmarks.load(name)
        assert name == module.NAME and callable(module.run)
    with pytest.raises(KeyError):
        benchmarks.load("nope")


def test_machine_record_names_cpu_cores_and_torch():
    info = common.machine()
    for key in ("cpu_model", "cpu_cores", "torch", "torch_threads", "cuda_device", "line"):
        assert key in info
    assert info["cpu_cores"] >= 1 and info["torch_threads"] >= 1
    json.dumps(info)  # JSON-serialisable as written to results/latest.json


def test_later_overrides_replace_earlier_ones_for_the_same_key():
    merged = common.merge_overrides(["data=fashion_mnist", "seed=0"], ["data=digits", "+trainer.max_steps=3"])
    assert merged == ["data=digits", "seed=0", "+trainer.max_steps=3"]


def test_data_pipeline_returns_its_json_keys_on_tiny_input():
    result = benchmarks.load("data_pipeline").run(
        steps=1, loader_batches=2, rounds=1, train_size=300, overrides=TINY_BENCH
    )
    assert set(result) >= {"loader_vs_train_ratio", "loader_batches_per_s", "train_steps_per_s", "settings", "targets"}
    ratio = result["loader_vs_train_ratio"]
    assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
    assert result["targets"]["loader_vs_train_ratio"]["target"] == ">= 5.0"
    json.dumps(result)


def test_feature_cache_compares_auto_with_fp32_and_takes_the_fastest_bare_pass(monkeypatch):
    from transferlab.utils import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: True)  # bf16 contenders on any CPU
    result = benchmarks.load("feature_cache").run(train_size=300, epochs=1, overrides=[*TINY_BENCH, "data.val_size=50"])
    assert result["extract_precision"]["auto_resolves_to"] == "bf16"
    seconds = result["seconds"]
    assert {"cold_fit", "cold_fp32_fit", "bare_forward_32", "bare_forward_bf16"} <= set(seconds)
    fastest = min(seconds["bare_forward_32"], seconds["bare_forward_bf16"])
    assert seconds["forward_limit"] == pytest.approx(fastest + seconds["cold_head_training"])
    assert set(result["targets"]) == {"warm_speedup_vs_in_loop", "cold_vs_forward_limit", "auto_speedup_vs_fp32"}
    json.dumps(result)


def test_feature_cache_can_leave_out_its_slow_contenders():
    result = benchmarks.load("feature_cache").run(
        train_size=300, epochs=1, overrides=[*TINY_BENCH, "data.val_size=50"], skip=("in_loop", "cold_fp32")
    )
    assert set(result["targets"]) == {"cold_vs_forward_limit"} and "in_loop" not in result["runs"]
    json.dumps(result)


@pytest.mark.slow  # writes 100 PNGs from the real Fashion-MNIST files
def test_image_folder_counts_decodes_per_phase_on_tiny_input():
    result = benchmarks.load("image_folder").run(images=100, epochs=1, rounds=1)
    assert result["decodes"]["first"]["setup"] == 100 and result["decodes"]["second"]["setup"] == 0
    assert result["decodes_after_first_epoch"] == 0 and result["decodes"]["on_demand"]["per_epoch"][0] > 0
    assert set(result["targets"]) == {"setup_speedup", "decodes_after_first_epoch"}
    json.dumps(result)
