"""The crossover estimator: N* of two accuracy-vs-data curves, interpolated on log N, with a bootstrap interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transferlab.reporting.crossover import crossing_size, crossover, crossover_sentence

SIZES = [50, 200, 1000, 5000, 54000]


def _curve(acc_at, n_test=2000, seeds=(0, 1, 2), noise=0.01, rng=None):
    """Synthetic runs: per size and seed, a correctness array whose mean is acc_at(N) plus seed noise."""
    rng = rng or np.random.default_rng(0)
    return {
        n: {s: rng.random(n_test) < acc_at(n) + rng.normal(0, noise) for s in seeds}
        for n in SIZES
    }  # fmt: skip


def test_crossing_size_interpolates_on_log_n():
    # +0.1 at N=100, -0.1 at N=10,000: the crossing is half-way on log N, at N=1,000
    assert crossing_size([100, 10_000], [0.1, -0.1]) == pytest.approx(1000)
    assert crossing_size([100, 1000, 10_000], [0.2, 0.1, 0.05]) is None
    assert crossing_size([10_000, 100], [-0.1, 0.1]) == pytest.approx(1000)  # sizes in any order


def test_finds_a_known_crossover_and_its_interval_covers_it():
    # Linear in log N: a (feature extraction) starts higher and flattens, b (fine-tuning) climbs; they meet at 1,500.
    true_n = 1500.0
    rng = np.random.default_rng(1)
    fe = _curve(lambda n: 0.70 + 0.02 * math.log(n / true_n), rng=rng)
    ft = _curve(lambda n: 0.70 + 0.06 * math.log(n / true_n), rng=rng)
    result = crossover(fe, ft, n_resamples=300)
    assert result["n_star"] == pytest.approx(true_n, rel=0.35)
    assert result["low"] < true_n < result["high"]
    assert result["a_better_below"] is True and result["resampled"] == "seeds and test examples"
    sentence = crossover_sentence("feature extraction", "fine-tuning", result)
    assert sentence.startswith("feature extraction is better than fine-tuning below N* = ")


def test_no_crossing_in_the_range_is_said():
    rng = np.random.default_rng(2)
    high = _curve(lambda n: 0.9, rng=rng, noise=0.0)
    low = _curve(lambda n: 0.6, rng=rng, noise=0.0)
    result = crossover(low, high, n_resamples=100)
    assert result["n_star"] is None and result["share_crossing"] == 0.0
    assert crossover_sentence("lora", "fine-tuning", result) == (
        "fine-tuning is better than lora at every size from 50 to 54,000 images: no crossing in the range."
    )


def test_accuracies_without_predictions_bootstrap_over_seeds():
    a = {n: {s: 0.8 - 0.01 * i + 0.001 * s for s in range(3)} for i, n in enumerate(SIZES)}
    b = {n: {s: 0.76 + 0.01 * i for s in range(3)} for i, n in enumerate(SIZES)}
    result = crossover(a, b, n_resamples=100)
    # mean differences +0.001 at 1,000 and -0.019 at 5,000: 1/20 of the way on log N
    assert result["resampled"] == "seeds" and result["n_star"] == pytest.approx(1000 * 5 ** (1 / 20))
    with pytest.raises(ValueError, match="at least 2 training-set sizes"):
        crossover({50: {0: 0.5}}, {50: {0: 0.6}})


def test_no_crossing_says_how_often_the_resamples_cross():
    # Equal means at 1,000 images (the seeds disagree there) and 0.2 apart elsewhere: the means never cross, but
    # resamples whose seeds favour b at 1,000 do.
    a = {n: {s: 0.8 + (0.0 if n == 1000 else 0.1) + (0.01 * s if n == 1000 else 0.0) for s in range(3)} for n in SIZES}
    b = {
        n: {s: 0.8 - (0.0 if n == 1000 else 0.1) + (0.01 * (2 - s) if n == 1000 else 0.0) for s in range(3)}
        for n in SIZES
    }
    result = crossover(a, b, n_resamples=200)
    assert result["n_star"] is None and 0.0 < result["share_crossing"] < 1.0
    sentence = crossover_sentence("a", "b", result)
    assert sentence.startswith("a is better than b at every size from 50 to 54,000 images: no crossing in the range (")
    assert sentence.endswith(f"{result['share_crossing']:.0%} of resamples do cross).")
