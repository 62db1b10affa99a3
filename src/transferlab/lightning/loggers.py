"""Loggers of our own: a CSV logger that appends when a run resumes (Lightning's deletes the previous metrics.csv),
and an MLflow logger that cannot stop a run."""

from __future__ import annotations

import csv
import logging
import re

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from transferlab.utils.io import sqlite_path

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


class SafeMLFlowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` that never stops training, for ``logger=mlflow``.

    - Creates the folder of a ``sqlite:///`` tracking store (SQLite cannot) and falls back to the task name
      when no experiment name is set.
    - Logs the config within MLflow's limits (:func:`mlflow_params`); on a resumed run, params already logged
      keep their values (MLflow refuses to change a param) and only new ones are added.
    - ``run_id`` of a run this store does not know starts a new run instead of failing; a known one is reopened.
    - After any MLflow error it warns once and logs nothing more: the run goes on with its other loggers.
    """

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
