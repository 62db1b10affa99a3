"""The report's "When does each strategy win?" section for sweeps over training-set size: for each pair of arms,
the size N* where their accuracy curves cross, with its bootstrap interval (:mod:`.crossover`).

Reads job folders only. N is the number of images a job trained on (``data/train_images`` in metrics.json), or its
``data.train_size`` for jobs written before that key existed.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab.predictions import load_predictions
from transferlab.reporting.crossover import crossover, crossover_sentence


def _size(job) -> float | None:
    n = job.get("data/train_images")
    if n is not None and not pd.isna(n):
        return float(n)
    return None if job["train_size"] == "all" else float(job["train_size"])


def _curves(jobs: pd.DataFrame, sweep_dir: Path) -> dict[str, dict]:
    """Per arm, ``{N: {seed: correct or accuracy}}``."""
    curves: dict[str, dict] = {}
    for _, job in jobs.iterrows():
        n = _size(job)
        if n is None:
            continue
        predictions = load_predictions(sweep_dir / str(job["job"]))
        run = job["test/acc"] if predictions is None else predictions["pred"] == predictions["target"]
        curves.setdefault(job["label"], {}).setdefault(n, {})[job["seed"]] = run
    return curves


def _size_note(jobs: pd.DataFrame) -> list[str]:
    """A line saying why N differs from the ranking's train size, when it does (a tuned refit trains on train+val)."""
    for _, job in jobs.iterrows():
        n = _size(job)
        if n is not None and job["train_size"] != "all" and n != float(job["train_size"]):
            return [
                f"N counts the images a job trained on (`data/train_images`), not the ranking's train size: here "
                f"train size {job['train_size']} trained on {n:,.0f} (a tuned refit trains on its training and "
                f"validation images together).\n"
            ]
    return []


def crossover_table(df: pd.DataFrame, sweep_dir: str | Path, n_resamples: int = 1000) -> pd.DataFrame:
    """One row per pair of arms that ran at 2 or more common sizes: N*, its interval and the sentence."""
    ok = df[df["status"] == "ok"]
    curves = _curves(ok, Path(sweep_dir))
    rows = []
    for a, b in combinations(curves, 2):
        if len(set(curves[a]) & set(curves[b])) < 2:
            continue
        try:
            result = crossover(curves[a], curves[b], n_resamples=n_resamples)
        except ValueError:  # no seed both arms ran at some size
            continue
        rows.append({"arm_a": a, "arm_b": b, **result, "sentence": crossover_sentence(a, b, result)})
    return pd.DataFrame(rows)


def data_size_section(df: pd.DataFrame, sweep_dir: str | Path) -> str:
    """The crossover section in markdown; '' unless the sweep ran 2 or more training-set sizes."""
    if df[df["status"] == "ok"]["train_size"].nunique() < 2:
        return ""
    table = crossover_table(df, sweep_dir)
    if table.empty:
        return ""
    parts = [
        "## When does each strategy win? Crossover training-set sizes\n",
        "For each pair of arms, N* is where their mean test-accuracy curves cross, linearly interpolated on log N "
        "(N: training images per job); the interval is the percentile bootstrap of N* (resamples without a "
        "crossing in the range are left out and counted).\n",
    ]
    parts += _size_note(df[df["status"] == "ok"])
    parts += [f"- {s}" for s in table["sentence"]]
    sizes = sorted({n for ns in table["sizes"] for n in ns})
    parts += ["", "| arm a | arm b | " + " | ".join(f"N={n:,.0f}" for n in sizes) + " |",
              "|---|---|" + "---|" * len(sizes)]  # fmt: skip
    for _, row in table.iterrows():
        by_size = dict(zip(row["sizes"], np.subtract(row["acc_a"], row["acc_b"]), strict=True))
        cells = [f"{100 * by_size[n]:+.2f}" if n in by_size else "—" for n in sizes]
        parts.append(f"| {row['arm_a']} | {row['arm_b']} | " + " | ".join(cells) + " |")
    parts += ["", "Cells: mean accuracy of arm a minus arm b, in points.", ""]
    return "\n".join(parts) + "\n"
