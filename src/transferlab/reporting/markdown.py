"""report.md: the ranking with 95% intervals, paired tests against the best arm and the tie group; failed jobs; plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transferlab.reporting.comparison import NO_PREDICTIONS_HINT, compare_sweep, untested_without_predictions
from transferlab.reporting.stats import NOTE_BEST, format_p, format_tie, summary_sentence
from transferlab.utils.io import atomic_write_text


def _pm(row, key: str, fmt: str) -> str:
    mean, std = row.get(key), row.get(f"{key} std", 0.0)
    if mean is None or pd.isna(mean):
        return "–"
    return f"{mean:{fmt}} ± {std:{fmt}}" if row["seeds"] > 1 else f"{mean:{fmt}}"


def _num(v, fmt: str) -> str:
    return "–" if v is None or pd.isna(v) else f"{v:{fmt}}"


def _acc_interval(row) -> str:
    if pd.isna(row.get("low")):
        return f"{row['test/acc']:.4f}"
    return f"{row['test/acc']:.4f} [{row['low']:.4f}, {row['high']:.4f}]"


def _interval_kind(row) -> str:
    kind = str(row.get("interval", "none"))
    return {"none": "–"}.get(kind, kind.replace(" test examples", "").replace("bootstrap over", "bootstrap,"))


def _tie(row) -> str:
    if row.get("test_note") == NOTE_BEST:
        return "best"
    return format_tie(row.get("tie_group"))


def _p(row, key: str = "p_holm") -> str:
    p = row.get(key)
    if p is None or pd.isna(p):
        return "–" if row.get("test_note") == NOTE_BEST or key != "p_holm" else str(row.get("test_note", "n/a"))
    return format_p(p)


def ranking_table(df: pd.DataFrame, sweep_dir: str | Path, table: pd.DataFrame | None = None) -> str:
    """The markdown ranking table of the successful jobs (``table``: :func:`compare_sweep`'s, computed if not given)."""
    table = compare_sweep(df, sweep_dir) if table is None else table
    if table.empty:
        return "_No job finished successfully._\n"
    show_size = table["train_size"].nunique() > 1
    show_task = table["task"].nunique() > 1 if "task" in table else False
    with_seeds = "p_seeds" in table and table["p_seeds"].notna().any()
    with_adapters = "adapter/size_mb" in table and table["adapter/size_mb"].notna().any()
    head = ["#", "strategy", *(["task"] if show_task else []), *(["train size"] if show_size else []), "test acc [95% interval]", "interval",
            "McNemar p (Holm) vs best", *(["seeds p (Holm) vs best"] if with_seeds else []), "tie with best", "test F1 (macro)", "trainable params", "trainable %", "fit time (s)",
            "train img/s", "peak mem (MB)", "fit mem increase (MB)", "checkpoint (MB)",
            *(["adapter (MB)"] if with_adapters else []), "seeds"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        fit_time = _pm(row, "time/fit_s", ".0f") + (" (warm cache)" if row.get("feature_cache") == "warm" else "")
        cells = [str(int(row["rank"])) if pd.notna(row.get("rank")) else "–", row["label"],
                 *([str(row["task"])] if show_task else []), *([str(row["train_size"])] if show_size else []), _acc_interval(row), _interval_kind(row), _p(row),
                 *([_p(row, "p_seeds_holm")] if with_seeds else []), _tie(row), _pm(row, "test/f1_macro", ".4f"), _num(row.get("params/trainable"), ",.0f"),
                 _num(row.get("params/trainable_pct"), ".2f"), fit_time,
                 _num(row.get("throughput/train_samples_per_s"), ".0f"), _num(row.get("memory/peak_mb"), ".0f"),
                 _num(row.get("memory/fit_increase_mb"), ".0f"), _num(row.get("checkpoint/size_mb"), ".2f"),
                 *([_num(row.get("adapter/size_mb"), ".2f")] if with_adapters else []), str(int(row["seeds"]))]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_lines(table: pd.DataFrame) -> list[str]:
    """The plain-language verdict, one line per task and training-set size."""
    if table.empty:
        return []
    lines = []
    keys = [k for k in ("task", "train_size") if k in table]
    for key, rows in table.groupby(keys, sort=False):
        rows = rows.reset_index(drop=True)
        rows.attrs = table.attrs
        task, size = key if len(keys) == 2 else ("", key[0])
        prefix = f"**{task}:** " if "task" in table and table["task"].nunique() > 1 else ""
        prefix += f"**{size} training images:** " if table["train_size"].nunique() > 1 else ""
        lines.append(f"- {prefix}{summary_sentence(rows)}")
    return lines


def _within(table: pd.DataFrame) -> str:
    """Where the Holm families are: ' at each training-set size', ' within each task', both, or ''."""
    tasks = "task" in table and table["task"].nunique() > 1
    sizes = table["train_size"].nunique() > 1
    if tasks:
        return " within each task and training-set size" if sizes else " within each task"
    return " at each training-set size" if sizes else ""


def _method_note(table: pd.DataFrame) -> str:
    confidence = table.attrs.get("confidence", 0.95)
    alpha = table.attrs.get("alpha", 0.05)
    return (
        f"Test accuracy with a {confidence:.0%} interval: a Student t interval over the per-seed accuracies for arms "
        "with 2 or more seeds, otherwise a percentile bootstrap over the test examples (2,000 seeded resamples); "
        "the `interval` column says which. Every arm is compared with the best arm on the same test examples by an "
        "exact McNemar test (a binomial test on the examples exactly one of the two gets right); with several "
        "seeds, seed k of one arm is paired with seed k of the other and the discordant counts are pooled into one "
        f"test. The p-values are Holm-adjusted over the arms compared{_within(table)}; "
        f"the **tie group** is the best arm and every arm not significantly worse than it at alpha = {alpha:g}. "
        "The pooled McNemar test sees only test-set noise (every seed reuses the same test examples), so where two "
        "arms share 2 or more seeds a difference must also pass a paired t-test over the per-seed accuracies (the "
        "seed-to-seed spread of training, Holm-adjusted the same way) before the arm leaves the tie group. "
        "Other columns: ± is the standard deviation over seeds."
    )


def write_markdown(
    df: pd.DataFrame, path: Path, plots: list[Path], title: str, table: pd.DataFrame, extra: str = ""
) -> Path:
    """Write report.md atomically and return its path (``table``: :func:`compare_sweep`'s; ``extra``: more sections)."""
    n_ok = int((df["status"] == "ok").sum())
    parts = [
        f"# Strategy comparison: {title}\n",
        f"{len(df)} jobs: {n_ok} succeeded, {len(df) - n_ok} failed or missing. Sorted by test accuracy "
        "(official test split). Fit time covers training and validation (for feature extraction, feature caching "
        "of the training and validation images too; a job that found its features cached is marked *warm cache*); "
        "img/s counts training steps only; peak memory is CUDA max allocated on GPU and peak resident memory on "
        "CPU; the increase is what the fit added over what the process held before it (jobs of a sweep share one "
        "process).\n",
        ranking_table(df, path.parent, table),
    ]
    if not table.empty:
        parts += ["**What the tests say:**\n", *summary_lines(table), "", _method_note(table) + "\n"]
        if untested_without_predictions(table):
            parts.append(f"_{NO_PREDICTIONS_HINT}_\n")
        precision = df.get("extract_precision")
        if precision is not None and precision.notna().any():
            used = ", ".join(sorted({"fp32" if p in ("32", 32) else str(p) for p in precision.dropna()}))
            parts.append(f"Feature extraction's frozen pass ran in {used} (`strategy.extract_precision`); the cached "
                         "features are stored in fp32 and the head trains in fp32.\n")  # fmt: skip
    threads = df.get("threads")
    if threads is not None and threads.notna().any():  # timings (and the last digits of results) depend on it
        used = ", ".join(str(int(t)) for t in sorted(set(threads.dropna())))
        parts.append(f"torch ran with {used} intra-op CPU thread(s) per job (`trainer.threads`).\n")
    failed = df[df["status"] != "ok"]
    if not failed.empty:
        parts.append("## Failed jobs\n")
        parts.append("| job | overrides | status | error |\n|---|---|---|---|")
        for _, row in failed.iterrows():
            error = str(row["error"]).replace("|", "\\|").replace("\n", " ")[:300]
            parts.append(f"| {row['job']} | `{row['overrides']}` | {row['status']} | {error} |")
        parts.append("")
    if extra:
        parts.append(extra)
    if plots:
        parts.append("## Plots\n")
        parts += [f"![{p.stem}](plots/{p.name})\n" for p in plots]
    parts.append("Per-job rows with every metric: `results.csv`; the ranking as a LaTeX table: `report.tex`.\n")
    return atomic_write_text(path, "\n".join(parts))
