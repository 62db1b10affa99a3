"""The report's "Distribution shift" section: clean vs shifted accuracy per arm, paired tests on the shifted
predictions, Kumar et al.'s LP-FT directions, a per-shift appendix table and the "accuracy on the line" plot.

Reads job folders only (metrics.json's ``test_shift/<label>/acc``, ``predictions_<label>.npz``); the caller passes
the compared jobs (no ``stage == "tune"`` rows: tune trials run no test).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from transferlab.predictions import load_predictions
from transferlab.reporting.plots import arm_colors
from transferlab.reporting.stats import (
    arms_from_jobs,
    compare_arms,
    format_p,
    format_tie,
    holm,
    paired_test,
    seed_paired_t,
    t_interval,
)
from transferlab.utils.io import atomic_write

ALPHA = 0.05
_SHIFT_ACC = re.compile(r"^test_shift/(.+)/acc$")
# Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution" (ICLR 2022):
# the claim is about these three strategies, so the section looks them up by their strategy names.
LINEAR_PROBE, FINE_TUNING, LP_FT = "feature_extraction", "fine_tuning", "lp_ft"


def shift_labels(df: pd.DataFrame) -> list[str]:
    """The shifted test sets every successful job was scored on, in column order."""
    ok = df[df["status"] == "ok"]
    labels = [m.group(1) for c in df.columns if (m := _SHIFT_ACC.match(c))]
    return [label for label in labels if ok[f"test_shift/{label}/acc"].notna().all()]


def _pred_target(predictions: dict | None) -> dict:
    """``pred`` and ``target`` of a predictions record, or None for both (a job without predictions)."""
    return {k: None if predictions is None else predictions[k] for k in ("pred", "target")}


def _job_records(jobs: pd.DataFrame, sweep_dir: Path, labels: list[str]) -> tuple[list[dict], list[dict]]:
    """Per job, a clean record and a shifted one (the shifts' predictions pooled, in ``labels`` order)."""
    clean, shifted = [], []
    for _, job in jobs.iterrows():
        folder = sweep_dir / str(job["job"])
        base = load_predictions(folder)
        parts = [load_predictions(folder, shift=label) for label in labels]
        pooled = None if any(p is None for p in parts) else {k: np.concatenate([p[k] for p in parts]) for k in ("pred", "target")}  # fmt: skip
        common = {"label": job["label"], "seed": job["seed"]}
        clean.append({**common, "test/acc": job["test/acc"], **_pred_target(base)})
        shifted.append({**common, "test/acc": job["test_shift/mean_acc"], **_pred_target(pooled)})
    return clean, shifted


def _gap(jobs: pd.DataFrame) -> tuple[float, float, float]:
    gaps = (jobs["test/acc"] - jobs["test_shift/mean_acc"]).to_numpy(float)
    return t_interval(gaps) if len(gaps) >= 2 else (float(gaps.mean()), np.nan, np.nan)


def shift_table(df: pd.DataFrame, sweep_dir: str | Path) -> pd.DataFrame:
    """One row per arm and training-set size: clean and mean shifted accuracy with intervals, the gap (clean minus
    shifted, t interval over seeds) and the shifted accuracy's tests vs the best arm (Holm-adjusted exact McNemar,
    paired t over seeds, tie group: :func:`~transferlab.reporting.stats.compare_arms`)."""
    labels = shift_labels(df)
    ok = df[(df["status"] == "ok") & df.get("test_shift/mean_acc", pd.Series(np.nan, index=df.index)).notna()]
    if not labels or ok.empty:
        return pd.DataFrame()
    rows = []
    for size, jobs in ok.groupby("train_size", sort=False):
        clean, shifted = _job_records(jobs, Path(sweep_dir), labels)
        c, s = compare_arms(arms_from_jobs(clean)), compare_arms(arms_from_jobs(shifted))
        s = s.set_index("label")
        for _, arm in c.iterrows():
            gap, gap_low, gap_high = _gap(jobs[jobs["label"] == arm["label"]])
            sh = s.loc[arm["label"]]
            rows.append({
                "train_size": size, "label": arm["label"], "seeds": arm["seeds"],
                "clean": arm["acc"], "clean_low": arm["low"], "clean_high": arm["high"],
                "shifted": sh["acc"], "shifted_low": sh["low"], "shifted_high": sh["high"],
                "gap": gap, "gap_low": gap_low, "gap_high": gap_high,
                "shifted_p_holm": sh["p_holm"], "shifted_p_seeds_holm": sh["p_seeds_holm"],
                "shifted_tie_group": sh["tie_group"], "shifted_note": sh["test_note"],
            })  # fmt: skip
    return pd.DataFrame(rows)


def _pct(v: float) -> str:
    return "—" if pd.isna(v) else f"{100 * v:.2f}"


def _ci(row, key: str) -> str:
    low, high = row[f"{key}_low"], row[f"{key}_high"]
    return _pct(row[key]) + ("" if pd.isna(low) else f" [{_pct(low)}, {_pct(high)}]")


def _direction(jobs: pd.DataFrame, sweep_dir: Path, labels: list[str], better: str, worse: str, shifted: bool):
    """Mean difference (better minus worse, over shared seeds), the pooled exact McNemar p and the paired t-test's p
    over seeds (NaN with fewer than 2 shared seeds), on clean or shifted accuracy."""
    arms = {}
    for strategy in (better, worse):
        rows = jobs[jobs["strategy"] == strategy]
        if rows["label"].nunique() != 1:
            return None  # absent, or several arms of one strategy (which one is meant is not ours to guess)
        arms[strategy] = rows
    seeds = sorted(set(arms[better]["seed"]) & set(arms[worse]["seed"]))
    if not seeds:
        return None
    col = "test_shift/mean_acc" if shifted else "test/acc"
    correct = {k: [] for k in (better, worse)}
    accs = {k: {} for k in (better, worse)}
    for seed in seeds:
        for strategy, rows in arms.items():
            job = rows[rows["seed"] == seed].iloc[0]
            accs[strategy][seed] = job[col]
            folder = sweep_dir / str(job["job"])
            parts = (
                [load_predictions(folder, shift=label) for label in labels] if shifted else [load_predictions(folder)]
            )
            correct[strategy].append(None if any(p is None for p in parts) else np.concatenate([p["pred"] == p["target"] for p in parts]))  # fmt: skip
    have = all(c is not None for cs in correct.values() for c in cs)
    p = paired_test(correct[better], correct[worse])["p_value"] if have else np.nan
    diff = float(np.mean([accs[better][s] - accs[worse][s] for s in seeds]))
    return {"diff": diff, "p": p, "p_seeds": seed_paired_t(accs[better], accs[worse]),
            "label_better": arms[better]["label"].iloc[0], "label_worse": arms[worse]["label"].iloc[0],
            "seeds": len(seeds)}  # fmt: skip


def _verdict(diff: float, p: float, p_seeds: float) -> str:
    """How a direction came out. As in the ranking's tie group, a difference is significant only when it beats
    both the test-set noise (pooled McNemar) and, with 2+ seeds, the seed-to-seed spread (paired t over seeds)."""
    significant = p <= ALPHA and (pd.isna(p_seeds) or p_seeds <= ALPHA)
    noise_only = p <= ALPHA and not significant  # beats the test-set noise, not a rerun with new seeds
    if diff > 0 and significant:
        return "**holds**"
    if diff > 0:
        return "points the predicted way but is **not significant**" + (" across seeds" if noise_only else "")
    if diff < 0 and significant:
        return "**is reversed** (significant the other way)"
    if diff < 0:
        return "**does not hold** (the other way, not significant" + (" across seeds)" if noise_only else ")")
    return "**does not hold** (no difference)"


def kumar_lines(df: pd.DataFrame, sweep_dir: str | Path) -> list[str]:
    """Whether Kumar et al.'s two directions hold in this sweep, per training-set size, with Holm-adjusted tests:
    (1) fine-tuning beats the linear probe in distribution but loses to it out of distribution;
    (2) LP-FT beats fine-tuning out of distribution. Worded as found, either way."""
    labels = shift_labels(df)
    ok = df[df["status"] == "ok"]
    if not labels or "strategy" not in ok:
        return []
    lines = []
    for size, jobs in ok.groupby("train_size", sort=False):
        checks = [  # (claim, better, worse, shifted)
            ("fine-tuning beats the linear probe in distribution", FINE_TUNING, LINEAR_PROBE, False),
            ("fine-tuning loses to the linear probe out of distribution", LINEAR_PROBE, FINE_TUNING, True),
            ("LP-FT beats fine-tuning out of distribution", LP_FT, FINE_TUNING, True),
        ]
        found = [(claim, _direction(jobs, Path(sweep_dir), labels, b, w, s)) for claim, b, w, s in checks]
        found = [(claim, r) for claim, r in found if r is not None]
        if not found:
            continue
        adjusted = holm([r["p"] for _, r in found])
        adjusted_seeds = holm([r["p_seeds"] for _, r in found])
        lines.append(f"Kumar et al. (ICLR 2022) at training size {size} (Holm over {len(found)} test{'s' if len(found) > 1 else ''}, alpha {ALPHA}; "
                     "significant means both the pooled McNemar test and, with 2+ seeds, the paired t-test over "
                     "seeds reject):")  # fmt: skip
        for (claim, r), p, p_seeds in zip(found, adjusted, adjusted_seeds, strict=True):
            verdict = _verdict(r["diff"], p, p_seeds)
            p_text = "no paired test (no predictions)" if pd.isna(p) else f"McNemar p_holm {format_p(p)}"
            seeds_text = "" if pd.isna(p_seeds) else f", seeds p_holm {format_p(p_seeds)}"
            lines.append(f"- *{claim}*: {verdict}: {r['label_better']} − {r['label_worse']} = {100 * r['diff']:+.2f} "
                         f"points over {r['seeds']} seed(s), {p_text}{seeds_text}.")  # fmt: skip
    return lines


def write_shift_plot(table: pd.DataFrame, df: pd.DataFrame, path: Path) -> Path | None:
    """Clean against mean shifted accuracy, one point per arm with its intervals, and the y = x line."""
    if table.empty:
        return None
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.subplots()
    colors = arm_colors(df.drop_duplicates("label"))
    for _, row in table.iterrows():
        xerr = None if pd.isna(row["clean_low"]) else [[row["clean"] - row["clean_low"]], [row["clean_high"] - row["clean"]]]  # fmt: skip
        yerr = None if pd.isna(row["shifted_low"]) else [[row["shifted"] - row["shifted_low"]], [row["shifted_high"] - row["shifted"]]]  # fmt: skip
        name = row["label"] if table["train_size"].nunique() == 1 else f"{row['label']} (n={row['train_size']})"
        ax.errorbar(row["clean"], row["shifted"], xerr=xerr, yerr=yerr, marker="o", capsize=3, label=name,
                    color=colors.get(row["label"]))  # fmt: skip
    lo = float(min(table["clean"].min(), table["shifted"].min())) - 0.02
    hi = float(max(table["clean"].max(), table["shifted"].max())) + 0.02
    ax.plot([lo, hi], [lo, hi], ls="--", color="grey", lw=1, label="no drop (y = x)")
    ax.set_xlabel("clean test accuracy (95% interval)")
    ax.set_ylabel("mean shifted test accuracy (95% interval)")
    ax.set_title("Accuracy on the line (Miller et al. 2021): clean vs shifted")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=130, format="png"))
    return path


def shift_section(df: pd.DataFrame, sweep_dir: str | Path, plots_dir: Path) -> tuple[str, list[Path]]:
    """The "Distribution shift" markdown section and its plot; ``("", [])`` when no job was scored on a shift."""
    table = shift_table(df, sweep_dir)
    if table.empty:
        return "", []
    labels = shift_labels(df)
    parts = [
        "## Distribution shift\n",
        f"Each job's best checkpoint was tested again on {len(labels)} shifted copies of the test split "
        f"({', '.join(f'`{s}`' for s in labels)}; `data.test_shifts`, corruptions after Hendrycks & Dietterich 2019). "
        "Shifted accuracy is the mean over them; the gap is clean minus shifted (t interval over seeds). "
        "Against the arm with the best shifted accuracy: McNemar p_holm, the Holm-adjusted exact McNemar test of the "
        "shifted predictions (all shifts pooled, example by example); seeds p_holm, the Holm-adjusted paired t-test "
        "over seeds; tied, whether the arm is in the best's tie group on shifted data (not significantly worse by "
        "both tests, as in the ranking).\n",
        "| size | arm | seeds | clean acc % | shifted acc % | gap (points) | McNemar p_holm | seeds p_holm | tied |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, row in table.iterrows():
        p = row["shifted_note"] if pd.isna(row["shifted_p_holm"]) else format_p(row["shifted_p_holm"])
        p_seeds = "–" if pd.isna(row["shifted_p_seeds_holm"]) else format_p(row["shifted_p_seeds_holm"])
        tied = format_tie(row["shifted_tie_group"])
        parts.append(f"| {row['train_size']} | {row['label']} | {row['seeds']} | {_ci(row, 'clean')} | "
                     f"{_ci(row, 'shifted')} | {_ci(row, 'gap')} | {p} | {p_seeds} | {tied} |")  # fmt: skip
    parts.append("")
    kumar = kumar_lines(df, sweep_dir)
    if kumar:
        parts += [*kumar, ""]
    parts += ["### Appendix: accuracy per shifted test set\n", "Mean ± std over seeds, in percent.\n"]
    parts.append("| size | arm | clean | " + " | ".join(labels) + " |")
    parts.append("|---|---|---|" + "---|" * len(labels))
    ok = df[df["status"] == "ok"]
    for (size, label), jobs in ok.groupby(["train_size", "label"], sort=False):
        cells = [f"{100 * jobs[c].mean():.2f} ± {100 * jobs[c].std(ddof=1) if len(jobs) > 1 else 0:.2f}"
                 for c in ["test/acc", *(f"test_shift/{s}/acc" for s in labels)]]  # fmt: skip
        parts.append(f"| {size} | {label} | " + " | ".join(cells) + " |")
    parts.append("")
    plot = write_shift_plot(table, df, plots_dir / "clean_vs_shifted.png")
    return "\n".join(parts) + "\n", [plot] if plot else []
