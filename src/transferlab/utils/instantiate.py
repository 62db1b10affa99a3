"""Instantiate callbacks and loggers from their config groups; a broken logger never stops a run.

What each tracker needs at start-up (W&B offline without a key, a sweep's group, a resumed run's id) is its own
logger's business (``TrackedRun`` hooks, ``transferlab.lightning.loggers``); the loops here only call them.
"""

from __future__ import annotations

import logging
import warnings

import hydra
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from transferlab.utils.tracking import TrackedRun

log = logging.getLogger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """Every callback config that has a ``_target_`` (null entries are dropped)."""
    return [hydra.utils.instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def instantiate_loggers(cfg: DictConfig | None, run_cfg: DictConfig | None = None) -> list[Logger]:
    """Loggers from config. A tracking logger (``TrackedRun``) gets its start-up arguments and starts its run here,
    so a failure shows now; any logger that fails is skipped with one warning (or replaced by its fallback)."""
    loggers = []
    for name, conf in (cfg or {}).items():
        if conf is None or "_target_" not in conf:
            continue
        tracked = None
        try:
            cls = hydra.utils.get_class(conf._target_)
            tracked = cls if isinstance(cls, type) and issubclass(cls, TrackedRun) else None
            logger = hydra.utils.instantiate(conf, **(tracked.start_kwargs(conf, run_cfg) if tracked else {}))
            if tracked:
                logger.start(run_cfg)
            loggers.append(logger)
        except Exception as e:  # a dashboard must never take a training run down
            warnings.warn(
                f"Logger '{name}' failed to start ({type(e).__name__}: {e}); continuing without it.", stacklevel=1
            )
            fallback = tracked.fallback(conf, run_cfg) if tracked else None
            if fallback is not None:
                loggers.append(fallback)
    return loggers


def log_run_to_loggers(loggers: list[Logger], cfg: DictConfig, metrics: dict | None = None) -> None:
    """Log the flattened run config (nested keys as ``a.b.c``) and, at the end, the summary metrics to trackers."""
    from lightning.fabric.utilities.logger import _flatten_dict
    from omegaconf import OmegaConf

    for logger in loggers:
        try:
            if metrics is None:
                logger.log_hyperparams(_flatten_dict(OmegaConf.to_container(cfg, resolve=True), delimiter="."))
            elif isinstance(logger, TrackedRun):
                logger.log_summary(metrics)
        except Exception as e:  # noqa: BLE001 - logging must never end a run
            log.warning("Logger %s failed: %s", type(logger).__name__, e)
