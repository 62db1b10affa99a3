"""Loggers of our own: a CSV logger that appends when a run resumes (Lightning's deletes the previous metrics.csv),
and W&B and MLflow loggers that cannot stop a run, each with its tracker's policy (``TrackedRun`` hooks)."""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

import hydra
from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, open_dict

from transferlab.utils.io import sqlite_path
from transferlab.utils.tracking import TrackedRun, job_sweep_group, previous_run_id, remember_run_id, wandb_offline

log = logging.getLogger(__name__)


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Keep the existing file and its columns: a resumed run adds rows after the old ones.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))


# Checked against Lightning 2.6: ExperimentWriter._check_log_dir_exists still deletes an existing metrics.csv,
# so a resumed run would lose the epochs before the kill (tests/test_resume.py fails with the stock logger).
class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose metrics.csv survives a resume: new rows are appended, old ones kept."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer, created on first use."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


_MLFLOW_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")  # MLflow keys: alphanumerics, _ - . / and spaces (no ':' on Windows)


def mlflow_params(params: dict) -> dict[str, str]:
    """Flat params as MLflow accepts them: keys cleaned of characters it rejects and cut to its key length,
    values as strings cut to its value length (6,000 characters; 500 on old servers: those cut it themselves)."""
    try:
        from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH
    except ImportError:  # older MLflow: its documented limits
        MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH = 250, 500
    clean: dict[str, str] = {}
    for key, value in params.items():
        key = _MLFLOW_BAD_KEY_CHARS.sub("_", str(key)).strip("/")  # '/a' or 'a//b' would be read as paths
        key = re.sub("/{2,}", "/", key).replace("..", "__")[:MAX_ENTITY_KEY_LENGTH]
        if key:
            clean.setdefault(key, str(value)[:MAX_PARAM_VAL_LENGTH])
    return clean


class SafeWandbLogger(TrackedRun, WandbLogger):
    """Lightning's ``WandbLogger`` for ``logger=wandb``, with W&B's policy here:

    - offline without credentials (the saved config then says ``offline: true``), with one line saying where the
      run is and how to upload it; online, a failed start falls back to offline;
    - a sweep's jobs share one group (experiment + sweep folder), and a resumed run continues its W&B run.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Lightning always passes anonymous=None to wandb.init, and W&B (0.31) then prints "The anonymous setting
        # has no effect" on every run: leave the key out when the user did not set it (Lightning 2.6's _wandb_init).
        if self._wandb_init.get("anonymous", False) is None:
            del self._wandb_init["anonymous"]

    @classmethod
    def start_kwargs(cls, conf: DictConfig, run_cfg: DictConfig | None) -> dict:
        """The sweep's group, a resumed run's id, and offline mode when there are no credentials."""
        kwargs = {}
        group = job_sweep_group(run_cfg)
        if group:
            kwargs["group"] = group
        previous = previous_run_id(run_cfg, "wandb")
        if previous:
            kwargs.update(id=previous, resume="allow")
        if wandb_offline():
            os.environ["WANDB_MODE"] = "offline"
            kwargs["offline"] = True
            if conf.get("offline") is not True:
                with open_dict(conf):
                    conf.offline = True  # the printed and saved config says what runs
        os.environ.setdefault("WANDB_SILENT", "true")
        if conf.get("save_dir"):  # W&B looks for the git root from here and warns when it does not exist yet
            Path(conf.save_dir).mkdir(parents=True, exist_ok=True)
        return kwargs

    def start(self, run_cfg: DictConfig | None) -> None:
        """Start the W&B run, keep its id for a resume, and say where an offline run is."""
        _ = self.experiment
        remember_run_id(run_cfg, "wandb", self.version)
        if self._offline:
            try:
                run_dir = Path(self.experiment.dir).parent  # <save_dir>/wandb/offline-run-<time>-<id>/files -> the run
            except Exception:  # noqa: BLE001 - the hint must never fail a run
                run_dir = Path("logs/wandb/offline-run-*")
            log.warning(
                "W&B is offline (no API key found): the run is in %s; upload it with `wandb sync %s`.", run_dir, run_dir
            )

    def log_summary(self, metrics: dict) -> None:
        """The final metrics as the W&B run's summary."""
        self.experiment.summary.update({k: v for k, v in metrics.items() if isinstance(v, int | float | str)})

    @classmethod
    def fallback(cls, conf: DictConfig, run_cfg: DictConfig | None):
        """An online start that failed (no network, a bad key) runs offline instead; None when that fails too."""
        if conf.get("offline") is True or wandb_offline():
            return None
        try:
            os.environ["WANDB_MODE"] = "offline"
            logger = hydra.utils.instantiate(conf, offline=True)
            _ = logger.experiment
        except Exception:  # noqa: BLE001 - a dashboard must never take a run down
            return None
        log.warning("W&B fell back to offline mode; sync later with `wandb sync`.")
        return logger


class SafeMLFlowLogger(TrackedRun, MLFlowLogger):
    """Lightning's ``MLFlowLogger`` that never stops training, for ``logger=mlflow``.

    - Creates the folder of a ``sqlite:///`` tracking store (SQLite cannot) and falls back to the task name
      when no experiment name is set.
    - Logs the config within MLflow's limits (:func:`mlflow_params`); on a resumed run, params already logged
      keep their values (MLflow refuses to change a param) and only new ones are added.
    - ``run_id`` of a run this store does not know starts a new run instead of failing; a known one is reopened.
    - After any MLflow error it warns once and logs nothing more: the run goes on with its other loggers.
    - A sweep's runs carry the tag ``sweep=<experiment>-<sweep folder>``; a resumed run continues its MLflow run.
    """

    @classmethod
    def start_kwargs(cls, conf: DictConfig, run_cfg: DictConfig | None) -> dict:
        """The sweep tag and a resumed run's id."""
        kwargs = {}
        group = job_sweep_group(run_cfg)
        if group:  # filter a sweep's runs in MLflow with tags.sweep = '<group>'
            kwargs["tags"] = {**(conf.get("tags") or {}), "sweep": group}
        previous = previous_run_id(run_cfg, "mlflow")
        if previous:
            kwargs["run_id"] = previous
        return kwargs

    def start(self, run_cfg: DictConfig | None) -> None:
        """Start (or reopen) the MLflow run and keep its id for a resume."""
        _ = self.experiment
        remember_run_id(run_cfg, "mlflow", self.run_id)

    def log_summary(self, metrics: dict) -> None:
        """The metrics.json numbers as MLflow metrics."""
        self.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})

    def __init__(self, experiment_name: str | None = None, default_experiment_name: str = "transferlab", **kwargs):
        db = sqlite_path(kwargs.get("tracking_uri"))
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(experiment_name=experiment_name or default_experiment_name, **kwargs)
        self._broken = False
        if self._run_id is not None:
            try:
                self._mlflow_client.get_run(self._run_id)
                self._mlflow_client.update_run(self._run_id, status="RUNNING")  # resumed: it runs again
            except Exception:  # noqa: BLE001 - e.g. the store was replaced: a new run is better than none
                log.info("MLflow run %s is not in %s; starting a new run.", self._run_id, self._tracking_uri)
                self._run_id = None

    def _safely(self, fn, *args, **kwargs):
        if self._broken:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - a tracker must never take a training run down
            self._broken = True
            log.warning("MLflow failed (%s: %s); the run goes on without MLflow.", type(e).__name__, e)
            return None

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        """Log the (flattened) params within MLflow's limits, never changing one a resumed run already has."""
        from mlflow.entities import Param

        def log_new() -> None:
            params_ = mlflow_params(_flatten_dict(_convert_params(params)))
            logged = self.experiment.get_run(self.run_id).data.params
            changed = sorted(k for k, v in params_.items() if k in logged and logged[k] != v)
            if changed:
                log.warning("MLflow keeps the first value of params it already has: %s", ", ".join(changed[:5]))
            todo = [Param(k, v) for k, v in params_.items() if k not in logged]
            for i in range(0, len(todo), 100):  # MLflow's batch limit
                self.experiment.log_batch(run_id=self.run_id, params=todo[i : i + 100], **self._log_batch_kwargs)

        self._safely(log_new)

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        """Lightning's ``log_metrics``, safely."""
        self._safely(super().log_metrics, metrics, step)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Lightning's ``finalize`` (marks the run finished or failed), safely."""
        self._safely(super().finalize, status)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        """Lightning's checkpoint upload (``log_model``), safely."""
        self._safely(super().after_save_checkpoint, checkpoint_callback)
