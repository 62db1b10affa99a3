"""Decide what a sweep job re-run into its old folder does: skip it, resume it from last.ckpt, or run it afresh.

Hydra overwrites a job's ``.hydra/config.yaml`` before the job starts, so each job keeps its own record of the
config it ran with (``job_config.yaml``); a re-run compares the new config with that record.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import atomic_write_text

log = logging.getLogger(__name__)

RECORD = "job_config.yaml"
# Keys that do not change what a job computes: where files go, how it is logged and labelled, how it is resumed.
# Interpolations (``${paths.output_dir}/checkpoints``) are compared unresolved, so a moved sweep folder still matches.
IGNORED_KEYS = (
    "hydra",
    "paths",
    "logger",
    "tags",
    "task_name",
    "resume",
    "optimized_metric",  # read from the metrics on skip, so a new choice needs no re-run
    "callbacks.rich_progress_bar",
    "callbacks.lr_monitor",
    "strategy.knobs",  # declares which keys the preset's peft_config reads; their values are compared
)
# What a job leaves in its folder that is not a run output: Hydra's files, its (open) log, our record, earlier moves.
_KEEP = (".hydra", RECORD)


@dataclass(frozen=True)
class JobPlan:
    """What to do with one sweep job: ``action`` is ``skip``, ``resume`` or ``run``; ``reason`` says why."""

    action: str
    reason: str
    metrics: dict | None = None


def comparable_config(cfg: DictConfig | dict) -> dict:
    """The job config as compared between runs: unresolved, without ``IGNORED_KEYS``."""
    data = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    for key in IGNORED_KEYS:
        *parents, leaf = key.split(".")
        node = data
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return data


def _without_new_nulls(new: dict, old: dict) -> dict:
    """``new`` less the keys ``old`` lacks whose value is null: a key that a later transferlab added with a null
    default (``data.task``) changes nothing that the earlier run computed, so upgrading mid-sweep re-runs nothing."""
    out = {}
    for key, value in new.items():
        if key not in old and value is None:
            continue
        out[key] = (
            _without_new_nulls(value, old[key]) if isinstance(value, dict) and isinstance(old.get(key), dict) else value
        )
    return out


def _read_record(job_dir: Path) -> dict | None:
    path = job_dir / RECORD
    if not path.is_file():
        return None
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - an unreadable record means "unknown config": the job runs again
        log.warning("%s is unreadable; job %s runs again.", path, job_dir.name)
        return None


def read_metrics(job_dir: Path) -> dict | None:
    """The job's metrics.json as a dict, or None when it is missing or unreadable."""
    try:
        metrics = json.loads((job_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def last_checkpoint(run_dir: Path) -> Path:
    """Where a run keeps the checkpoint it resumes from (the path ``resume=RUN_DIR`` reads)."""
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def plan_job(job_dir: str | Path, cfg: DictConfig) -> JobPlan:
    """Skip a job whose metrics.json says ok for the same config, resume one with a last.ckpt, else run it."""
    job_dir = Path(job_dir)
    record = _read_record(job_dir)
    if record is None:
        return JobPlan("run", "no config record from an earlier run" if _leftovers(job_dir) else "new job")
    if comparable_config(record) != _without_new_nulls(comparable_config(cfg), comparable_config(record)):
        return JobPlan("run", "its config changed since the earlier run")
    metrics = read_metrics(job_dir)
    if metrics is not None and metrics.get("status") == "ok":
        return JobPlan("skip", "finished earlier with the same config", metrics)
    if last_checkpoint(job_dir).is_file():
        return JobPlan("resume", f"status {(metrics or {}).get('status', 'missing')}, has checkpoints/last.ckpt")
    return JobPlan("run", f"status {(metrics or {}).get('status', 'missing')}, no checkpoint to resume")


def _leftovers(job_dir: Path) -> list[Path]:
    return [
        p
        for p in sorted(job_dir.iterdir())
        if p.name not in _KEEP and not p.name.startswith("replaced-") and p.suffix != ".log"
    ]


def move_aside(job_dir: Path) -> Path | None:
    """Move an earlier attempt's outputs into ``replaced-<time>/`` so a fresh run neither appends to nor resumes
    them (a stale last.ckpt would also make Lightning write last-v1.ckpt); return that folder, or None if empty."""
    leftovers = _leftovers(job_dir)
    if not leftovers:
        return None
    target = job_dir / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    target.mkdir(exist_ok=True)
    for p in leftovers:
        p.rename(target / p.name)
    return target


def write_record(job_dir: Path, cfg: DictConfig) -> None:
    """Save the job's config (unresolved, as Hydra composed it) for the next re-run to compare against."""
    data = OmegaConf.to_container(cfg, resolve=False)
    data.pop("hydra", None)
    atomic_write_text(job_dir / RECORD, OmegaConf.to_yaml(OmegaConf.create(data)))


def prepare_job(job_dir: str | Path, cfg: DictConfig) -> JobPlan:
    """Plan the job in ``job_dir`` and get its folder ready: nothing for a skip, ``cfg.resume`` for a resume, a
    clean folder for a run. Logs one line saying which and why."""
    job_dir = Path(job_dir)
    if not job_dir.is_dir():
        raise TransferlabError(
            f"Sweep job folder {job_dir} does not exist. Check hydra.sweep.dir and hydra.sweep.subdir."
        )
    plan = plan_job(job_dir, cfg)
    if plan.action == "skip":
        log.info("Job %s skipped: %s (metrics.json kept).", job_dir.name, plan.reason)
        return plan
    if plan.action == "resume":
        cfg.resume = str(job_dir)  # train's resume=RUN_DIR path: same folder, same checkpoint
        log.info("Job %s resumes from %s: %s.", job_dir.name, last_checkpoint(job_dir), plan.reason)
    else:
        moved = move_aside(job_dir)
        note = f"; earlier outputs moved to {moved}" if moved else ""
        log.info("Job %s runs: %s%s.", job_dir.name, plan.reason, note)
    write_record(job_dir, cfg)
    return plan
