"""The run summary every run writes to metrics.json: flat keys (``test/acc``, ``time/fit_s``, ...) as listed
in the README ('Every run prints and records'), which the sweep report reads back."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.callbacks.run_stats import RunStats
from transferlab.utils.slurm import slurm_job_metrics


def _scalar(v):
    return v.item() if isinstance(v, torch.Tensor) else v


def _checkpoint_mb(trainer) -> float | None:
    cb = trainer.checkpoint_callback
    path = (cb.best_model_path or cb.last_model_path) if cb else ""
    return Path(path).stat().st_size / 2**20 if path and Path(path).is_file() else None


def arm_record(cfg: DictConfig, module) -> dict:
    """What the report needs to name and group this job without importing strategies: the protocol stage and arm
    (``protocol.*``, set by protocol=tuned's sweeper) and the strategy's display label and colour family."""
    from transferlab.config.resolvers import resolve_alpha

    strategy = OmegaConf.to_container(cfg.strategy, resolve=True)
    if isinstance(strategy.get("alpha"), str) and isinstance(strategy.get("r"), int):  # "2r" shown as its number
        strategy["alpha"] = resolve_alpha(strategy["alpha"], strategy["r"])
    protocol = cfg.get("protocol") or {}
    return {
        "stage": protocol.get("stage"),
        "arm": protocol.get("arm"),
        "label": type(module).report_label(strategy),
        "family": type(module).report_family(strategy),
    }


def run_summary(cfg: DictConfig, trainer, module, datamodule, fit_metrics: dict) -> dict:
    """Final train/val metrics from fit, test metrics, parameter counts, time, memory and sizes, as one flat dict."""
    metrics = {
        k: _scalar(v) for k, v in fit_metrics.items() if k.split("/")[0] in ("train", "val") and not k.endswith("_step")
    }
    metrics.update({k: _scalar(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    metrics = {k.removesuffix("_epoch"): v for k, v in metrics.items()}
    metrics.update(module.param_counts())
    metrics.update(module.optimizer_summary())
    for cb in trainer.callbacks:
        if isinstance(cb, RunStats):
            metrics.update(cb.stats)
    # Work done in set-up (feature extraction) runs before Lightning's fit timer starts; it is fit cost all the same.
    metrics["time/fit_s"] = metrics.get("time/fit_s", 0.0) + datamodule.fit_setup_seconds
    metrics.update(datamodule.run_metrics())  # data set-up time; with a feature cache its extraction and precision
    metrics["checkpoint/size_mb"] = _checkpoint_mb(trainer)
    metrics.update(slurm_job_metrics())  # the job id and how often SLURM requeued it (resumed runs count them)
    metrics.update({
        "status": "ok",
        "strategy": cfg.strategy.get("name"),
        "model": cfg.model.name,
        "data": cfg.data.name,
        "data/train_images": datamodule.num_train_images,  # N of the data-size report's curves ("all" as a number)
        "seed": cfg.seed,
        "threads": torch.get_num_threads(),  # set by trainer.threads; timings and the last digits depend on it
        "world_size": trainer.world_size,  # DDP processes that trained the job together (1 without DDP)
        "epochs": trainer.current_epoch,
        **arm_record(cfg, module),
    })  # fmt: skip
    return metrics
