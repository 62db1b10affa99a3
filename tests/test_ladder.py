"""The backbone-ladder report part: transfer accuracy against published ImageNet top-1, on synthetic sweeps."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr

from transferlab.reporting.ladder import IMAGENET_TOP1, critical_r, ladder_section, write_ladder_plot

MODELS = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
ARMS = [("feature_extraction", "feature_extraction"), ("fine_tuning (all)", "fine_tuning"), ("lora r=8 a=16", "lora")]
# test accuracy per (arm, model), two seeds each: seed 0 gets acc - d, seed 1 acc + d (mean = acc)
ACC = {
    "feature_extraction": [0.70, 0.74, 0.73],
    "fine_tuning (all)": [0.86, 0.88, 0.91],
    "lora r=8 a=16": [0.84, 0.83, 0.85],
}


def _sweep(models=MODELS, seeds=(0, 1), d=0.01) -> pd.DataFrame:
    rows = []
    for label, strategy in ARMS:
        for model, acc in zip(models, ACC[label], strict=False):
            for seed in seeds:
                shift = (-d if seed == 0 else d) if len(seeds) > 1 else 0.0
                rows.append({"model": model, "label": label, "strategy": strategy, "test/acc": acc + shift,
                             "status": "ok", "seed": seed})  # fmt: skip
    failed = {"model": MODELS[0], "label": "lora r=8 a=16", "strategy": "lora", "status": "failed", "seed": 2}
    rows.append({**failed, "test/acc": float("nan")})  # a failed job is left out
    return pd.DataFrame(rows)


def test_published_top1_table_is_ordered_and_sourced():
    top1 = [IMAGENET_TOP1[m].top1 for m in MODELS]
    assert top1 == [74.846, 76.674, 77.470] and top1 == sorted(top1)
    for m in MODELS:
        assert "results/results-imagenet.csv" in IMAGENET_TOP1[m].source and m in IMAGENET_TOP1[m].source
    assert [IMAGENET_TOP1[m].release for m in MODELS] == [75.1, 76.7, 77.6]


def test_section_reports_scipy_pearson_per_arm():
    text = ladder_section(_sweep())
    top1 = [IMAGENET_TOP1[m].top1 for m in MODELS]
    for label, acc in ACC.items():
        res = pearsonr(top1, acc)
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} | 3 |"))
        assert f"| {res.statistic:+.3f} | {res.pvalue:.3f} |" in row, row
    # the model x strategy table: mean ± std over the two seeds (std of acc ± 0.01 is 0.01 * sqrt(2))
    lite1 = next(line for line in text.splitlines() if line.startswith("| tf_efficientnet_lite1 | 76.67 |"))
    assert "0.8800 ± 0.0141" in lite1
    # the caveats and every source
    assert "Kornblith, Shlens & Le" in text and "r = 0.99" in text and "r = 0.96" in text
    assert f"{critical_r(3):.3f}" in text and "Three points" in text
    assert text.count("huggingface/pytorch-image-models") == 3 and "tensorflow/tpu" in text


def test_critical_r_matches_scipy_p_value():
    r = critical_r(3)
    assert r == pytest.approx(0.997, abs=5e-4)
    # three points with exactly this r (x plus an orthogonal residual of the same length) have p = 0.05
    x = np.array([-1.0, 0.0, 1.0])
    residual = np.array([1.0, -2.0, 1.0]) / np.sqrt(3)
    res = pearsonr(x, r * x + np.sqrt(1 - r**2) * residual)
    assert res.statistic == pytest.approx(r, abs=1e-9) and res.pvalue == pytest.approx(0.05, abs=1e-6)


def test_plot_is_written(tmp_path):
    path = write_ladder_plot(_sweep(seeds=(0,)), tmp_path / "plots")
    assert path is not None and path.is_file() and path.stat().st_size > 5000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_single_model_or_unknown_model_is_no_ladder(tmp_path):
    single = _sweep(models=MODELS[:1])
    assert write_ladder_plot(single, tmp_path) is None and ladder_section(single) == ""
    assert not list(tmp_path.iterdir())
    unknown = _sweep(models=[MODELS[0], "resnet18", MODELS[2]])  # no published top-1 in the table
    assert write_ladder_plot(unknown, tmp_path) is None and ladder_section(unknown) == ""
    no_model_column = _sweep().drop(columns="model")  # a sweep from before metrics.json had "model"
    assert write_ladder_plot(no_model_column, tmp_path) is None and ladder_section(no_model_column) == ""


def test_two_models_say_r_is_meaningless(tmp_path):
    two = _sweep(models=MODELS[:2])
    assert write_ladder_plot(two, tmp_path) is not None
    text = ladder_section(two)
    assert re.search(r"\| feature_extraction \| 2 \| \+1\.000 \|", text), text
    assert "±1 by construction" in text
