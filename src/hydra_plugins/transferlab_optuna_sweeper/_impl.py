"""The resuming part of ``PersistentOptunaSweeper`` (imported on use: it loads Optuna)."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import optuna
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import DictConfig
from optuna.trial import TrialState

from transferlab.reporting.optuna_summary import JOB_ATTR, OWNER_ATTR, STUDY_FILE
from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import atomic_write_json, sqlite_path

log = logging.getLogger(__name__)


def _owner() -> str:
    """Who runs a trial: ``host:pid`` of the sweep process (jobs of the basic launcher run inside it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _is_orphan(trial: optuna.trial.FrozenTrial) -> bool:
    """A RUNNING trial whose sweep process (on this host) is gone: a killed sweep left it unfinished.

    Trials of other hosts, or without an owner, may belong to a live worker sharing the storage: left alone.
    """
    host, _, pid = str(trial.system_attrs.get(OWNER_ATTR, "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


class PersistentOptunaSweeperImpl(OptunaSweeperImpl):
    """The stock implementation plus: storage folder created, study pointer written for the report, orphaned
    trials re-run in place, and only the trials missing to ``n_trials`` completed ones launched."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Set up as the stock sweeper does, then read the storage URL again through the root config."""
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # `storage: sqlite:///${hydra.sweep.dir}/optuna.db` must name the folder the launcher writes into. The
        # sweep dir holds `${now:}` and `${run_id:}`, whose values are cached per config object: reading it through
        # the same root config as the launcher gives the same folder (the copy this sweeper was built from may not).
        self.storage = config.hydra.sweeper.storage

    def _configure_trials(self, trials, search_space_distributions, fixed_params):
        """The stock overrides; each trial also records its job number and the process that runs it."""
        overrides = super()._configure_trials(trials, search_space_distributions, fixed_params)
        for i, trial in enumerate(trials):
            trial.storage.set_trial_system_attr(trial._trial_id, JOB_ATTR, self.job_idx + i)
            trial.storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, _owner())
        return overrides

    def _open_storage(self) -> None:
        if self.storage is None:
            log.warning("hydra.sweeper.storage=null: this Optuna study lives in memory and cannot be resumed.")
            return
        if not isinstance(self.storage, str):
            return  # an optuna storage object: the user's own
        self.study_name = self.study_name or "transferlab"  # a persistent study needs a name to be found again
        db = sqlite_path(self.storage)
        if db is not None:
            try:
                db.parent.mkdir(parents=True, exist_ok=True)  # SQLite cannot create the folder itself
            except OSError as e:
                raise TransferlabError(
                    f"hydra.sweeper.storage={self.storage}: cannot create {db.parent} ({e.strerror})."
                ) from e
            # absolute, so the report (`python -m transferlab.report DIR`, from any folder) finds the same file
            _, sep, query = self.storage.partition("?")
            self.storage = f"sqlite:///{db.resolve()}{sep}{query}"
        atomic_write_json(
            Path(str(self.config.hydra.sweep.dir)) / STUDY_FILE,
            {"storage": self.storage, "study_name": self.study_name, "metric": self.config.get("optimized_metric")},
        )

    def _tell(self, study: optuna.Study, number: int, ret: Any) -> None:
        """Record a re-run trial's result the way the stock sweeper records its own trials."""
        try:
            value = ret.return_value  # raises the job's exception if it failed
            values = [float(value)] if len(study.directions) == 1 else [float(v) for v in value]
            study.tell(number, values=values)
        except Exception as e:  # noqa: BLE001 - as the stock sweeper: a bad return value fails the trial
            study.tell(number, state=TrialState.FAIL)
            log.warning("Failed experiment: %s", e)

    def _rerun_orphans(self, study: optuna.Study, arguments: list[str]) -> None:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        orphans = [t for t in running if _is_orphan(t)]
        for t in running:
            if t not in orphans:
                log.warning(
                    "Trial %d is RUNNING in another process (%s); not counted, not re-run.",
                    t.number,
                    t.system_attrs.get(OWNER_ATTR, "owner unknown"),
                )
        if not orphans:
            return
        self._process_searchspace_config()
        _, fixed_params = create_params_from_overrides(self._parse_sweeper_params_config() + list(arguments))
        for t in orphans:
            job = int(t.system_attrs.get(JOB_ATTR, t.number))
            study._storage.set_trial_system_attr(t._trial_id, OWNER_ATTR, _owner())
            params = {**t.params, **fixed_params}
            log.info("Trial %d was left unfinished by a stopped sweep: running it again as job %d.", t.number, job)
            (ret,) = self.launcher.launch([tuple(f"{k}={v}" for k, v in params.items())], initial_job_idx=job)
            self._tell(study, t.number, ret)

    def _fresh_sampler(self, n_existing: int) -> None:
        # A seeded sampler restarts its random stream in every process: resumed, it would propose the very
        # points the first run already tried. Offset the seed by the trials done (still reproducible).
        sampler_cfg = self.config.hydra.sweeper.get("sampler")
        if (
            n_existing
            and sampler_cfg is not None
            and not sampler_cfg.get("_partial_")
            and sampler_cfg.get("seed") is not None
        ):
            self.sampler = instantiate(sampler_cfg, seed=int(sampler_cfg.seed) + n_existing)

    def sweep(self, arguments: list[str]) -> None:
        """Open (or create) the study, finish what a stopped sweep left, then run only the missing trials.

        The stock sweeper runs ``n_trials`` *new* trials on every call, so a re-run after a kill would overshoot
        the budget (2 done + 4 more). Here ``n_trials`` is the study's total: completed trials (failed jobs count,
        they complete with the worst value) are subtracted before the stock loop runs, and the job folders go
        on numbering after the study's trials, so job N is trial N and no earlier job folder is overwritten.
        """
        try:
            return self._sweep(arguments)
        except TransferlabError as e:  # bad storage settings: one line, as the entry points print them
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            from transferlab.utils.console import print_error

            print_error(str(e))
            sys.exit(1)

    def _sweep(self, arguments: list[str]) -> None:
        self._open_storage()
        if self.storage is None:
            return super().sweep(arguments)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the stock sweeper opens it again and says so
        try:
            study = optuna.create_study(
                study_name=self.study_name, storage=self.storage, directions=self._get_directions(), load_if_exists=True
            )
        except Exception as e:  # a bad URL, an unreachable server, a file that is not a study database
            raise TransferlabError(
                f"hydra.sweeper.storage={self.storage}: cannot open the Optuna study ({type(e).__name__}: {e}). "
                "Use sqlite:///PATH (the default: the sweep folder's optuna.db) or a reachable database URL."
            ) from e
        finally:
            optuna.logging.set_verbosity(verbosity)
        self._rerun_orphans(study, arguments)
        trials = study.get_trials(deepcopy=False)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        target = self.n_trials
        self.n_trials = max(0, target - complete)
        self.job_idx = max([len(trials)] + [int(t.system_attrs.get(JOB_ATTR, -1)) + 1 for t in trials])
        if trials:
            log.info(
                "Study %s: %d of %d trials complete; running %d more (jobs from %d).",
                self.study_name,
                complete,
                target,
                self.n_trials,
                self.job_idx,
            )
        self._fresh_sampler(len(trials))
        return super().sweep(arguments)
