"""The records of ``protocol=tuned`` (the sweeper in ``hydra_plugins/transferlab_protocol_sweeper`` runs it): each
tune trial's validation score read from its job folder, the per-arm selection, and ``selection.csv``.

Light on purpose (no torch, no pandas): train.py imports :func:`require_multirun` before anything heavy.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from transferlab.reporting.protocol_summary import SELECTION_FILE
from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import atomic_write_text


@dataclass
class Trial:
    """One tune job of an arm: its values (override key -> value), validation score (None: failed) and job."""

    arm: str
    number: int  # the trial's place in its arm (0, 1, ...): ties go to the lower number
    job: int  # the job folder's number in the sweep
    values: dict[str, str]
    preset: bool = False  # whether these are the arm's preset values
    score: float | None = None
    chosen: bool = False


def require_multirun(cfg: DictConfig) -> None:
    """``protocol=tuned`` is a sweep of its own: a single run of it stops with one line saying to add ``-m``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    protocol = cfg.get("protocol") or {}
    if protocol.get("name") == "tuned" and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN:
        raise TransferlabError(
            "protocol=tuned tunes, selects and refits a whole sweep: add -m (python -m transferlab.train -m ...)."
        )


def read_score(job_dir: Path, metric: str) -> float | None:
    """The selection metric of a finished tune job (metrics.json's value: the final epoch's), None if it failed."""
    try:
        metrics = json.loads((Path(job_dir) / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    value = metrics.get(metric) if isinstance(metrics, dict) and metrics.get("status") == "ok" else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def select_best(trials: list[Trial]) -> Trial | None:
    """Mark and return the trial with the highest score, ties to the lowest trial number; None if all failed."""
    scored = [t for t in trials if t.score is not None]
    if not scored:
        return None
    best = max(scored, key=lambda t: (t.score, -t.number))
    for t in trials:
        t.chosen = t is best
    return best


def same_point(values: dict[str, str], preset: dict[str, str]) -> bool:
    """Whether ``values`` are the preset's (numbers compared as numbers: ``3e-3`` is ``0.003``)."""

    def same(a: str, b: str) -> bool:
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except ValueError:
            return a == b

    return values.keys() == preset.keys() and all(same(v, preset[k]) for k, v in values.items())


def write_selection(sweep_dir: Path, trials: list[Trial]) -> Path:
    """Write selection.csv atomically: ``arm``, ``trial``, one column per tuned key, ``score``, ``chosen``,
    ``preset`` and ``job`` (the job folder); an empty score is a failed trial."""
    keys = list(dict.fromkeys(k for t in trials for k in t.values))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["arm", "trial", *keys, "score", "chosen", "preset", "job"])
    for t in trials:
        score = "" if t.score is None else f"{t.score:.6g}"
        values = [t.values.get(k, "") for k in keys]
        writer.writerow([t.arm, t.number, *values, score, str(t.chosen).lower(), str(t.preset).lower(), t.job])
    return atomic_write_text(Path(sweep_dir) / SELECTION_FILE, out.getvalue())
