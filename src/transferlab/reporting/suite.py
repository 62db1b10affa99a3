"""The suite section of a report: a sweep over the tasks of a suite (``data.task=...``, e.g. VTAB-1k).

Per task the ranking is the usual one (``comparison.py``, within each task); on top of it, a task x arm table with
intervals, the group means and the all-task mean in both of the field's conventions, the Friedman test across tasks
with Holm-adjusted pairwise Wilcoxon tests (``suite_stats.py``), a critical-difference diagram and a LaTeX table in
the layout of the papers' Table 1, with published VTAB-1k rows as references that were not run here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from transferlab.reporting.latex import escape_latex
from transferlab.reporting.suite_stats import (
    average_ranks,
    friedman,
    nemenyi_cd,
    not_different_groups,
    pairwise_wilcoxon,
)
from transferlab.utils.io import atomic_write

ALPHA = 0.05
# Published VTAB-1k rows (ViT-B/16 ImageNet-21k, 224 px): the mean over the 19 tasks as V-PETL Bench's README lists
# them, and the mean of the three group means computed from VPT's Table 1 (linear, full) and NOAH's (LoRA); see the
# README's "Published anchors". References only: nothing here ran them.
PUBLISHED = {
    "linear probe (published)": (52.94, 57.6),
    "full fine-tuning (published)": (65.57, 69.0),
    "LoRA (published)": (72.25, 74.6),
}


def is_suite(table: pd.DataFrame) -> bool:
    """Whether the compared arms ran on two or more tasks of a suite."""
    return "task" in table and table["task"].replace("", np.nan).dropna().nunique() >= 2


def _scores(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Tasks x arms of mean test accuracy (in %), and the tasks some arm has no result on."""
    acc = table.pivot_table(index="task", columns="label", values="acc", aggfunc="first", sort=False) * 100
    missing = [t for t in acc.index if acc.loc[t].isna().any()]
    return acc, missing


def _interval_cell(row: pd.Series | None) -> str:
    if row is None or pd.isna(row.get("acc")):
        return "missing"
    if pd.isna(row.get("low")):
        return f"{100 * row['acc']:.1f}"
    return f"{100 * row['acc']:.1f} [{100 * row['low']:.1f}, {100 * row['high']:.1f}]"


def _means(acc: pd.DataFrame, group_of: dict[str, str]) -> pd.DataFrame:
    """Per arm: each group's mean, the mean over tasks, and the mean of the group means (complete tasks only)."""
    groups = pd.Series({t: group_of[t] for t in acc.index})
    rows = {f"{g} mean": acc[groups == g].mean() for g in dict.fromkeys(groups)}
    rows["mean over tasks"] = acc.mean()
    rows["mean of group means"] = pd.DataFrame({k: v for k, v in rows.items() if k.endswith(" mean")}).mean(axis=1)
    return pd.DataFrame(rows).T


def task_groups(results: pd.DataFrame) -> dict[str, str]:
    """Each task's group, as its jobs recorded it (``data/group`` in metrics.json; "other" where none did)."""
    groups = results["data/group"] if "data/group" in results else pd.Series("other", index=results.index)
    out: dict[str, str] = {}
    for task, group in zip(results["task"], groups.fillna("other"), strict=True):
        if out.get(task, "other") == "other":
            out[task] = group
    return out


def suite_section(table: pd.DataFrame, results: pd.DataFrame, plots_dir: Path) -> tuple[str, list[Path], str]:
    """The markdown section, its plots and the LaTeX table of a suite sweep (``table``: compare_sweep's;
    ``results``: collect_results', for each task's group)."""
    group_of = task_groups(results)
    acc, missing = _scores(table)
    complete = acc.drop(index=missing)
    arms = list(acc.columns)
    by_cell = {(r["task"], r["label"]): r for _, r in table.iterrows()}
    lines = [f"## Suite: {len(acc)} tasks x {len(arms)} arms", ""]
    lines.append("Test accuracy in %, mean over seeds [95% interval: t over seeds, or the bootstrap over test "
                 "examples for one seed]; each task's arms are ranked and tested in the ranking above.")  # fmt: skip
    lines += ["", "| task | group | " + " | ".join(arms) + " |", "|" + "---|" * (len(arms) + 2)]
    for task in acc.index:
        cells = [_interval_cell(by_cell.get((task, arm))) for arm in arms]
        lines.append(f"| {task} | {group_of[task]} | " + " | ".join(cells) + " |")
    means = _means(complete, group_of)
    for name, row in means.iterrows():
        lines.append(f"| **{name}** | | " + " | ".join(f"{row[a]:.1f}" for a in arms) + " |")
    lines += ["", "Two conventions for the suite's headline number, both given because the literature mixes them: "
              "the **mean over tasks** weighs every task alike (VTAB-1k: 19 tasks, so Natural's 7 count most); the "
              "**mean of group means** weighs the groups alike."]  # fmt: skip
    if missing:
        lines.append(f"Missing (an arm failed or has not run): {', '.join(missing)}. The means and the tests below "
                     f"use the {len(complete)} complete tasks only.")  # fmt: skip
    lines += ["", *_across_tasks(complete)]
    lines += ["", "Published VTAB-1k rows (ViT-B/16 ImageNet-21k at 224 px; V-PETL Bench, VPT, NOAH), **not run "
              "here**, as reference lines:", "", "| method | mean over 19 tasks | mean of group means |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {name} | {a:.2f} | {b:.1f} |" for name, (a, b) in PUBLISHED.items()]
    plot = write_cd_diagram(complete, plots_dir / "critical_difference.png")
    return "\n".join(lines) + "\n", [plot] if plot else [], suite_latex(acc, means, group_of)


def _across_tasks(scores: pd.DataFrame) -> list[str]:
    """The Friedman test, the average ranks and the Holm-adjusted pairwise Wilcoxon tests, as markdown lines."""
    if scores.shape[0] < 2:
        return ["Across tasks: fewer than 2 complete tasks, so no test across tasks."]
    test = friedman(scores)
    ranks = average_ranks(scores)
    pairs = pairwise_wilcoxon(scores)
    cd = nemenyi_cd(scores.shape[1], scores.shape[0], ALPHA)
    if np.isnan(test["p"]):
        head = f"**Friedman test:** not run ({test['note']}); the pairwise test below is the comparison."
    else:
        head = (f"**Friedman test** over {test['tasks']} tasks and {test['arms']} arms: chi2 = {test['statistic']:.2f}, "
                f"p = {test['p']:.3g}.")  # fmt: skip
    lines = [head, "", "Average rank over tasks (1 = best): "
             + ", ".join(f"{arm} {rank:.2f}" for arm, rank in ranks.items())
             + f". Nemenyi critical difference at alpha = {ALPHA:g}: {cd:.2f}.", "",
             "| arm A | arm B | mean diff (points) | tasks A wins | tasks B wins | Wilcoxon p | Holm p |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in pairs.itertuples():
        lines.append(f"| {r.arm_a} | {r.arm_b} | {r.mean_diff:+.2f} | {r.wins_a} | {r.wins_b} | {r.p:.3g} | "
                     f"{r.p_holm:.3g} |")  # fmt: skip
    lines.append("")
    lines.append(f"Wilcoxon signed-rank tests over tasks, two-sided, Holm-adjusted over the {len(pairs)} pairs "
                 "(Demšar 2006; Benavoli et al. 2016). With few tasks the smallest attainable p is large: 3 tasks "
                 "cannot give p < 0.25.")  # fmt: skip
    return lines


def write_cd_diagram(scores: pd.DataFrame, path: Path) -> Path | None:
    """Average ranks on one axis, with bars over the arms the Holm-Wilcoxon tests do not separate and Demšar's
    critical difference drawn above (Demšar 2006, Fig. 1)."""
    if scores.shape[0] < 2 or scores.shape[1] < 2:
        return None
    ranks = average_ranks(scores)
    groups = not_different_groups(ranks, pairwise_wilcoxon(scores), ALPHA)
    k = len(ranks)
    fig = Figure(figsize=(7, 1.6 + 0.3 * k))
    ax = fig.subplots()
    ax.set_xlim(k + 0.5, 0.5)  # rank 1 (best) on the right, as Demšar draws it
    ax.set_ylim(-(k + 1), 2.5)
    ax.hlines(0, 1, k, color="black")
    for r in range(1, k + 1):
        ax.vlines(r, -0.1, 0.1, color="black")
        ax.text(r, 0.3, str(r), ha="center", fontsize=9)
    for i, (arm, rank) in enumerate(ranks.items()):
        y = -(i + 1)
        ax.plot([rank, rank], [0, y], color="grey", lw=0.8)
        ax.text(rank, y - 0.15, f"{arm} ({rank:.2f})", ha="center", va="top", fontsize=9)
    for j, group in enumerate(groups):
        lo, hi = ranks[group].min(), ranks[group].max()
        ax.hlines(-0.35 - 0.2 * j, lo - 0.03, hi + 0.03, color="tab:red", lw=3)
    cd = nemenyi_cd(k, scores.shape[0], ALPHA)
    if np.isfinite(cd) and cd < k:
        ax.hlines(1.6, 1, 1 + cd, color="black", lw=2)
        ax.text(1 + cd / 2, 1.8, f"CD = {cd:.2f}", ha="center", fontsize=9)
    ax.set_axis_off()
    ax.set_title(f"Average rank over {scores.shape[0]} tasks (red: not separated by Holm-adjusted Wilcoxon)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    return path


def suite_latex(acc: pd.DataFrame, means: pd.DataFrame, group_of: dict[str, str]) -> str:
    """The papers' Table 1 layout: one row per arm, one column per task under its group, the group means and the
    mean; the published rows below a rule, marked as not run here."""
    tasks = list(acc.index)
    groups = [group_of[t] for t in tasks]
    spans, start = [], 0
    for i in range(1, len(tasks) + 1):
        if i == len(tasks) or groups[i] != groups[start]:
            spans.append((groups[start], start, i))
            start = i
    group_means = [f"{g} mean" for g in dict.fromkeys(groups)]
    cols = len(tasks) + len(group_means) + 2
    header_groups = " & ".join(rf"\multicolumn{{{e - s}}}{{c}}{{{escape_latex(g)}}}" for g, s, e in spans)
    lines = [r"\begin{table*}[t]", r"\centering", r"\small", r"\setlength{\tabcolsep}{3pt}",
             rf"\begin{{tabular}}{{l{'c' * (cols - 1)}}}", r"\toprule",
             rf" & {header_groups} & \multicolumn{{{len(group_means) + 1}}}{{c}}{{Means}} \\",
             "Method & " + " & ".join(rf"\rotatebox{{90}}{{{escape_latex(t)}}}" for t in tasks) + " & "
             + " & ".join(escape_latex(g.removesuffix(" mean")) for g in group_means) + r" & All \\", r"\midrule"]  # fmt: skip
    for arm in acc.columns:
        values = [f"{v:.1f}" if pd.notna(v) else "--" for v in acc[arm]]
        values += [f"{means.loc[g, arm]:.1f}" for g in group_means] + [f"{means.loc['mean over tasks', arm]:.1f}"]
        lines.append(escape_latex(arm) + " & " + " & ".join(values) + r" \\")
    lines.append(r"\midrule")
    for name, (mean, _) in PUBLISHED.items():
        lines.append(
            escape_latex(name) + r"$^{*}$ & \multicolumn{" + str(cols - 2) + r"}{c}{} & " + f"{mean:.2f}" + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}",
              r"\caption{Test accuracy (\%) per task, mean over seeds; group means and the mean over tasks use the "
              r"tasks every arm completed. $^{*}$Published VTAB-1k means over the 19 tasks (V-PETL Bench; ViT-B/16 "
              r"ImageNet-21k), not run here.}", r"\label{tab:suite}", r"\end{table*}"]  # fmt: skip
    return "\n".join(lines) + "\n"
