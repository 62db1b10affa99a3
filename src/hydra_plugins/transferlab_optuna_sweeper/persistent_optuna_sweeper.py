"""``PersistentOptunaSweeper``: the stock Optuna sweeper, with a study that survives a kill and resumes.

Kept light on purpose: Hydra imports every module under ``hydra_plugins`` at start-up; Optuna loads on use.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra_plugins.hydra_optuna_sweeper.optuna_sweeper as stock
from omegaconf import DictConfig

# Alembic, imported with Optuna (already when Hydra builds the sampler, before this sweeper exists), logs one
# "setup plugin ..." INFO line per plugin into the sweep's log: noise. Its warnings still show.
logging.getLogger("alembic").setLevel(logging.WARNING)


class PersistentOptunaSweeper(stock.OptunaSweeper):
    """Hydra's ``OptunaSweeper`` whose study lives in SQLite (by default under the sweep folder) and whose re-run
    into the same folder runs only the trials still missing to ``n_trials`` completed ones, re-running in place
    any trial that a killed sweep left unfinished. Same config keys as the stock sweeper."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        search_space: DictConfig | None,
        custom_search_space: str | None,
        params: DictConfig | None,
    ) -> None:
        from ._impl import PersistentOptunaSweeperImpl

        self.sweeper = PersistentOptunaSweeperImpl(
            sampler,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            search_space,
            custom_search_space,
            params,
        )
