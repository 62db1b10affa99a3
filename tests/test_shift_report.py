"""The report's Distribution shift section (clean vs shifted per arm, paired tests, Kumar et al.'s directions,
the per-shift appendix, the clean-vs-shifted plot) and its data-size crossover section, on made-up sweep folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from transferlab.predictions import save_predictions
from transferlab.report import build_report

N_TEST = 1000
TARGET = np.random.default_rng(0).integers(0, 10, N_TEST)
SHIFTS = ("gaussian_noise", "contrast")
FE = {"_target_": "transferlab.strategies.FeatureExtraction", "name": "feature_extraction"}
FT = {"_target_": "transferlab.strategies.FineTuning", "name": "fine_tuning", "unfreeze": "all"}
LP_FT = {"_target_": "transferlab.strategies.FineTuning", "name": "lp_ft", "unfreeze": "none"}


def _predictions(acc: float, rng) -> np.ndarray:
    wrong = np.zeros(N_TEST, dtype=bool)
    wrong[rng.permutation(N_TEST)[: round((1 - acc) * N_TEST)]] = True
    return np.where(wrong, (TARGET + 1) % 10, TARGET)


def _job(sweep: Path, i: int, strategy: dict, seed: int, clean: float, shifted: float | None, size=1000, **extra):
    """A finished job: clean predictions of accuracy ``clean``; with ``shifted``, each shift's at that accuracy."""
    job = sweep / str(i)
    (job / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "strategy": strategy, "data": {"train_size": size}, "model": {"name": "m"}}
    (job / ".hydra" / "config.yaml").write_text(json.dumps(config))
    (job / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- data.train_size={size}\n")
    rng = np.random.default_rng(100 * i + seed)
    metrics = {"status": "ok", "test/acc": clean, "data/train_images": size, **extra}
    save_predictions(job, {"pred": _predictions(clean, rng), "target": TARGET, "prob": np.ones(N_TEST)}, "d")
    if shifted is not None:
        for label in SHIFTS:
            pred = _predictions(shifted, rng)
            save_predictions(job, {"pred": pred, "target": TARGET, "prob": np.ones(N_TEST)}, f"d:{label}", label)
            metrics[f"test_shift/{label}/acc"] = shifted
        metrics["test_shift/mean_acc"] = shifted
    (job / "metrics.json").write_text(json.dumps(metrics))


def test_distribution_shift_section_with_kumar_directions_and_plot(tmp_path):
    sweep = tmp_path / "sweep"
    arms = [(FE, 0.80, 0.70), (FT, 0.86, 0.60), (LP_FT, 0.87, 0.72)]
    i = 0
    for strategy, clean, shifted in arms:
        for seed in (0, 1):
            _job(sweep, i, strategy, seed, clean + 0.002 * seed, shifted + 0.002 * seed)
            i += 1
    _job(sweep, i, FT, 0, 0.9, None, **{"stage": "tune"})  # a tune trial: no test, never compared
    report = build_report(sweep).read_text()
    section = report.split("## Distribution shift")[1]
    assert "`gaussian_noise`, `contrast`" in section
    assert "| 1000 | feature_extraction | 2 | 80.10 [" in section  # clean mean over seeds, with its t interval
    assert "fine-tuning beats the linear probe in distribution*: **holds**" in section
    assert "fine-tuning loses to the linear probe out of distribution*: **holds**" in section
    assert "LP-FT beats fine-tuning out of distribution*: **holds**" in section
    assert "### Appendix: accuracy per shifted test set" in section and "| gaussian_noise | contrast |" in section
    assert (sweep / "plots" / "clean_vs_shifted.png").stat().st_size > 1000


def test_kumar_directions_are_worded_as_found_when_they_fail(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, FE, 0, 0.80, 0.60)
    _job(sweep, 1, FT, 0, 0.80, 0.75)  # equal in distribution, and fine-tuning is the robust one
    section = build_report(sweep).read_text().split("## Distribution shift")[1]
    assert "fine-tuning beats the linear probe in distribution*: **does not hold** (no difference)" in section
    assert "fine-tuning loses to the linear probe out of distribution*: **is reversed**" in section


def test_kumar_direction_needs_the_seed_test_too_not_only_the_pooled_mcnemar(tmp_path):
    # LP-FT is 3.3 points ahead on shifted data on average: pooled over 6,000 shifted predictions McNemar rejects,
    # but the per-seed differences (-8, +13, +5 points) do not survive the paired t-test over seeds.
    sweep = tmp_path / "sweep"
    for seed, lp_ft_shifted in enumerate((0.62, 0.83, 0.75)):
        _job(sweep, 2 * seed, FT, seed, 0.86, 0.70)
        _job(sweep, 2 * seed + 1, LP_FT, seed, 0.87, lp_ft_shifted)
    section = build_report(sweep).read_text().split("## Distribution shift")[1]
    line = next(s for s in section.splitlines() if "LP-FT beats fine-tuning out of distribution" in s)
    assert "points the predicted way but is **not significant** across seeds" in line
    assert "+3.33 points over 3 seed(s), McNemar p_holm <0.001, seeds p_holm 0." in line  # no "0" or "1e-27" p
    lp_ft_row = next(s for s in section.splitlines() if s.startswith("| 1000 | lp_ft |"))
    ft_row = next(s for s in section.splitlines() if s.startswith("| 1000 | fine_tuning |"))
    assert lp_ft_row.endswith("| best | – | yes |")
    assert ft_row.endswith("| yes |") and "| <0.001 |" in ft_row  # tied on shifted data: the seeds test does not reject


def test_no_shift_section_without_shifts(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, FE, 0, 0.8, None)
    _job(sweep, 1, FT, 0, 0.7, None)
    assert "Distribution shift" not in build_report(sweep).read_text()


def test_data_size_section_states_the_crossover_with_its_interval(tmp_path):
    sweep = tmp_path / "sweep"
    true_n, i = 1000.0, 0
    for size in (50, 200, 1000, 5000, 54000):
        for seed in (0, 1, 2):
            fe = 0.75 + 0.02 * math.log(size / true_n) + 0.003 * (seed - 1)
            ft = 0.75 + 0.05 * math.log(size / true_n) + 0.003 * (seed - 1)
            _job(sweep, i, FE, seed, round(fe, 3), None, size=size)
            _job(sweep, i + 1, FT, seed, round(ft, 3), None, size=size)
            i += 2
    report = build_report(sweep).read_text()
    section = report.split("## When does each strategy win?")[1]
    line = next(s for s in section.splitlines() if "below N* =" in s)
    assert line.startswith("- feature_extraction is better than fine_tuning")
    n_star = float(line.split("N* = ")[1].split()[0].replace(",", ""))
    low, high = (float(v.replace(",", "")) for v in line.split("[")[1].split("]")[0].split(", "))
    assert 700 < n_star < 1400 and low < true_n < high
    assert "N counts the images" not in section  # N is the train size here: nothing to explain


def test_data_size_section_says_when_n_is_not_the_train_size(tmp_path):
    # A tuned refit trains on train + validation: train size 200 becomes 220 images, and N* is on that scale.
    sweep = tmp_path / "sweep"
    for i, size in enumerate((200, 2000)):
        images = {"data/train_images": round(1.1 * size)}
        _job(sweep, 2 * i, FE, 0, 0.8 if size == 200 else 0.85, None, size=size, **images)
        _job(sweep, 2 * i + 1, FT, 0, 0.7 if size == 200 else 0.9, None, size=size, **images)
    section = build_report(sweep).read_text().split("## When does each strategy win?")[1]
    assert "here train size 200 trained on 220 (a tuned refit" in section
    # +10 points at 220 images, -5 at 2,200: two thirds of the way on log N, 220 x 10^(2/3) = 1,021
    assert "feature_extraction is better than fine_tuning below N* = 1,021 training images" in section
