"""The sweep report's statistics end to end on made-up sweep folders: intervals, paired tests, tie group,
report.tex, old jobs without predictions, mismatched test sets, and which LoRA plot is drawn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import get_class

from tests.test_stats import check_latex
from transferlab.predictions import FILENAME, load_predictions, save_predictions
from transferlab.report import build_report

N_TEST = 2000
TARGET = np.random.default_rng(0).integers(0, 10, N_TEST)


def _job(sweep: Path, i: int, strategy: dict, acc: float, seed: int = 0, predictions: bool = True, **metrics) -> None:
    """A finished job folder as a sweep leaves it, with predictions of accuracy ``acc`` (errors drawn by seed)."""
    job = sweep / str(i)
    (job / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "strategy": strategy, "data": {"train_size": 100}, "model": {"name": "m"}}
    (job / ".hydra" / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    (job / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
    rng = np.random.default_rng(1000 * i + seed)
    wrong = np.zeros(N_TEST, dtype=bool)
    wrong[rng.permutation(N_TEST)[: round((1 - acc) * N_TEST)]] = True  # exactly ``acc``, errors placed by seed
    pred = np.where(wrong, (TARGET + 1) % 10, TARGET)
    cls = get_class(strategy["_target_"])  # training writes the arm's label and family (run_summary.arm_record)
    named = {"label": cls.report_label(strategy), "family": cls.report_family(strategy)}
    metrics = {**named, "status": "ok", "test/acc": float((pred == TARGET).mean()), "params/trainable": 100 * (i + 1),
               "params/trainable_pct": 1.0 + i, "time/fit_s": 10.0 + i, "checkpoint/size_mb": 1.0, **metrics}  # fmt: skip
    (job / "metrics.json").write_text(json.dumps(metrics))
    if predictions:
        save_predictions(job, {"pred": pred, "target": TARGET, "prob": np.full(N_TEST, 0.9)}, test_set="digits")


FT = {"_target_": "transferlab.strategies.FineTuning", "name": "fine_tuning", "unfreeze": "all"}
FE = {"_target_": "transferlab.strategies.FeatureExtraction", "name": "feature_extraction", "cache_features": True}


def _lora(r: int, alpha: int) -> dict:
    return {"_target_": "transferlab.strategies.PEFT", "name": "lora", "r": r, "alpha": alpha}


def _ranking(sweep: Path) -> pd.DataFrame:
    return pd.read_csv(sweep / "ranking.csv").set_index("label")


def test_single_seed_arms_get_bootstrap_intervals_mcnemar_and_a_tie_group(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, FT, 0.90)
    _job(sweep, 1, _lora(8, 16), 0.895)  # within noise of the best on 2,000 examples
    _job(sweep, 2, FE, 0.70, **{"time/feature_extraction_s": 3.0})  # far worse
    build_report(sweep)
    ranking = _ranking(sweep)
    assert list(ranking.index) == ["fine_tuning (all)", "lora r=8 a=16", "feature_extraction"]
    assert ranking["interval"].str.startswith("bootstrap over 2000").all()
    assert (ranking["low"] < ranking["acc"]).all() and (ranking["acc"] < ranking["high"]).all()
    assert ranking.loc["lora r=8 a=16", "tie_group"] and not ranking.loc["feature_extraction", "tie_group"]
    assert ranking.loc["feature_extraction", "p_holm"] < 0.001
    report = (sweep / "report.md").read_text()
    assert "The tie group holds 2 of 3 arms, the best (fine_tuning (all)" in report
    assert "1 is significantly worse: feature_extraction (p<0.001)" in report
    tex = (sweep / "report.tex").read_text()
    check_latex(tex)
    assert r"\textbf{fine\_tuning (all)}" in tex and r"lora r=8 a=16$^{\dagger}$" in tex


def test_several_seeds_give_t_intervals_and_pooled_tests(tmp_path):
    sweep = tmp_path / "sweep"
    for i, (strategy, acc) in enumerate([(FT, 0.9), (FE, 0.8)]):
        for seed in range(3):
            _job(sweep, 3 * i + seed, strategy, acc, seed=seed)
    build_report(sweep)
    ranking = _ranking(sweep)
    assert (ranking["interval"] == "t over 3 seeds").all()
    assert "pooled over 3 seed pairs" in ranking.loc["feature_extraction", "test_note"]
    accs = pd.read_csv(sweep / "results.csv").query("strategy == 'fine_tuning'")["test/acc"]
    assert ranking.loc["fine_tuning (all)", "acc"] == pytest.approx(accs.mean())


def test_old_jobs_without_predictions_still_get_a_report_that_says_how_to_get_tests(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, FT, 0.9, predictions=False)
    _job(sweep, 1, FE, 0.8, predictions=False)
    build_report(sweep)
    ranking = _ranking(sweep)
    assert ranking.loc["feature_extraction", "test_note"] == "n/a (no predictions)"
    assert ranking["interval"].eq("none").all() and ranking["p_holm"].isna().all()
    report = (sweep / "report.md").read_text()
    assert "n/a (no predictions)" in report and "python -m transferlab.eval" in report
    check_latex((sweep / "report.tex").read_text())


def test_arms_scored_on_different_test_sets_are_never_paired(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, FT, 0.9)
    _job(sweep, 1, FE, 0.8)
    other = load_predictions(sweep / "1")
    save_predictions(sweep / "1", {k: v[:-10] for k, v in other.items() if k != "test_set"}, test_set="digits")
    build_report(sweep)
    ranking = _ranking(sweep)
    assert ranking.loc["feature_extraction", "test_note"] == "n/a (different test set)"
    assert np.isnan(ranking.loc["feature_extraction", "p_value"])


def test_predictions_file_is_small_and_round_trips(tmp_path):
    pred = np.random.default_rng(0).integers(0, 10, 10_000)
    save_predictions(tmp_path, {"pred": pred, "target": pred[::-1], "prob": np.random.rand(10_000)}, "fashion_mnist")
    assert (tmp_path / FILENAME).stat().st_size < 100_000  # a 10,000-image test set: well under 1 MB
    back = load_predictions(tmp_path)
    assert np.array_equal(back["pred"], pred) and back["test_set"] == "fashion_mnist"
    (tmp_path / FILENAME).write_bytes(b"not a zip")
    assert load_predictions(tmp_path) is None  # unreadable: the report skips its tests instead of failing


def test_lora_heatmap_only_for_a_real_rank_by_alpha_grid(tmp_path):
    diagonal = tmp_path / "diagonal"
    for i, r in enumerate([4, 8, 16]):
        _job(diagonal, i, _lora(r, 2 * r), 0.9)
    build_report(diagonal)
    assert (diagonal / "plots" / "lora_rank.png").is_file()
    assert not (diagonal / "plots" / "lora_heatmap.png").exists()
    grid = tmp_path / "grid"
    for i, (r, a) in enumerate([(4, 4), (4, 8), (8, 8), (8, 16)]):
        _job(grid, i, _lora(r, a), 0.9)
    build_report(grid)
    assert (grid / "plots" / "lora_heatmap.png").is_file()
    assert not (grid / "plots" / "lora_rank.png").exists()


def test_warm_cache_jobs_are_marked_in_the_table(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, FT, 0.9)
    _job(sweep, 1, FE, 0.8)  # no time/feature_extraction_s: its features came from the cache
    build_report(sweep)
    row = next(line for line in (sweep / "report.md").read_text().splitlines() if "| feature_extraction |" in line)
    assert "(warm cache)" in row


def _correct(acc: float, n: int, seed: int) -> np.ndarray:
    wrong = np.zeros(n, dtype=bool)
    wrong[np.random.default_rng(seed).permutation(n)[: round((1 - acc) * n)]] = True
    return ~wrong


def test_seed_paired_t_matches_scipy_and_handles_no_spread():
    from scipy import stats as scipy_stats

    from transferlab.reporting.stats import seed_paired_t

    a, b = {0: 0.90, 1: 0.91, 2: 0.89}, {0: 0.88, 1: 0.90, 2: 0.885, 7: 0.5}
    expected = scipy_stats.ttest_rel([0.90, 0.91, 0.89], [0.88, 0.90, 0.885]).pvalue
    assert seed_paired_t(a, b) == pytest.approx(expected)  # seed 7 has no partner and is left out
    assert np.isnan(seed_paired_t({0: 0.9}, {0: 0.8}))  # one shared seed: no test
    assert seed_paired_t(a, a) == 1.0


def test_with_seeds_a_difference_must_beat_the_seed_spread_to_leave_the_tie_group():
    from transferlab.reporting.stats import compare_arms

    n = 20_000
    best = [0.900, 0.910, 0.890]
    close = [0.895, 0.890, 0.900]  # 0.5 points lower on average, but the seeds disagree on the sign
    far = [0.800, 0.805, 0.795]
    arms = [
        {"label": label, "seeds": [0, 1, 2], "acc": accs, "fingerprint": ["fp"] * 3,
         "correct": [_correct(a, n, 100 * k + s) for s, a in enumerate(accs)]}
        for k, (label, accs) in enumerate([("best", best), ("close", close), ("far", far)])
    ]  # fmt: skip
    table = compare_arms(arms).set_index("label")
    assert table.loc["close", "p_holm"] < 0.05  # pooled McNemar alone would call it worse...
    assert table.loc["close", "p_seeds_holm"] > 0.05  # ...but a rerun with new seeds could reverse it
    assert table.loc["close", "tie_group"] is True
    assert table.loc["far", "tie_group"] is False  # beats both the test-set noise and the seed spread
