"""Statistics across the tasks of a suite (Demšar 2006, JMLR 7:1-30; Benavoli et al. 2016, JMLR 17:1-10).

The unit is the task: each arm has one score per task (its mean test accuracy over seeds), and the arms are
compared on the tasks every arm completed. The Friedman test asks whether any arm differs; the post-hoc tests
are pairwise Wilcoxon signed-rank tests over the tasks, Holm-adjusted, as Benavoli et al. recommend over the
Nemenyi test (whose critical difference the plot still shows, as Demšar draws it).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats as sps

from transferlab.reporting.stats import holm


def average_ranks(scores: pd.DataFrame) -> pd.Series:
    """Mean rank of each arm (column) over the tasks (rows): 1 = the best; ties share their mean rank."""
    ranks = scores.rank(axis=1, ascending=False, method="average")
    return ranks.mean(axis=0).sort_values()


def friedman(scores: pd.DataFrame) -> dict:
    """The Friedman test over tasks (rows) and arms (columns): ``statistic``, ``p`` and the counts; NaN p with a
    ``note`` when it cannot run (fewer than 3 arms or 2 tasks)."""
    n_tasks, n_arms = scores.shape
    out = {"tasks": n_tasks, "arms": n_arms, "statistic": float("nan"), "p": float("nan"), "note": ""}
    if n_arms < 3 or n_tasks < 2:
        out["note"] = f"it needs at least 3 arms and 2 tasks; here {n_arms} arms, {n_tasks} tasks"
        return out
    result = sps.friedmanchisquare(*(scores[c].to_numpy(float) for c in scores.columns))
    out.update(statistic=float(result.statistic), p=float(result.pvalue))
    return out


def pairwise_wilcoxon(scores: pd.DataFrame) -> pd.DataFrame:
    """Every pair of arms: the two-sided Wilcoxon signed-rank test over tasks (exact for small suites, scipy's
    choice), the mean difference, and Holm's adjustment over all pairs."""
    rows = []
    for a, b in itertools.combinations(scores.columns, 2):
        diff = scores[a].to_numpy(float) - scores[b].to_numpy(float)
        same = np.allclose(diff, 0)  # scipy refuses all-zero differences: no evidence either way
        p = 1.0 if same else float(sps.wilcoxon(scores[a], scores[b], zero_method="wilcox").pvalue)
        rows.append({"arm_a": a, "arm_b": b, "mean_diff": float(diff.mean()), "wins_a": int((diff > 0).sum()),
                     "wins_b": int((diff < 0).sum()), "p": p})  # fmt: skip
    table = pd.DataFrame(rows, columns=["arm_a", "arm_b", "mean_diff", "wins_a", "wins_b", "p"])
    table["p_holm"] = holm(table["p"]) if len(table) else []
    return table


def nemenyi_cd(n_arms: int, n_tasks: int, alpha: float = 0.05) -> float:
    """Demšar's critical difference of average ranks: q_alpha * sqrt(k (k + 1) / (6 N)), with q_alpha the studentized
    range quantile over sqrt(2) (``scipy.stats.studentized_range``)."""
    if n_arms < 2 or n_tasks < 1:
        return float("nan")
    q = sps.studentized_range.ppf(1 - alpha, n_arms, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(n_arms * (n_arms + 1) / (6 * n_tasks)))


def not_different_groups(ranks: pd.Series, pairs: pd.DataFrame, alpha: float = 0.05) -> list[list[str]]:
    """Maximal runs of arms, in rank order, whose every pair the Holm-adjusted Wilcoxon test does not separate:
    the bars of a critical-difference diagram."""
    arms = list(ranks.index)
    separated = {frozenset((r.arm_a, r.arm_b)) for r in pairs.itertuples() if r.p_holm <= alpha}
    groups: list[list[str]] = []
    for i in range(len(arms)):
        j = i
        while j + 1 < len(arms) and all(frozenset((arms[k], arms[j + 1])) not in separated for k in range(i, j + 1)):
            j += 1
        if j > i and not any(set(arms[i : j + 1]) <= set(g) for g in groups):
            groups.append(arms[i : j + 1])
    return groups
