"""The report's "Protocol" section for a ``protocol=tuned`` sweep: per arm its search space, the trials run, the
chosen values with their validation score, "preset -> tuned", and the compute its tuning cost.

Reads ``selection.csv`` (written by the protocol sweeper) and the tune jobs' rows of the sweep's results.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transferlab.reporting.collect import read_yaml

SELECTION_FILE = "selection.csv"  # in the sweep folder, written by sweeps/protocol.py: one row per tune trial

_FIXED_COLUMNS = ("arm", "trial", "score", "chosen", "preset", "job")


def read_selection(sweep_dir: str | Path) -> pd.DataFrame | None:
    """selection.csv of ``sweep_dir`` (values kept as written), or None for a sweep of another protocol."""
    path = Path(sweep_dir) / SELECTION_FILE
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def tuned_keys(selection: pd.DataFrame) -> list[str]:
    """The override keys tuned in the sweep (selection.csv's value columns), in their order there."""
    return [c for c in selection.columns if c not in _FIXED_COLUMNS]


def _values(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{k.removeprefix('strategy.')}={row[k]}" for k in keys if row[k] != "") or "preset"


def chosen_values(selection: pd.DataFrame) -> dict[str, str]:
    """Per arm, its chosen values (``lr=0.01``), for captions and tables."""
    keys = tuned_keys(selection)
    return {row["arm"]: _values(row, keys) for _, row in selection[selection["chosen"] == "true"].iterrows()}


def _score(text: str) -> str:
    return "failed" if text == "" else f"{float(text):.4f}"


def _search(sweep_dir: Path, job: str) -> dict:
    cfg = read_yaml(sweep_dir / job / ".hydra" / "config.yaml") or {}
    search = ((cfg.get("strategy") or {}).get("search")) or {}
    return {k: v for k, v in search.items() if v is not None}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def grid_edges(trials: pd.DataFrame, best: pd.Series, keys: list[str], search: dict) -> list[str]:
    """Keys on a grid (``choice``/``range``) whose chosen value is the largest or smallest of 3 or more tried
    (``"backbone_lr: top of the grid"``): the best value may lie outside the space, which should then be widened."""
    notes = []
    for key in keys:
        short = key.removeprefix("strategy.")
        tried = sorted({v for v in map(_number, trials[key]) if v is not None})
        value = _number(best[key])
        if not str(search.get(short, "")).startswith(("choice(", "range(")) or len(tried) < 3 or value is None:
            continue  # a TPE space's bounds are not among the values tried; two points have no inside
        if value in (tried[0], tried[-1]):
            notes.append(f"{short}: {'top' if value == tried[-1] else 'bottom'} of the grid")
    return notes


def protocol_section(sweep_dir: str | Path, results: pd.DataFrame, selection: pd.DataFrame) -> str:
    """The markdown section; ``results``: every job's row (``collect_results``), tune jobs included."""
    sweep_dir = Path(sweep_dir)
    keys = tuned_keys(selection)
    tune = results[results["stage"] == "tune"] if "stage" in results else results.iloc[0:0]
    cfg = (
        (read_yaml(sweep_dir / str(selection["job"].iloc[0]) / ".hydra" / "config.yaml") or {})
        if len(selection)
        else {}
    )
    protocol = cfg.get("protocol") or {}
    lines = [
        "## Protocol\n",
        f"`protocol=tuned`: each arm ran up to {protocol.get('trials_per_arm', '?')} trials on its own search space "
        "(the whole grid when it fits, in the order written; otherwise Optuna TPE with a fixed seed), with no test "
        f"pass; the trial with the highest final-epoch `{protocol.get('select', 'val/acc')}` was chosen (ties: the "
        f"first trial), refit on {protocol.get('refit_on', '?')} with seeds {protocol.get('refit_seeds', '?')} and "
        "tested once per seed. The ranking above uses the refit jobs only. Trials: `selection.csv`.\n",
        "| arm | strategy | search space | trials (ok) | scores (val) | chosen | val score | preset → tuned (val) | "
        "tuning compute (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, trials in selection.groupby("arm", sort=False):
        ok = trials[trials["score"] != ""]
        search = _search(sweep_dir, str(trials["job"].iloc[0]))
        jobs = tune[tune["job"].astype(str).isin(trials["job"])]
        label = str(jobs["label"].iloc[0]) if len(jobs) and "label" in jobs else "–"
        compute = jobs["time/fit_s"].sum() if "time/fit_s" in jobs else float("nan")
        scores = "; ".join(f"{_values(t, keys)}: {_score(t['score'])}" for _, t in trials.iterrows())
        chosen = trials[trials["chosen"] == "true"]
        preset = trials[trials["preset"] == "true"]
        if chosen.empty:
            cells = ["**failed** (no trial finished)", "–", "–"]
        else:
            best = chosen.iloc[0]
            change = "–"
            if not preset.empty:
                before = preset.iloc[0]
                same = before["trial"] == best["trial"]
                change = "preset kept" if same else (
                    f"{_values(before, keys)} ({_score(before['score'])}) → {_values(best, keys)} ({_score(best['score'])})"
                )  # fmt: skip
            edges = grid_edges(trials, best, keys, search)
            cells = [_values(best, keys) + (f" ({'; '.join(edges)})" if edges else ""), _score(best["score"]), change]
        space = ", ".join(f"{k}: {v}" for k, v in search.items()) or "none (the preset)"
        lines.append(
            f"| {arm} | {label} | {space} | {len(trials)} ({len(ok)}) | {scores} | "
            + " | ".join(cells)
            + f" | {'–' if pd.isna(compute) else f'{compute:.0f}'} |"
        )
    lines.append(
        "\n_preset → tuned_ compares validation scores, for arms whose preset point is in their space; tuning "
        "compute is the summed fit time of the arm's tune jobs. _top (bottom) of the grid_: the chosen value is the "
        "largest (smallest) of the 3 or more tried, so the best may lie outside the space: widen it to check "
        "(`strategy.search.KEY=...`, README). The tuning-curve plot shows validation score against each arm's "
        "first tuned key._\n"
    )
    return "\n".join(lines)
