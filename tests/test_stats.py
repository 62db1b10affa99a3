"""The statistics layer of the comparison report (reporting/stats.py) and its LaTeX table (reporting/latex.py)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from transferlab.reporting.latex import escape_latex, latex_table, write_latex_table
from transferlab.reporting.stats import (
    NOTE_BEST,
    NOTE_DIFFERENT_TEST_SET,
    NOTE_NO_PREDICTIONS,
    arms_from_jobs,
    bootstrap_interval,
    compare_arms,
    fingerprint_targets,
    format_p,
    format_tie,
    holm,
    mcnemar_exact,
    paired_test,
    summary_sentence,
    t_interval,
)

N = 1000
TARGET = np.arange(N) % 10
FP = fingerprint_targets(TARGET)


def _flip(base: np.ndarray, best_only: int, arm_only: int) -> np.ndarray:
    """``base`` with ``best_only`` of its right answers made wrong and ``arm_only`` of its wrong ones made right."""
    out = base.copy()
    out[np.flatnonzero(base)[:best_only]] = False
    out[np.flatnonzero(~base)[:arm_only]] = True
    return out


def _arm(label: str, correct: np.ndarray | None, fp: str | None = FP, acc: float | None = None) -> dict:
    acc = float(correct.mean()) if acc is None else acc
    return {"label": label, "acc": [acc], "correct": None if correct is None else [correct], "fingerprint": [fp]}


BASE = np.arange(N) < 900  # the best arm: 900 of 1000 right


def _five_arms() -> list[dict]:
    # Discordant counts (best only, arm only) and their exact two-sided binomial p-values, by hand:
    #   (10, 0): 2 * 1/2^10                        = 0.001953125
    #   ( 9, 1): 2 * (1 + 10)/2^10       = 22/1024 = 0.021484375
    #   ( 7, 3): 2 * (1 + 10 + 45 + 120)/2^10 = 352/1024 = 0.34375
    return [
        _arm("lora r=8", _flip(BASE, 10, 0)),  # acc 0.890
        _arm("best", BASE),  # acc 0.900
        _arm("lora r=4", _flip(BASE, 9, 1)),  # acc 0.892
        _arm("lora r=16", _flip(BASE, 7, 3)),  # acc 0.896
        _arm("linear_probe", None, acc=0.85),  # no predictions
        _arm("other split", _flip(BASE, 1, 0), fp=fingerprint_targets(TARGET[::-1])),  # acc 0.899, other test set
    ]


# --- intervals ----------------------------------------------------------------------------------------------------


def test_t_interval_matches_hand_computation():
    values = [0.90, 0.92, 0.91]
    # mean 0.91, sample sd 0.01, n 3: half-width = t_{0.975, 2} * 0.01 / sqrt(3) with t_{0.975, 2} = 4.302652729911275
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3))
    mean, low, high = t_interval(values)
    assert mean == pytest.approx(0.91)
    assert low == pytest.approx(0.91 - half) and high == pytest.approx(0.91 + half)
    assert half == pytest.approx(0.0248414, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([0.9])


def test_bootstrap_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    p_true, n, trials = 0.8, 1000, 200
    covered = 0
    for trial in range(trials):
        correct = np.random.default_rng(1000 + trial).random(n) < p_true
        acc, low, high = bootstrap_interval(correct, seed=trial)
        assert acc == correct.mean() and low <= acc <= high
        covered += low <= p_true <= high
    assert 0.90 <= covered / trials <= 0.99, covered


def test_bootstrap_binomial_shortcut_matches_resampling_the_examples():
    correct = np.random.default_rng(7).random(2000) < 0.7
    rng = np.random.default_rng(8)
    resampled = correct[rng.integers(0, correct.size, size=(2000, correct.size))].mean(axis=1)
    want_low, want_high = np.quantile(resampled, [0.025, 0.975])
    _, low, high = bootstrap_interval(correct, n_resamples=2000, seed=0)
    assert low == pytest.approx(want_low, abs=0.005) and high == pytest.approx(want_high, abs=0.005)
    assert bootstrap_interval(correct, seed=3) == bootstrap_interval(correct, seed=3)  # seeded


def test_bootstrap_rejects_predictions_passed_as_correctness():
    with pytest.raises(ValueError, match="bool"):
        bootstrap_interval(np.array([3, 1, 4, 1, 5]))


# --- paired tests -------------------------------------------------------------------------------------------------


def test_mcnemar_large_difference_is_significant_and_identical_predictions_give_p_1():
    rng = np.random.default_rng(0)
    a, b = rng.random(10_000) < 0.90, rng.random(10_000) < 0.85
    res = mcnemar_exact(a, b)
    assert res["n01"] == int(np.sum(~a & b)) and res["n10"] == int(np.sum(a & ~b))
    assert res["p_value"] < 0.001
    assert mcnemar_exact(a, a) == {"n01": 0, "n10": 0, "p_value": 1.0}
    assert mcnemar_exact(_flip(BASE, 7, 3), BASE)["p_value"] == pytest.approx(0.34375)
    with pytest.raises(ValueError, match="one to one"):
        mcnemar_exact(a, b[:-1])


def test_paired_test_pools_discordant_pairs_over_seeds():
    res = paired_test([_flip(BASE, 0, 5), _flip(BASE, 0, 5)], [BASE, BASE])
    # each pair alone: 5 vs 0 (p = 2/32 = 0.0625); pooled: 10 vs 0 (p = 2/1024)
    assert (res["n01"], res["n10"]) == (0, 10)
    assert res["p_value"] == pytest.approx(0.001953125)
    assert res["method"] == "exact McNemar, discordant pairs pooled over 2 seed pairs"
    assert paired_test([BASE], [BASE])["method"] == "exact McNemar"


def test_holm_on_a_hand_computed_example():
    # m = 4 tests (the NaN is not one): sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1 = 0.04, 0.09, 0.08, 0.20;
    # running maximum -> 0.04, 0.09, 0.09, 0.20; back in input order:
    got = holm([0.01, 0.04, 0.03, np.nan, 0.20])
    np.testing.assert_allclose(got, [0.04, 0.09, 0.09, np.nan, 0.20])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # 0.5 * 2 = 1.0 caps, monotone carries it to 0.6
    assert np.isnan(holm([np.nan])).all() and holm([]).size == 0


# --- compare_arms -------------------------------------------------------------------------------------------------


def test_compare_arms_holm_and_tie_group_on_a_hand_computed_example():
    table = compare_arms(_five_arms(), alpha=0.05).set_index("label")
    assert list(table.index[:4]) == ["best", "other split", "lora r=16", "lora r=4"]
    assert table.loc["best", "test_note"] == NOTE_BEST and table.loc["best", "tie_group"] is True
    assert table.loc["best", "rank"] == 1 and np.isnan(table.loc["best", "p_value"])
    np.testing.assert_allclose(table.loc[["lora r=8", "lora r=4", "lora r=16"], "p_value"],
                               [0.001953125, 0.021484375, 0.34375])  # fmt: skip
    # Holm over the 3 tested arms: 0.001953125 * 3, 0.021484375 * 2, 0.34375 * 1
    np.testing.assert_allclose(table.loc[["lora r=8", "lora r=4", "lora r=16"], "p_holm"],
                               [0.005859375, 0.04296875, 0.34375])  # fmt: skip
    assert table.loc["lora r=8", "tie_group"] is False and table.loc["lora r=4", "tie_group"] is False
    assert table.loc["lora r=16", "tie_group"] is True
    assert (table.loc["lora r=4", "n_best_only"], table.loc["lora r=4", "n_arm_only"]) == (9, 1)
    assert table.loc["lora r=4", "interval"] == "bootstrap over 1000 test examples"
    assert table.loc["lora r=4", "test_note"] == "exact McNemar"
    # At alpha = 0.04 the raw p of lora r=4 (0.021) would reject but the Holm-adjusted one (0.043) does not.
    assert compare_arms(_five_arms(), alpha=0.04).set_index("label").loc["lora r=4", "tie_group"] is True


def test_unpaired_arms_are_not_tested_and_say_why():
    table = compare_arms(_five_arms()).set_index("label")
    for label, note in [("linear_probe", NOTE_NO_PREDICTIONS), ("other split", NOTE_DIFFERENT_TEST_SET)]:
        assert table.loc[label, "test_note"] == note
        assert np.isnan(table.loc[label, "p_value"]) and np.isnan(table.loc[label, "p_holm"])
        assert table.loc[label, "tie_group"] is None
    assert table.loc["linear_probe", "interval"] == "none" and table.loc["linear_probe", "acc"] == 0.85
    # an arm without predictions is "n/a (no predictions)" also when it is the other side that lacks them
    arms = [_arm("a", None, acc=0.95), _arm("b", BASE)]
    assert compare_arms(arms).set_index("label").loc["b", "test_note"] == NOTE_NO_PREDICTIONS


def test_summary_sentence():
    text = summary_sentence(compare_arms(_five_arms()))
    assert text.startswith(
        "The tie group holds 2 of 6 arms, the best (best, 0.9000) and the arms not significantly worse"
    )
    assert "worse: lora r=16 (p=0.34)" in text
    assert "2 are significantly worse: lora r=4 (p=0.043), lora r=8 (p=0.0059)" in text
    assert "2 could not be tested: other split (different test set), linear_probe (no predictions)" in text
    assert text.endswith("(Holm-adjusted exact McNemar vs the best, alpha = 0.05).")
    assert "nothing to compare" in summary_sentence(compare_arms([_arm("solo", BASE)]))


def test_report_formats_for_p_values_and_tie_flags():
    assert [format_p(p) for p in (0.0004, 0.001, 0.0456)] == ["<0.001", "0.001", "0.046"]
    # The tie flag comes from pandas rows: numpy bools and NaN (no test decided it) must print like Python's.
    assert [format_tie(v) for v in (True, np.bool_(False), None, float("nan"))] == ["yes", "no", "n/a", "n/a"]


def test_equal_means_keep_the_first_arm_as_best_and_first():
    table = compare_arms([_arm("z", BASE), _arm("a", _flip(BASE, 1, 1))])
    assert table["label"].tolist() == ["z", "a"] and table["rank"].tolist() == [1, 1]
    assert table.loc[0, "test_note"] == NOTE_BEST and table.loc[1, "p_value"] == 1.0


def _seeded_jobs() -> list[dict]:
    # The best arm's seeds differ (seed s also gets s of the last 100 examples right), so pairing by seed value
    # and pairing by position give different counts.
    best = {s: BASE | ((np.arange(N) >= 900) & (np.arange(N) < 900 + s)) for s in (1, 2, 3)}
    arm = {1: _flip(best[1], 4, 0), 3: _flip(best[3], 6, 0)}
    jobs = [{"label": "ft", "seed": s, "test/acc": c.mean(), "pred": np.where(c, TARGET, (TARGET + 1) % 10),
             "target": TARGET} for s, c in best.items()]  # fmt: skip
    jobs += [{"label": "lora", "seed": s, "test/acc": c.mean(), "pred": np.where(c, TARGET, (TARGET + 1) % 10),
              "target": TARGET} for s, c in arm.items()]  # fmt: skip
    jobs.append({"label": "lp", "seed": 1, "test/acc": 0.5})  # no pred/target
    return jobs


def test_seeds_are_paired_by_seed_value():
    table = compare_arms(arms_from_jobs(_seeded_jobs())).set_index("label")
    assert table.loc["ft", "interval"] == "t over 3 seeds" and table.loc["lora", "interval"] == "t over 2 seeds"
    # seed 1 with seed 1 (4 vs 0) and seed 3 with seed 3 (6 vs 0); seed 2 of ft has no partner
    assert (table.loc["lora", "n_best_only"], table.loc["lora", "n_arm_only"]) == (10, 0)
    assert table.loc["lora", "test_note"] == "exact McNemar, discordant pairs pooled over 2 seed pairs"
    assert table.loc["lp", "test_note"] == NOTE_NO_PREDICTIONS and table.loc["lp", "interval"] == "none"
    mean, low, high = t_interval([0.901, 0.902, 0.903])
    assert table.loc["ft", ["acc", "low", "high"]].tolist() == pytest.approx([mean, low, high])


def test_failed_seeds_are_dropped_and_repeated_seeds_refused():
    arm = {"label": "x", "acc": [0.9, float("nan"), 0.92], "correct": None}
    row = compare_arms([arm]).iloc[0]
    assert row["seeds"] == 2 and row["acc"] == pytest.approx(0.91)
    with pytest.raises(ValueError, match="once per arm"):
        compare_arms([{**arm, "seeds": [0, 1, 0]}])


def test_compare_arms_takes_a_dataframe():
    from_records = compare_arms(_five_arms())
    pd.testing.assert_frame_equal(compare_arms(pd.DataFrame(_five_arms())), from_records)


# --- LaTeX --------------------------------------------------------------------------------------------------------


def test_escape_latex():
    assert escape_latex(r"lora_r=8 & 50% #1 {x} ~ ^ \ $") == (
        r"lora\_r=8 \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} \$"
    )
    assert escape_latex("[a]") == "{[}a{]}"


def _three_arm_table() -> pd.DataFrame:
    arms = [
        {"label": "fine_tuning (all)", "seeds": [0, 1, 2], "acc": [0.9021, 0.9050, 0.9000],
         "correct": [_flip(BASE, 0, 2), _flip(BASE, 0, 5), BASE], "fingerprint": [FP] * 3},
        _arm("lora_r=8 a=16 & 50% #1", _flip(BASE, 3, 1)),
        _arm("[linear] probe", None, acc=0.80),
    ]  # fmt: skip
    table = compare_arms(arms)
    extra = pd.DataFrame({
        "label": ["fine_tuning (all)", "lora_r=8 a=16 & 50% #1", "[linear] probe"],
        "params/trainable": [85_800_000.0, 300_000.0, np.nan],
        "params/trainable_pct": [100.0, 0.35, 0.01],
        "time/fit_s": [812.4, 403.0, 90.2],
        "checkpoint/size_mb": [327.4, 1.2, np.nan],
    })  # fmt: skip
    joined = table.merge(extra, on="label", how="left")
    joined.attrs = table.attrs
    return joined


def check_latex(text: str) -> None:
    """Parser-level checks: balanced braces, matched environments, the same number of cells in every row."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("%"))
    depth, i = 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped character (\{, \%, \\ ...) or the first letter of a command
            continue
        assert ch != "%", f"unescaped % at {i}: {text[max(0, i - 30) : i + 30]!r}"
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, f"unbalanced }} at {i}"
        i += 1
    assert depth == 0, "unbalanced {"
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{(\w+)\}", text):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, f"\\end{{{env}}} does not close the open environment"
    assert not stack, f"unclosed environments {stack}"
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", text).group(1)
    rows = [line for line in text.splitlines() if line.rstrip().endswith(r"\\")]
    assert rows
    for row in rows:
        assert len(re.findall(r"(?<!\\)&", row)) == len(spec) - 1, row
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", r"\label{"):
        assert text.count(cmd) == 1, cmd


def test_latex_table_parses(tmp_path):
    table = _three_arm_table()
    path = write_latex_table(table, tmp_path / "report.tex")
    text = path.read_text()
    check_latex(text)
    assert r"\textbf{fine\_tuning (all)}" in text
    assert r"lora\_r=8 a=16 \& 50\% \#1$^{\dagger}$" in text  # 4 vs 0 discordant (p = 0.125): tie group
    assert "{[}linear{]} probe &" in text and "n/a" in text  # escaped; untested, no dagger
    assert r"\textbf{0.9024} $\pm$" in text and "{[}0." in text  # t interval for 3 seeds, bootstrap for 1
    assert "85,800,000" in text and "& -- &" in text  # missing values
    assert r"$\alpha = 0.05$" in text and "tie group" in text
    with pytest.raises(AssertionError):
        check_latex(text.replace(r"\end{tabular}", ""))
    with pytest.raises(AssertionError):
        check_latex(text.replace(r"\& 50", "& 50"))


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex is not installed (apt-get install texlive-latex-base texlive-latex-recommended)")  # fmt: skip
def test_latex_table_compiles_with_pdflatex(tmp_path):
    write_latex_table(_three_arm_table(), tmp_path / "report.tex")
    (tmp_path / "main.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n\\input{report.tex}\n\\end{document}\n"
    )
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tmp_path / "main.pdf").stat().st_size > 0


def test_latex_table_without_extra_columns():
    text = latex_table(compare_arms(_five_arms()), caption="My_sweep 100%", label="tab:x")
    check_latex(text)
    assert r"\caption{My\_sweep 100\% " in text and r"\label{tab:x}" in text
