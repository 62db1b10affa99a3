"""A sweep's arms with their statistics: accuracy intervals, paired tests against the best arm, the tie group.

Arms are compared within one task of a suite and one training-set size (a sweep over sizes asks "which strategy
wins at this size"), so each (task, size) is its own family of tests for Holm's correction.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transferlab.predictions import load_predictions
from transferlab.reporting.collect import COMPARISON, summarize
from transferlab.reporting.stats import arms_from_jobs, compare_arms

ALPHA = 0.05
NO_PREDICTIONS_HINT = (
    "Jobs without predictions.npz (written by transferlab before per-example predictions existed) get intervals "
    "from their seeds only and no paired test: re-run them, or for each run `python -m transferlab.eval "
    "ckpt_path=<job>/checkpoints/<the best-*.ckpt its test used> hydra.run.dir=<new folder>` and copy that "
    "folder's predictions.npz into <job>/ (not the eval's metrics.json, which would replace the job's own)."
)


def compare_sweep(df: pd.DataFrame, sweep_dir: str | Path, alpha: float = ALPHA) -> pd.DataFrame:
    """``summarize(df)`` (means over seeds) joined with :func:`compare_arms` per task and training-set size, best
    first.

    Adds ``acc``, ``low``, ``high``, ``interval``, ``rank``, ``p_value``, ``p_holm``, ``p_seeds``,
    ``p_seeds_holm``, ``tie_group`` and ``test_note`` to each arm; ``attrs`` holds alpha, the confidence level and the test's name.
    """
    summary = summarize(df)
    if summary.empty:
        return summary
    ok = df[df["status"] == "ok"]
    tables = []
    for (task, size), jobs in ok.groupby(COMPARISON, sort=False):
        records = []
        for _, job in jobs.iterrows():
            predictions = load_predictions(Path(sweep_dir) / str(job["job"]))
            records.append({
                "label": job["label"],
                "seed": job["seed"],
                "test/acc": job.get("test/acc"),
                "pred": None if predictions is None else predictions["pred"],
                "target": None if predictions is None else predictions["target"],
            })  # fmt: skip
        table = compare_arms(arms_from_jobs(records), alpha=alpha)
        tables.append(table.assign(task=task, train_size=size))
    stats = pd.concat(tables, ignore_index=True)
    stats = stats.drop(columns="seeds")  # summarize counts the seeds already
    merged = summary.merge(stats, on=["label", *COMPARISON], how="left")
    order = {key: i for i, key in enumerate(ok[COMPARISON].drop_duplicates().itertuples(index=False, name=None))}
    merged["_order"] = [order[key] for key in merged[COMPARISON].itertuples(index=False, name=None)]
    merged = merged.sort_values(["_order", "rank"], ignore_index=True).drop(columns="_order")
    merged.attrs.update(tables[0].attrs)
    return merged


def untested_without_predictions(table: pd.DataFrame) -> bool:
    """Whether some arm could not be tested because its jobs lack per-example predictions."""
    return bool(table["test_note"].astype(str).str.contains("no predictions").any())
