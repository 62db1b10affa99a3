"""Run a task function the way users need: one clear line for bad input, and sweeps that survive a failed job."""

from __future__ import annotations

import functools
import gc
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from transferlab.utils.console import print_error
from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import atomic_write_json
from transferlab.utils.lifecycle import CurrentTask, job_ended, task_finished, task_started
from transferlab.utils.ranks import follower_rank

log = logging.getLogger(__name__)


def importable_module(fn: Callable) -> str | None:
    """The importable name of ``fn``'s module; under ``python -m transferlab.train`` that is the spec's name, not
    ``__main__`` (None for a script run by path)."""
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        return spec.name if spec is not None else None
    return module


def _task_name(fn: Callable) -> str:
    return f"{importable_module(fn) or fn.__module__}:{fn.__name__}"


def is_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``): the one place that asks Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def _failed_value() -> float:
    """What a failed sweep job returns: the worst value for an Optuna study (which rejects NaN and would
    stop), NaN for other sweepers. The job's metrics.json records the failure either way."""
    from hydra.core.hydra_config import HydraConfig

    direction = str(HydraConfig.get().sweeper.get("direction", "")) if HydraConfig.initialized() else ""
    if "max" in direction:
        return -math.inf
    if "min" in direction:
        return math.inf
    return math.nan


def finish_wandb() -> None:
    """Close any open W&B run, so the next job of a sweep starts its own (harmless when none is open)."""
    wandb = sys.modules.get("wandb")  # importing wandb just to find no run costs seconds
    try:
        if wandb is not None and wandb.run is not None:
            wandb.finish()
    except Exception as e:  # noqa: BLE001
        log.warning("wandb.finish() failed: %s", e)


def task_wrapper(fn: Callable[[DictConfig], dict]) -> Callable[[DictConfig], float | None]:
    """Wrap a task: run it, always close W&B, and turn failures into something the user can act on.

    - Single runs: a ``TransferlabError`` prints one line and exits 1 (``HYDRA_FULL_ERROR=1`` shows the traceback).
    - Sweeps: any failure is recorded in the job's ``metrics.json`` (status, error) and the sweep goes on;
      the job returns the worst possible value for Optuna (NaN otherwise), so the study goes on.
    Returns the config's ``optimized_metric`` for sweepers.
    """

    @functools.wraps(fn)
    def wrapped(cfg: DictConfig) -> float | None:
        task_started(CurrentTask(_task_name(fn), cfg))
        ok = False
        try:
            metrics = fn(cfg)
            ok = True
        except Exception as e:
            if follower_rank() > 0:
                # An extra DDP rank: rank 0 reports the job's error (one line, one metrics.json); repeating it here
                # would print a traceback per rank. HYDRA_FULL_ERROR=1 shows it anyway.
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                log.debug("DDP rank %d: %s: %s", follower_rank(), type(e).__name__, e)
                sys.exit(1)
            if not is_multirun():
                if isinstance(e, TransferlabError) and os.environ.get("HYDRA_FULL_ERROR") != "1":
                    print_error(str(e))
                    sys.exit(1)
                raise
            message = f"{type(e).__name__}: {e}"
            if isinstance(e, TransferlabError):  # bad input: the line says it all
                log.error("Job failed: %s", message)
            else:
                log.error("Job failed: %s\n%s", message, traceback.format_exc())
            out = _output_dir()
            if out is not None:
                atomic_write_json(out / "metrics.json", {"status": "failed", "error": message})
            return _failed_value()
        finally:
            task_finished()
            job_ended(ok)
            finish_wandb()
            if is_multirun():
                gc.collect()  # free this job's reference cycles (module <-> trainer) before the next job's fit
        value = metrics.get(cfg.get("optimized_metric") or "", None)
        return float(value) if value is not None else None

    return wrapped
