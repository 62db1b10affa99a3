"""Gather one row per job of a sweep: its overrides, strategy settings, metrics, status and error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml

from transferlab.utils.errors import TransferlabError

# Arms are compared within one task of a suite and one training-set size: each is its own family of tests.
COMPARISON = ["task", "train_size"]


def read_yaml(path: Path):
    """A YAML file's content, or None when it is missing or unreadable."""
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        return None


def _fmt(v):
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _read_metrics(job_dir: Path) -> dict:
    path = job_dir / "metrics.json"
    if not path.is_file():
        return {"status": "missing", "error": "no metrics.json (still running, or killed)"}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"status": "failed", "error": "metrics.json is unreadable"}


def _job_row(job_dir: Path) -> dict:
    cfg = read_yaml(job_dir / ".hydra" / "config.yaml") or {}
    overrides = read_yaml(job_dir / ".hydra" / "overrides.yaml") or []
    metrics = _read_metrics(job_dir)
    strategy = cfg.get("strategy") or {}
    row = {
        "job": job_dir.name,
        "overrides": " ".join(o for o in overrides if not o.startswith("hydra")),
        "strategy": strategy.get("name"),
        "r": strategy.get("r"),
        "alpha": strategy.get("alpha"),
        "seed": cfg.get("seed"),
        "train_size": (cfg.get("data") or {}).get("train_size"),
        "task": (cfg.get("data") or {}).get("task") or "",  # a suite's task ("" for a single dataset)
    }
    if isinstance(row["alpha"], str) and isinstance(row["r"], int):
        from transferlab.config.resolvers import resolve_alpha

        row["alpha"] = resolve_alpha(row["alpha"], row["r"])
    if "label" not in metrics or "family" not in metrics:  # a job folder from before metrics.json named its arm
        row["label"] = str(strategy.get("name") or "unknown strategy")
        row["family"] = "other"
    row.update({k: v for k, v in metrics.items() if k not in ("strategy", "seed")})
    row["task"] = metrics.get("data/task") or row["task"]  # what training wrote first, its config otherwise
    protocol = cfg.get("protocol") or {}
    for key in ("stage", "arm"):  # a failed job's metrics.json holds only the error: its config says the rest
        if row.get(key) is None and protocol.get(key) is not None:
            row[key] = protocol[key]
    row.setdefault("error", "")
    row["model"] = row.get("model") or (cfg.get("model") or {}).get("name")
    if strategy.get("cache_features") and row.get("status") == "ok":
        # A warm cache skips extraction, so that job's fit time leaves out what a first run pays.
        row["feature_cache"] = "cold" if "time/feature_extraction_s" in metrics else "warm"
    return row


def collect_results(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per job folder of ``sweep_dir`` (numbered subfolders, as Hydra makes them)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise TransferlabError(f"Sweep folder {sweep_dir} does not exist. Pass a folder under logs/multiruns/.")
    jobs = sorted((d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    if not jobs:
        raise TransferlabError(f"{sweep_dir} holds no job folders (0/, 1/, ...). Pass the folder of a `-m` run.")
    df = pd.DataFrame([_job_row(d) for d in jobs])
    df["error"] = df["error"].fillna("")
    df["train_size"] = df["train_size"].map(
        lambda v: "all" if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
    )
    df["strategy_label"] = df["label"]  # the strategy setting alone, e.g. one line per strategy across backbones
    if df["model"].nunique() > 1:  # a sweep over backbones: the same strategy on two models is two arms
        df["label"] = df["label"] + " · " + df["model"].fillna("?").str.removeprefix("tf_")
    # Tune trials of one arm differ on purpose (one LR each): they are not arms, so they keep their arm's label.
    tune = df["stage"].eq("tune") if "stage" in df else pd.Series(False, index=df.index)
    return pd.concat([_distinct_arms(df[~tune]), df[tune]]).sort_index()


def _distinct_arms(df: pd.DataFrame) -> pd.DataFrame:
    """Give jobs that share a label, size and seed but differ in other settings (``strategy.lr=1e-3,1e-4``) their
    own arms, named by their overrides: seeds of one arm must be replications, not other settings."""
    key = ["label", *COMPARISON, "seed"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        settings = df.loc[dup, "overrides"].map(lambda o: " ".join(x for x in o.split() if not x.startswith("seed=")))
        df.loc[dup, "label"] = df.loc[dup, "label"] + " [" + settings + "]"
    dup = df.duplicated(key, keep=False)  # the same settings twice (a job run again): tell them apart by job
    df.loc[dup, "label"] = df.loc[dup, "label"] + " (job " + df.loc[dup, "job"].astype(str) + ")"
    return df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (label, task, train_size) for the successful jobs, sorted by mean test/acc."""
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return ok
    metrics = [c for c in ok.columns if "/" in c and pd.api.types.is_numeric_dtype(ok[c])]
    grouped = ok.groupby(["label", *COMPARISON], sort=False)
    mean = grouped[metrics].mean()
    std = grouped[metrics].std(ddof=1).fillna(0.0).add_suffix(" std")
    out = mean.join(std)
    out["seeds"] = grouped.size()
    for key in ("strategy", "family", "r", "alpha", "model"):
        out[key] = grouped[key].first()
    if "feature_cache" in ok:  # "warm" when any seed's fit time left out the extraction
        out["feature_cache"] = grouped["feature_cache"].agg(lambda v: "warm" if (v == "warm").any() else v.iloc[0])
    return out.reset_index().sort_values("test/acc", ascending=False, ignore_index=True)
