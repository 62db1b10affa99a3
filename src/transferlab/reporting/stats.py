"""Statistics for paper-grade comparisons of a sweep's arms: intervals, paired tests, Holm, the tie group.

Pure functions over numpy arrays and pandas tables (numpy, pandas and scipy.stats only); no I/O. Words used here:

* an *arm* is one strategy setting of a sweep (e.g. ``lora r=8 a=16``); it has one or more *seeds* (jobs);
* ``correct`` is a bool array over the test examples of one job: ``pred == target``;
* a *fingerprint* identifies a job's test set (:func:`fingerprint_targets` of its ``target`` array), so two jobs
  are only paired example by example when they were scored on the very same examples in the same order.

:func:`compare_arms` puts it together: one row per arm with its accuracy interval, its rank, an exact paired test
against the best arm, Holm's adjustment over those tests and the resulting tie group. :mod:`.latex` formats it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

NOTE_BEST = "best"
NOTE_NO_PREDICTIONS = "n/a (no predictions)"
NOTE_DIFFERENT_TEST_SET = "n/a (different test set)"
NOTE_UNKNOWN_TEST_SET = "n/a (test set unknown)"
NOTE_NO_RESULTS = "n/a (no accuracy)"
TEST_NAME = "Holm-adjusted exact McNemar vs the best"


# --- intervals ----------------------------------------------------------------------------------------------------


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the Student t interval of the mean of per-seed accuracies (needs >= 2 values)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"t_interval needs at least 2 values (one per seed), got {x.size}.")
    if not np.all(np.isfinite(x)):
        raise ValueError("t_interval got a NaN or infinite accuracy; drop failed seeds first.")
    _check_confidence(confidence)
    mean, sem = float(x.mean()), float(stats.sem(x))  # sem: the sample standard deviation (ddof=1) over sqrt(n)
    if sem == 0.0:  # seeds that agree exactly: scipy's t has no zero scale, and the interval is the point
        return mean, mean, mean
    low, high = stats.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def bootstrap_interval(
    correct: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """``(accuracy, low, high)``: the percentile bootstrap interval of accuracy, resampling the test examples.

    Seeded (numpy Generator) so a report is reproducible. A set that is all right or all wrong gives a zero-width
    interval: the percentile bootstrap cannot see variation that the sample does not show.
    """
    c = _as_correct(correct)
    if c.size == 0:
        raise ValueError("bootstrap_interval needs at least one test example.")
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}.")
    n, k = c.size, int(c.sum())
    rng = np.random.default_rng(seed)
    # Exact shortcut, not an approximation: a bootstrap resample draws n examples with replacement, each draw
    # independently correct with probability k/n (the share of correct examples in the sample), so the number of
    # correct examples in a resample is Binomial(n, k/n), and the resampled accuracy is that count over n. Drawing
    # the counts directly gives the same distribution as indexing `correct` with (n_resamples, n) random indices,
    # in microseconds instead of 20 million random draws per arm. (It holds for accuracy, a mean of 0/1 values;
    # a statistic that is not a mean of per-example values would need real index resampling.)
    resampled = rng.binomial(n, k / n, size=n_resamples) / n
    low, high = np.quantile(resampled, [(1 - confidence) / 2, (1 + confidence) / 2])
    return k / n, float(low), float(high)


# --- paired tests -------------------------------------------------------------------------------------------------


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact McNemar test of two classifiers scored on the same test examples.

    ``n01``: examples A got wrong and B right; ``n10``: A right and B wrong. Under the null hypothesis (equal
    accuracy) each discordant example is equally likely to go either way, so ``n10 ~ Binomial(n01 + n10, 1/2)``;
    the p-value is the two-sided exact binomial test. No discordant pairs (identical correctness) gives p = 1.
    """
    a, b = _as_correct(correct_a), _as_correct(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"McNemar pairs examples one to one: got {a.size} and {b.size} test examples.")
    n01, n10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    return {"n01": n01, "n10": n10, "p_value": _binom_p(n01, n10)}


def paired_test(correct_a_by_seed: Sequence[np.ndarray], correct_b_by_seed: Sequence[np.ndarray]) -> dict:
    """Exact McNemar with the discordant pairs pooled over several seed pairs.

    Entry k of both lists must be one *seed pair*: arm A and arm B run with the same seed value and scored on the
    same test examples (the caller pairs by seed value, see :func:`compare_arms`). The seeds are treated as
    replications of one comparison: the discordant counts are summed over the pairs, ``n01 = sum_k n01_k`` and
    ``n10 = sum_k n10_k``, and one exact binomial test is run on the sums. Given each pair's number of discordant
    examples, ``n10_k ~ Binomial(n01_k + n10_k, 1/2)`` under the null hypothesis, so if the pairs are independent
    the pooled ``n10 ~ Binomial(n01 + n10, 1/2)`` exactly (the matched-pairs Mantel-Haenszel pooling). Caveat: the
    seeds reuse the same test examples, so an example that is hard for one arm tends to be discordant in every
    pair; the test then counts it several times and is somewhat liberal. It answers "does A beat B on these
    examples, over these training runs", while seed-to-seed spread is what the t interval shows.
    """
    if len(correct_a_by_seed) != len(correct_b_by_seed):
        raise ValueError(f"Got {len(correct_a_by_seed)} seeds for A and {len(correct_b_by_seed)} for B; pass pairs.")
    if not correct_a_by_seed:
        raise ValueError("paired_test needs at least one seed pair.")
    per_pair = [mcnemar_exact(a, b) for a, b in zip(correct_a_by_seed, correct_b_by_seed, strict=True)]
    n01, n10 = sum(r["n01"] for r in per_pair), sum(r["n10"] for r in per_pair)
    k = len(per_pair)
    method = "exact McNemar" if k == 1 else f"exact McNemar, discordant pairs pooled over {k} seed pairs"
    return {"n01": n01, "n10": n10, "p_value": _binom_p(n01, n10), "method": method}


def seed_paired_t(acc_a_by_seed: Mapping, acc_b_by_seed: Mapping) -> float:
    """Two-sided paired t-test (``scipy.stats.ttest_rel``) of per-seed accuracies over the seed values both arms
    ran with; NaN with fewer than 2 shared seeds.

    The pooled McNemar test sees only test-set noise: every seed reuses the same test examples, so with several
    seeds it calls differences real that a rerun with new seeds could reverse. This test sees the seed-to-seed
    spread of training itself (what the t interval shows), at the price of few degrees of freedom.
    """
    seeds = [s for s in acc_a_by_seed if s in acc_b_by_seed]
    if len(seeds) < 2:
        return math.nan
    a = np.array([acc_a_by_seed[s] for s in seeds], dtype=float)
    b = np.array([acc_b_by_seed[s] for s in seeds], dtype=float)
    diff = a - b
    if np.allclose(diff, diff[0]):  # no spread: scipy's t is undefined; equal runs are no evidence of a difference
        return 1.0 if diff[0] == 0 else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def holm(p_values: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979, Scand. J. Statist. 6:65-70), same order as the input.

    The i-th smallest of m p-values is multiplied by (m - i + 1); a running maximum keeps the adjusted values
    monotone in the raw ones, and they are capped at 1. Rejecting where adjusted <= alpha controls the
    family-wise error rate at alpha. NaN (a test that was not done) stays NaN and does not count in m.
    """
    p = np.asarray(list(p_values) if not isinstance(p_values, np.ndarray) else p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    done = ~np.isnan(p)
    m = int(done.sum())
    if m == 0:
        return out
    order = np.argsort(p[done], kind="stable")
    scaled = (m - np.arange(m)) * p[done][order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    idx = np.flatnonzero(done)[order]
    out[idx] = adjusted
    return out


# --- a sweep's arms -----------------------------------------------------------------------------------------------


def fingerprint_targets(target: np.ndarray) -> str:
    """``"<n>:<hash>"`` of a test set's label array: equal fingerprints mean the same labels in the same order."""
    t = np.ascontiguousarray(np.asarray(target).astype(np.int64))  # fixed dtype: int32 and int64 labels hash alike
    return f"{t.size}:{hashlib.sha256(t.tobytes()).hexdigest()[:16]}"


def arms_from_jobs(jobs: pd.DataFrame | Iterable[Mapping], acc_col: str = "test/acc") -> list[dict]:
    """Group per-job records into the per-arm records :func:`compare_arms` takes (arms in order of appearance).

    Each job needs ``label``, ``seed`` and ``acc_col``; ``pred`` and ``target`` (int arrays over the test set) are
    optional: without them the job has no correctness array and no fingerprint.
    """
    records = jobs.to_dict("records") if isinstance(jobs, pd.DataFrame) else list(jobs)
    arms: dict[str, dict] = {}
    for job in records:
        arm = arms.setdefault(job["label"], {"label": job["label"], "seeds": [], "acc": [], "correct": [],
                                             "fingerprint": []})  # fmt: skip
        pred, target = job.get("pred"), job.get("target")
        has_preds = pred is not None and target is not None
        arm["seeds"].append(job.get("seed"))
        arm["acc"].append(job.get(acc_col))
        arm["correct"].append(np.asarray(pred) == np.asarray(target) if has_preds else None)
        arm["fingerprint"].append(fingerprint_targets(target) if has_preds else None)
    return list(arms.values())


def _test_arm(runs: list, i: int, best: int | None, has_result: bool) -> dict:
    """Arm ``i``'s paired test against the best arm, or why it has none."""
    if best is None or not has_result:
        return _untested(NOTE_NO_RESULTS)
    if i == best:
        return _untested(NOTE_BEST)
    return _test_vs_best(runs[best], runs[i])


def _in_tie_group(row: pd.Series, is_best: bool, alpha: float) -> bool | None:
    """True for the best and arms not significantly worse than it, False for worse ones, None when untested.

    Two-sided tests: only a significant difference that favours the best excludes an arm. With 2+ shared seeds the
    difference must also beat the seed-to-seed spread (paired t over seeds), not only the test-set noise the pooled
    McNemar test sees.
    """
    if is_best:
        return True
    if pd.isna(row["p_value"]):
        return None
    mcnemar_worse = row["p_holm"] <= alpha and row["n_best_only"] > row["n_arm_only"]
    seeds_worse = pd.isna(row["p_seeds_holm"]) or row["p_seeds_holm"] <= alpha
    return not (mcnemar_worse and seeds_worse)


def compare_arms(
    arms: pd.DataFrame | Iterable[Mapping], alpha: float = 0.05, confidence: float = 0.95, n_resamples: int = 2000
) -> pd.DataFrame:
    """One row per arm, best first: accuracy interval, rank, exact paired test vs the best, Holm, tie group.

    Input, one record (or DataFrame row) per arm: ``label``; ``acc``: per-seed accuracies; optional ``seeds``
    (seed values, default 0, 1, ...), ``correct`` (per seed a bool array or None; or None for the arm) and
    ``fingerprint`` (per seed the :func:`fingerprint_targets` of its test set, or None). A missing ``correct`` or
    ``fingerprint`` (None or NaN, as a DataFrame holds it) means none for every seed.

    * Interval: t over seeds when an arm has >= 2 seeds (seed-to-seed spread is what a reader's rerun would see);
      with one seed, the bootstrap over its test examples if it has predictions; otherwise none.
    * Best arm: highest mean accuracy (first one on a tie). Every other arm is tested against it with
      :func:`paired_test` over the seed values both arms ran with and whose predictions exist on the same test set
      (equal fingerprints); if they share no seed value, seeds are paired in sorted order (the test pairs
      examples, so any two runs on the same test set can be paired; the method string says so).
    * ``p_holm``: :func:`holm` over the arms that were tested. ``p_seeds`` / ``p_seeds_holm``: :func:`seed_paired_t`
      against the best where both share 2+ seeds (NaN otherwise), Holm-adjusted the same way.
    * ``tie_group``: True for the best and for arms not significantly worse than it; False for significantly worse
      arms: p_holm <= alpha with the best winning more discordant examples and, where the seed test exists, also
      p_seeds_holm <= alpha (a difference counts as real only when it beats both the test-set noise and the
      seed-to-seed spread); None (unknown) for arms that could not be tested (no predictions, a different or
      unknown test set): untested is neither a tie nor a loss, and the note says why.
    """
    records = arms.to_dict("records") if isinstance(arms, pd.DataFrame) else [dict(a) for a in arms]
    if not records:
        raise ValueError("compare_arms needs at least one arm.")
    runs = [_arm_runs(r) for r in records]
    rows = []
    for rec, arm_runs in zip(records, runs, strict=True):
        rows.append({"label": rec["label"], "seeds": len(arm_runs), **_interval(arm_runs, confidence, n_resamples)})
    table = pd.DataFrame(rows)
    table["rank"] = table["acc"].rank(ascending=False, method="min")
    finite = table["acc"].notna()
    best = int(table.loc[finite, "acc"].idxmax()) if finite.any() else None

    tests = [_test_arm(runs, i, best, finite[i]) for i in range(len(runs))]
    for col in ("n_best_only", "n_arm_only", "p_value", "test_note"):
        table[col] = [t[col] for t in tests]
    table["p_holm"] = holm(table["p_value"])
    table["p_seeds"] = [
        seed_paired_t(_accs(runs[best]), _accs(arm_runs)) if best is not None and i != best else np.nan
        for i, arm_runs in enumerate(runs)
    ]
    table["p_seeds_holm"] = holm(table["p_seeds"])
    table["tie_group"] = pd.Series([_in_tie_group(row, i == best, alpha) for i, row in table.iterrows()], dtype=object)
    cols = ["label", "seeds", "acc", "low", "high", "interval", "rank", "n_best_only", "n_arm_only", "p_value",
            "p_holm", "p_seeds", "p_seeds_holm", "tie_group", "test_note"]  # fmt: skip
    # Best first even when another arm has the same mean; otherwise by rank, ties in input order.
    order = np.lexsort((table.index != best, table["rank"].fillna(np.inf)))
    table = table.loc[order, cols].reset_index(drop=True)
    table.attrs.update({"alpha": alpha, "confidence": confidence, "test": TEST_NAME})
    return table


def summary_sentence(table: pd.DataFrame) -> str:
    """A plain-language summary of a :func:`compare_arms` table: the tie group, the worse arms, the untested ones."""
    alpha = table.attrs.get("alpha", 0.05)
    best_rows = table[table["test_note"] == NOTE_BEST]
    if best_rows.empty:
        return "No arm has an accuracy, so nothing can be compared."
    best = best_rows.iloc[0]
    head = f"{best['label']}, {best['acc']:.4f}"
    others = table[table["test_note"] != NOTE_BEST]
    if others.empty:
        return f"Only one arm ({head}); nothing to compare."
    ties = others[others["tie_group"].map(lambda v: v is True)]
    worse = others[others["tie_group"].map(lambda v: v is False)]
    untested = others[others["tie_group"].map(lambda v: v is None)]

    def listing(rows: pd.DataFrame) -> str:
        def ps(r) -> str:
            if pd.isna(r.get("p_seeds_holm", np.nan)):
                return f"p{_p_text(r['p_holm'])}"
            return f"McNemar p{_p_text(r['p_holm'])}, seeds p{_p_text(r['p_seeds_holm'])}"

        return ", ".join(f"{r['label']} ({ps(r)})" for _, r in rows.iterrows())

    n_tie = len(ties) + 1
    if len(ties):
        parts = [f"The tie group holds {n_tie} of {len(table)} arms, the best ({head}) and the arms not significantly "
                 f"worse: {listing(ties)}"]  # fmt: skip
    else:
        parts = [f"The tie group is the best arm alone ({head})"]
    if len(worse):
        parts.append(f"{len(worse)} {'is' if len(worse) == 1 else 'are'} significantly worse: {listing(worse)}")
    if len(untested):
        why = ", ".join(f"{r['label']} ({r['test_note'][len('n/a (') : -1]})" for _, r in untested.iterrows())
        parts.append(f"{len(untested)} could not be tested: {why}")
    has_seed_test = "p_seeds" in table and table["p_seeds"].notna().any()
    seeds = " and Holm-adjusted paired t-test over seeds" if has_seed_test else ""
    return "; ".join(parts) + f" ({TEST_NAME}{seeds}, alpha = {alpha:g})."


# --- helpers ------------------------------------------------------------------------------------------------------


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}.")


def _as_correct(correct) -> np.ndarray:
    c = np.asarray(correct)
    if c.dtype != bool:
        # Guard against passing predictions or labels by mistake: only 0/1 values mean right/wrong.
        if c.size and not np.isin(c, (0, 1)).all():
            raise ValueError("A correctness array must be bool (pred == target) or 0/1, not predictions or labels.")
        c = c.astype(bool)
    return c.ravel()


def _binom_p(n01: int, n10: int) -> float:
    if n01 + n10 == 0:
        return 1.0  # no discordant example: nothing speaks for either classifier
    return float(min(1.0, stats.binomtest(min(n01, n10), n01 + n10, 0.5, alternative="two-sided").pvalue))


def format_p(p: float) -> str:
    """A p-value as a report prints it: ``<0.001`` below 0.001 (a float's tiny tail is no finding), else 3 decimals."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_tie(in_tie_group) -> str:
    """A tie-group flag as a report prints it: ``yes``/``no``, or ``n/a`` where no test decided it (None, NaN)."""
    return {True: "yes", False: "no"}.get(in_tie_group, "n/a")


def _p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"={p:.2g}" if p < 0.1 else f"={p:.2f}"


def _arm_runs(rec: Mapping) -> list[dict]:
    """The arm's usable seeds: ``[{seed, acc, correct, fingerprint}]`` without failed (NaN) accuracies."""
    accs = list(rec.get("acc") or [])
    n = len(accs)

    def per_seed(key):
        v = rec.get(key)
        if _is_missing(v):
            return [None] * n
        v = list(v)
        if len(v) != n:
            raise ValueError(f"Arm {rec['label']!r}: {len(v)} {key} entries for {n} accuracies; give one per seed.")
        return v

    # Unknown seed values pair by position; a repeated one would make pairing by seed value ambiguous.
    seeds = [i if _is_missing(s) else s for i, s in enumerate(per_seed("seeds"))]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"Arm {rec['label']!r} has seeds {seeds}: each seed value may occur once per arm.")
    correct, fps = per_seed("correct"), per_seed("fingerprint")
    runs = []
    for s, a, c, f in zip(seeds, accs, correct, fps, strict=True):
        if a is None or not np.isfinite(a):
            continue
        runs.append({"seed": s, "acc": float(a), "correct": None if c is None else _as_correct(c), "fingerprint": f})
    return runs


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _interval(runs: list[dict], confidence: float, n_resamples: int) -> dict:
    if not runs:
        return {"acc": np.nan, "low": np.nan, "high": np.nan, "interval": "none"}
    if len(runs) >= 2:
        mean, low, high = t_interval([r["acc"] for r in runs], confidence)
        return {"acc": mean, "low": low, "high": high, "interval": f"t over {len(runs)} seeds"}
    run = runs[0]
    if run["correct"] is None:
        return {"acc": run["acc"], "low": np.nan, "high": np.nan, "interval": "none"}
    _, low, high = bootstrap_interval(run["correct"], confidence, n_resamples)
    # The reported accuracy stays the job's own metric; the bootstrap only supplies the interval around it.
    kind = f"bootstrap over {run['correct'].size} test examples"
    return {"acc": run["acc"], "low": low, "high": high, "interval": kind}


def _accs(runs: list[dict]) -> dict:
    return {r["seed"]: r["acc"] for r in runs}


def _untested(note: str) -> dict:
    return {"n_best_only": np.nan, "n_arm_only": np.nan, "p_value": np.nan, "test_note": note}


def _test_vs_best(best_runs: list[dict], arm_runs: list[dict]) -> dict:
    best_p = [r for r in best_runs if r["correct"] is not None]
    arm_p = [r for r in arm_runs if r["correct"] is not None]
    if not best_p or not arm_p:
        return _untested(NOTE_NO_PREDICTIONS)
    by_seed = {r["seed"]: r for r in arm_p}
    pairs = [(b, by_seed[b["seed"]]) for b in best_p if b["seed"] in by_seed]
    by_order = not pairs
    if by_order:  # no seed value in common: pair in sorted seed order (same-test-set runs can still be paired)
        pairs = list(zip(sorted(best_p, key=_seed_key), sorted(arm_p, key=_seed_key), strict=False))
    known = [(b, a) for b, a in pairs if b["fingerprint"] is not None and a["fingerprint"] is not None]
    if not known:
        return _untested(NOTE_UNKNOWN_TEST_SET)
    same = [(b, a) for b, a in known if b["fingerprint"] == a["fingerprint"]]
    if not same:
        return _untested(NOTE_DIFFERENT_TEST_SET)
    res = paired_test([b["correct"] for b, _ in same], [a["correct"] for _, a in same])
    note = res["method"] + (" (seeds paired in sorted order)" if by_order else "")
    # paired_test(best, arm): n10 = best right & arm wrong, n01 = arm right & best wrong.
    return {"n_best_only": res["n10"], "n_arm_only": res["n01"], "p_value": res["p_value"], "test_note": note}


def _seed_key(run: dict):
    s = run["seed"]
    return (0, s, "") if isinstance(s, (int, float, np.integer, np.floating)) else (1, 0, str(s))
