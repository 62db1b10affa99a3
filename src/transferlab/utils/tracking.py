"""What run trackers (W&B, MLflow) share: the hooks a tracking logger offers, and the W&B and sweep facts they need.

``TrackedRun`` is the contract: ``instantiate_loggers`` asks a logger class that has it for its start-up arguments
and starts its run at once; the run's end hands it the summary metrics. The loggers live in
``transferlab.lightning.loggers``; nothing here imports Lightning.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from transferlab.utils.io import atomic_write_text
from transferlab.utils.task import is_multirun


class TrackedRun:
    """Hooks of a logger that tracks runs on a dashboard; the defaults do nothing."""

    @classmethod
    def start_kwargs(cls, conf: DictConfig, run_cfg: DictConfig | None) -> dict:
        """Constructor arguments added to ``conf`` for this run (a sweep's group, a resumed run's id)."""
        return {}

    def start(self, run_cfg: DictConfig | None) -> None:
        """Start the tracked run now, so a failure shows at set-up and not mid-training."""

    def log_summary(self, metrics: dict) -> None:
        """Record the run's final numbers (what metrics.json holds)."""

    @classmethod
    def fallback(cls, conf: DictConfig, run_cfg: DictConfig | None):
        """A logger to use instead when this one failed to start (W&B: offline), or None."""
        return None


def _wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_offline() -> bool:
    """Whether W&B runs offline here: no credentials, or ``WANDB_MODE=offline``."""
    return not _wandb_has_credentials() or os.environ.get("WANDB_MODE") == "offline"


def wandb_settings() -> dict:
    """``wandb.init`` kwargs that keep W&B offline when there are no credentials."""
    return {"mode": "offline"} if wandb_offline() else {}


def sweep_group(cfg: DictConfig, sweep_dir) -> str:
    """The tracker group of a sweep: experiment name + the sweep folder's name (its time stamp), whatever the launcher.

    Its jobs and its report run both take it from here, so the report lands in the jobs' group.
    """
    return f"{cfg.get('experiment_name') or cfg.get('task_name')}-{Path(sweep_dir).name}"


def job_sweep_group(cfg: DictConfig | None) -> str | None:
    """This job's sweep group, or None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig

    if cfg is None or not is_multirun():
        return None
    return sweep_group(cfg, HydraConfig.get().sweep.dir)


def run_id_file(run_cfg: DictConfig | None, tracker: str) -> Path | None:
    """``<run dir>/<tracker>_run_id.txt``: a resumed run (resume=RUN_DIR, a resumed sweep job) continues that run."""
    if run_cfg is None or not run_cfg.get("paths") or not run_cfg.paths.get("output_dir"):
        return None
    return Path(run_cfg.paths.output_dir) / f"{tracker}_run_id.txt"


def previous_run_id(run_cfg: DictConfig | None, tracker: str) -> str | None:
    """The id of the tracked run this run continues, or None for a new run."""
    path = run_id_file(run_cfg, tracker)
    return path.read_text().strip() if path is not None and path.is_file() else None


def remember_run_id(run_cfg: DictConfig | None, tracker: str, run_id: str | None) -> None:
    """Keep the tracked run's id in the run folder (None: a DDP rank other than 0, which has no run)."""
    path = run_id_file(run_cfg, tracker)
    if path is not None and run_id is not None:
        atomic_write_text(path, str(run_id))
