"""report.md: the ranking table (mean ± std over seeds), failed jobs, and the plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transferlab.reporting.collect import summarize
from transferlab.utils.io import atomic_write_text


def _pm(row, key: str, fmt: str) -> str:
    mean, std = row.get(key), row.get(f"{key} std", 0.0)
    if mean is None or pd.isna(mean):
        return "–"
    return f"{mean:{fmt}} ± {std:{fmt}}" if row["seeds"] > 1 else f"{mean:{fmt}}"


def _num(v, fmt: str) -> str:
    return "–" if v is None or pd.isna(v) else f"{v:{fmt}}"


def ranking_table(df: pd.DataFrame) -> str:
    """The markdown ranking table of the successful jobs."""
    summary = summarize(df)
    if summary.empty:
        return "_No job finished successfully._\n"
    show_size = summary["train_size"].nunique() > 1
    head = ["#", "strategy", *(["train size"] if show_size else []), "test acc", "test F1 (macro)", "trainable params",
            "trainable %", "fit time (s)", "train img/s", "peak mem (MB)", "fit mem increase (MB)", "checkpoint (MB)", "seeds"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in summary.iterrows():
        cells = [str(i + 1), row["label"], *([str(row["train_size"])] if show_size else []),
                 _pm(row, "test/acc", ".4f"), _pm(row, "test/f1_macro", ".4f"), _num(row.get("params/trainable"), ",.0f"),
                 _num(row.get("params/trainable_pct"), ".2f"), _pm(row, "time/fit_s", ".0f"),
                 _num(row.get("throughput/train_samples_per_s"), ".0f"), _num(row.get("memory/peak_mb"), ".0f"), _num(row.get("memory/fit_increase_mb"), ".0f"),
                 _num(row.get("checkpoint/size_mb"), ".2f"), str(int(row["seeds"]))]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(df: pd.DataFrame, path: Path, plots: list[Path], title: str) -> Path:
    """Write report.md atomically and return its path."""
    n_ok = int((df["status"] == "ok").sum())
    parts = [
        f"# Strategy comparison: {title}\n",
        f"{len(df)} jobs: {n_ok} succeeded, {len(df) - n_ok} failed or missing. Sorted by test accuracy "
        "(official test split); ± is the standard deviation over seeds. Fit time covers training and "
        "validation (for feature extraction, feature caching too); img/s counts training steps only; "
        "peak memory is CUDA max allocated on GPU and peak resident memory on CPU; the increase is what the fit "
        "added over what the process held before it (jobs of a sweep share one process).\n",
        ranking_table(df),
    ]
    failed = df[df["status"] != "ok"]
    if not failed.empty:
        parts.append("## Failed jobs\n")
        parts.append("| job | overrides | status | error |\n|---|---|---|---|")
        for _, row in failed.iterrows():
            error = str(row["error"]).replace("|", "\\|").replace("\n", " ")[:300]
            parts.append(f"| {row['job']} | `{row['overrides']}` | {row['status']} | {error} |")
        parts.append("")
    if plots:
        parts.append("## Plots\n")
        parts += [f"![{p.stem}](plots/{p.name})\n" for p in plots]
    parts.append("Per-job rows with every metric: `results.csv`.\n")
    return atomic_write_text(path, "\n".join(parts))
