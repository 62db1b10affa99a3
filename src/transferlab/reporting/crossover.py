"""Where two strategies' accuracy-vs-data curves cross: the training-set size N* with a bootstrap interval.

Pure functions over numpy arrays (no I/O). A *curve* maps each training-set size N to that arm's runs at N, one per
seed: ``{N: {seed: correct}}``, where ``correct`` is a bool array over the test examples (``pred == target``), or a
plain accuracy when a job has no predictions. The curves are compared on log N, where learning curves are close to
straight: N* is the first sign change of the accuracy difference, linearly interpolated between the two sizes around
it. Its interval is the percentile bootstrap over seeds (resampled per size, the same draw for both arms, which share
each seed's training subset) and, where every run has predictions, over test examples (one draw for all runs, as
they are scored on the same test set).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

Curve = Mapping[float, Mapping[object, "np.ndarray | float"]]


def crossing_size(sizes, diff) -> float | None:
    """The first N where ``diff`` (arm a minus arm b, one value per size in ``sizes``) changes sign, interpolated
    on log N; None when it keeps one sign over the whole range (or is zero everywhere)."""
    n = np.asarray(sizes, dtype=float)
    d = np.asarray(diff, dtype=float)
    order = np.argsort(n)
    n, d = np.log(n[order]), d[order]
    nonzero = np.flatnonzero(d != 0)
    for i, j in zip(nonzero[:-1], nonzero[1:], strict=True):
        if np.sign(d[i]) != np.sign(d[j]):
            if j > i + 1:  # exactly equal at the sizes between: the crossing is the middle of that stretch
                return float(math.exp((n[i + 1] + n[j - 1]) / 2))
            t = d[i] / (d[i] - d[j])
            return float(math.exp(n[i] + t * (n[j] - n[i])))
    return None


def _accuracy_matrix(curve: Curve, sizes: list, seeds_at: dict) -> list[np.ndarray]:
    """Per size, the runs' correctness as a (seeds, examples) float matrix (or (seeds, 1) accuracies)."""
    out = []
    for size in sizes:
        runs = [np.atleast_1d(np.asarray(curve[size][s], dtype=float)) for s in seeds_at[size]]
        out.append(np.stack(runs))
    return out


def crossover(curve_a: Curve, curve_b: Curve, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> dict:
    """N* where arm a's and arm b's curves cross, with its bootstrap interval.

    Returns ``n_star`` (None: no crossing in the range of sizes), ``low``/``high`` (the interval, from the resamples
    that do cross; None when none does), ``share_crossing`` (the share of resamples with a crossing in the range),
    ``a_better_below`` (whether arm a wins at the sizes below N*; at all sizes when there is no crossing), the sizes
    and each arm's mean accuracy per size. Sizes and seeds are those both arms ran.
    """
    sizes = sorted(set(curve_a) & set(curve_b), key=float)
    if len(sizes) < 2:
        raise ValueError(f"crossover needs at least 2 training-set sizes both arms ran, got {len(sizes)}.")
    seeds_at = {n: sorted(set(curve_a[n]) & set(curve_b[n]), key=str) for n in sizes}
    if not all(seeds_at.values()):
        raise ValueError("crossover needs at least one seed both arms ran at every size.")
    a, b = _accuracy_matrix(curve_a, sizes, seeds_at), _accuracy_matrix(curve_b, sizes, seeds_at)
    widths = {m.shape[1] for m in a + b}
    per_example = len(widths) == 1 and widths != {1}  # every run has predictions on the same test set
    mean_a = np.array([m.mean() for m in a])
    mean_b = np.array([m.mean() for m in b])
    n_star = crossing_size(sizes, mean_a - mean_b)

    rng = np.random.default_rng(seed)
    n_examples = widths.pop() if per_example else 1
    stars = []
    for _ in range(n_resamples):
        weights = np.bincount(rng.integers(0, n_examples, n_examples), minlength=n_examples) / n_examples
        diff = []
        for ma, mb in zip(a, b, strict=True):
            rows = rng.integers(0, len(ma), len(ma))  # the same seeds for both arms: they share training subsets
            diff.append(((ma[rows] - mb[rows]) @ weights).mean() if per_example else (ma[rows] - mb[rows]).mean())
        stars.append(crossing_size(sizes, diff))
    crossing = np.array([s for s in stars if s is not None])
    tail = (1 - confidence) / 2
    low, high = (float(np.quantile(crossing, q)) for q in (tail, 1 - tail)) if crossing.size else (None, None)
    first = mean_a[0] - mean_b[0]
    return {
        "n_star": n_star,
        "low": low,
        "high": high,
        "share_crossing": crossing.size / n_resamples,
        "a_better_below": bool(first > 0) if first != 0 else None,
        "sizes": [float(s) for s in sizes],
        "acc_a": mean_a.tolist(),
        "acc_b": mean_b.tolist(),
        "confidence": confidence,
        "resampled": "seeds and test examples" if per_example else "seeds",
    }


def crossover_sentence(arm_a: str, arm_b: str, result: Mapping) -> str:
    """The finding in words, e.g. "feature extraction is better than fine-tuning below N* = 1,234 [560, 2,900]"."""
    lo_n, hi_n = f"{min(result['sizes']):,.0f}", f"{max(result['sizes']):,.0f}"
    if result["n_star"] is None:
        if result["a_better_below"] is None:
            return f"{arm_a} and {arm_b} tie at the smallest size and do not cross from {lo_n} to {hi_n} images."
        winner, loser = (arm_a, arm_b) if result["a_better_below"] else (arm_b, arm_a)
        # A point estimate with no crossing can still hide close curves: say how often the resamples do cross.
        share = "" if result["share_crossing"] < 0.001 else f" ({result['share_crossing']:.0%} of resamples do cross)"
        return (
            f"{winner} is better than {loser} at every size from {lo_n} to {hi_n} images: no crossing in the range"
            f"{share}."
        )
    below, above = (arm_a, arm_b) if result["a_better_below"] else (arm_b, arm_a)
    pct = round(100 * result["confidence"])
    interval = (
        f"[{result['low']:,.0f}, {result['high']:,.0f}]" if result["low"] is not None else "[interval unavailable]"
    )
    share = (
        "" if result["share_crossing"] >= 0.999 else f"; {1 - result['share_crossing']:.0%} of resamples do not cross"
    )
    return (
        f"{below} is better than {above} below N* = {result['n_star']:,.0f} training images {interval} "
        f"({pct}% bootstrap over {result['resampled']}{share})."
    )
