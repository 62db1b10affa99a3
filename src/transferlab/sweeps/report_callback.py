"""The Hydra callback that writes a sweep's report when the multirun ends, failures and interruptions included."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from transferlab.sweeps.interrupt import exit_if_interrupted

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    """Hydra callback: build the report when a multirun ends (failures included), then log it to W&B if in use."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        self._report(config, sweep_dir)
        exit_if_interrupted(sweep_dir)  # a SIGTERM after the last job started still ends the process non-zero

    @staticmethod
    def _report(config: DictConfig, sweep_dir: Path) -> None:
        try:
            from transferlab.reporting.build import build_report  # pandas and matplotlib load on use

            report = build_report(sweep_dir)
        except Exception as e:  # noqa: BLE001 - the sweep's own results are already safe on disk
            log.error(
                "Could not build the report for %s: %s. Rebuild it with `python -m transferlab.report %s`.",
                sweep_dir,
                e,
                sweep_dir,
            )
            return
        if "wandb" in (config.get("logger") or {}):
            from transferlab.reporting.wandb_summary import log_report_to_wandb

            log_report_to_wandb(config, sweep_dir, report)
