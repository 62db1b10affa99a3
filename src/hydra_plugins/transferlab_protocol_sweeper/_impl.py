"""The stages of ``protocol=tuned``: tune each arm on validation, select its best trial, refit it over seeds.

Job folders are numbered up front, so a re-run into the same ``hydra.sweep.dir`` launches the very same jobs and
the resumable job wrapper (``transferlab.sweeps``) skips the finished ones and resumes the killed ones:

- tune jobs first, trial-major: job ``t * A + a`` is trial ``t`` of arm ``a`` (A arms), so each round of trials
  (one per arm) is one contiguous batch that a parallel launcher runs side by side;
- then refit jobs, arm-major: job ``T * A + a * S + s`` is seed ``s`` of arm ``a`` (T trials, S refit seeds).

Selection reads each tune job's ``metrics.json`` (the files are the truth), so a re-run recomputes the same
selection.csv.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from transferlab.config.overrides import closest_key
from transferlab.sweeps.protocol import Trial, read_score, same_point, select_best, write_selection
from transferlab.utils.errors import TransferlabError

log = logging.getLogger(__name__)

TPE_SEED = 0  # every arm's sampler starts from this seed: a re-run proposes the same trials
# refit_on=train+val: train on the training and validation images together; with no validation left, no
# validation pass runs and the checkpoint that is tested is the final epoch's (monitor off). `++` adds or sets.
TRAIN_VAL_REFIT = (
    "data.fit_on=train+val",
    "++trainer.limit_val_batches=0",
    "++callbacks.model_checkpoint.monitor=null",
)
REFIT_ON = ("train+val", "train")


@dataclass
class Arm:
    """One arm of the comparison: its place, label, overrides and search space."""

    index: int
    label: str
    overrides: list[str]  # the arm's overrides as the basic sweeper expands them (fixed ones included)
    space: dict[str, str]  # override key (strategy.lr) -> Hydra sweep syntax (choice(1e-3, 3e-3))
    preset: dict[str, str]  # override key -> the arm's own value (its preset's point)
    grid: list[dict[str, str]] | None = None  # the whole grid when finite and small enough, else None (TPE)
    trials: list[Trial] = field(default_factory=list)


def run_protocol(sweeper, arguments: list[str]):
    """``ProtocolSweeper.sweep``: one line and exit 1 for bad input (as the entry points print it)."""
    try:
        return _Protocol(sweeper).run(arguments)
    except TransferlabError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        from transferlab.utils.console import print_error

        print_error(str(e))
        sys.exit(1)


def _quote(value: str) -> str:
    """A value as one Hydra override token (labels hold '=' and spaces)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


class _Protocol:
    def __init__(self, sweeper):
        self.sweeper = sweeper
        self.config: DictConfig = sweeper.config
        self.protocol = self.config.protocol
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))
        self.parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
        self.trials_per_arm = int(self.protocol.trials_per_arm)
        self.seeds = list(self.protocol.refit_seeds)
        self._check_protocol()

    def _check_protocol(self) -> None:
        if self.sweeper.other_keys:
            keys = ", ".join(f"hydra.sweeper.{k}" for k in self.sweeper.other_keys)
            raise TransferlabError(
                f"protocol=tuned runs its own sweeper, so {keys} (another sweeper's settings, e.g. from "
                "hparams_search=...) would be ignored. Drop hparams_search, or use protocol=preset with it."
            )
        if self.trials_per_arm < 1:
            raise TransferlabError(f"protocol.trials_per_arm={self.trials_per_arm} must be 1 or more.")
        if not self.seeds:
            raise TransferlabError("protocol.refit_seeds is empty. Give at least one seed: 'protocol.refit_seeds=[0]'.")
        if self.protocol.refit_on not in REFIT_ON:
            raise TransferlabError(
                f"protocol.refit_on={self.protocol.refit_on} is not one of {', '.join(REFIT_ON)}. "
                "Use protocol.refit_on=train+val (the VTAB rule)."
            )

    # --- arms -------------------------------------------------------------------------------------------------
    def arms(self, arguments: list[str]) -> list[Arm]:
        """The basic sweeper's jobs, each an arm, with its search space read from its own composed config."""
        params = [f"{k}={v}" for k, v in self.sweeper.params.items()] + list(arguments)
        overrides = self.parser.parse_overrides(params)
        final = {o.get_key_element(): o for o in overrides}  # a later override of a key replaces it, as in Hydra
        swept = [key for key, o in final.items() if o.is_sweep_override()]
        if any(k.lstrip("+~") == "seed" for k in swept):
            raise TransferlabError(
                "protocol=tuned: seed is swept, but the refit stage's seeds come from protocol.refit_seeds. "
                "Drop seed=... and use 'protocol.refit_seeds=[0,1,2]'."
            )
        (combos,) = BasicSweeper.split_arguments(overrides, None)
        swept_keys = {_key(k) for k in swept}
        arms = []
        for index, combo in enumerate(combos):
            label = " ".join(o.lstrip("+~") for o in combo if _key(o) in swept_keys) or "default"
            arms.append(self._arm(index, label, combo))
        return arms

    def _arm(self, index: int, label: str, combo: list[str]) -> Arm:
        cfg = self.sweeper.hydra_context.config_loader.load_sweep_config(self.config, list(combo))
        strategy = cfg.strategy
        search = OmegaConf.to_container(strategy.get("search") or {}, resolve=True)
        space, preset = {}, {}
        for key, value in search.items():
            if value is None:  # a null entry drops a key a preset inherited (bitfit: backbone_lr follows lr)
                continue
            if key == "search" or OmegaConf.select(strategy, key, default="__missing__") == "__missing__":
                choice = cfg.hydra.runtime.choices.get("strategy")
                keys = [str(k) for k in strategy if not str(k).startswith("_") and k != "search"]
                close = closest_key(key.split(".")[0], keys)
                hint = f" Did you mean strategy.{close}?" if close else f" Its keys: {', '.join(keys)}."
                raise TransferlabError(
                    f"protocol=tuned: arm '{label}' searches strategy.{key}, which strategy={choice} does not have.{hint}"
                )
            space[f"strategy.{key}"] = str(value)
            preset[f"strategy.{key}"] = str(OmegaConf.select(strategy, key))
        arm = Arm(index, label, list(combo), space, preset)
        arm.grid = self._grid(arm)
        return arm

    def _grid(self, arm: Arm) -> list[dict[str, str]] | None:
        """Every point of a finite space in the order written (first key slowest), if it fits the trials."""
        values = []
        for key, text in arm.space.items():
            override = self.parser.parse_override(f"{key}={text}")
            if not override.is_sweep_override():
                values.append([override.get_value_element_as_str()])
            elif override.is_discrete_sweep():
                values.append(list(override.sweep_string_iterator()))
            else:  # interval(...): continuous, sampled by TPE
                return None
        points = [dict(zip(arm.space, point, strict=True)) for point in itertools.product(*values)]
        return points if len(points) <= self.trials_per_arm else None

    # --- stages -----------------------------------------------------------------------------------------------
    def run(self, arguments: list[str]):
        """Tune, select, refit; write selection.csv after selection."""
        arms = self.arms(arguments)
        self.n_arms = len(arms)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        for arm in arms:
            how = f"grid of {len(arm.grid)}" if arm.grid is not None else f"TPE, {self.trials_per_arm} trials"
            log.info("Arm %d '%s': %s over %s", arm.index, arm.label, how, arm.space or "nothing (its preset)")
        self.tune(arms)
        chosen = {arm.index: select_best(arm.trials) for arm in arms}
        write_selection(self.sweep_dir, [t for arm in arms for t in arm.trials])
        for arm in arms:
            if chosen[arm.index] is None:
                log.error(
                    "Arm '%s' failed: none of its %d trials finished; it is not refit.", arm.label, len(arm.trials)
                )
        return self.refit([arm for arm in arms if chosen[arm.index] is not None], chosen)

    def _job_overrides(self, arm: Arm, values: dict[str, str], *extra: str) -> list[str]:
        fixed = [o for o in arm.overrides if _key(o) not in values]
        return [*fixed, *(f"{k}={v}" for k, v in values.items()), *extra, f"protocol.arm={_quote(arm.label)}"]

    def tune(self, arms: list[Arm]) -> None:
        """``trials_per_arm`` trials per arm (a small finite space: its whole grid), each with ``test=false``."""
        n_arms = len(arms)
        studies = {arm.index: _TpeArm(arm.space) for arm in arms if arm.grid is None}
        rounds = range(self.trials_per_arm)
        if not studies:  # every trial is known now: one batch for the whole stage
            rounds = [None]
        for number in rounds:
            jobs = []
            for t in range(self.trials_per_arm) if number is None else [number]:
                for arm in arms:
                    if arm.grid is not None and t >= len(arm.grid):
                        continue
                    values = arm.grid[t] if arm.grid is not None else studies[arm.index].ask()
                    job = t * n_arms + arm.index
                    trial = Trial(arm.label, t, job, values, preset=same_point(values, arm.preset))
                    arm.trials.append(trial)
                    overrides = self._job_overrides(arm, values, "test=false", "protocol.stage=tune")
                    jobs.append((trial.job, overrides))
            self._launch(jobs)
            launched = {job for job, _ in jobs}
            for arm in arms:
                for trial in arm.trials:
                    if trial.job in launched:
                        trial.score = read_score(self.sweep_dir / str(trial.job), str(self.protocol.select))
                        if arm.index in studies:
                            studies[arm.index].tell(trial.score)

    def refit(self, arms: list[Arm], chosen: dict[int, Trial | None]):
        """The chosen values of each arm on every refit seed, tested once per seed."""
        base = self.trials_per_arm * self.n_arms  # after every tune job's number, used or not
        extra = TRAIN_VAL_REFIT if self.protocol.refit_on == "train+val" else ()
        jobs = []
        for arm in arms:
            trial = chosen[arm.index]
            for s, seed in enumerate(self.seeds):
                overrides = self._job_overrides(arm, trial.values, f"seed={seed}", "protocol.stage=refit", *extra)
                jobs.append((base + arm.index * len(self.seeds) + s, overrides))
        return self._launch(jobs)

    def _launch(self, jobs: list[tuple[int, list[str]]]) -> list:
        """Launch ``(job number, overrides)`` pairs, one launcher batch per run of consecutive numbers."""
        returns = []
        jobs = sorted(jobs)
        for _, run in itertools.groupby(enumerate(jobs), key=lambda p: p[1][0] - p[0]):
            batch = [job for _, job in run]
            returns += self.sweeper.launcher.launch([o for _, o in batch], initial_job_idx=batch[0][0])
        return returns


class _TpeArm:
    """One arm's Optuna TPE study in memory: asked one trial per round, told its validation score."""

    def __init__(self, space: dict[str, str]):
        import optuna
        from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.keys = list(space)
        self.distributions, self.fixed = create_params_from_overrides([f"{k}={v}" for k, v in space.items()])
        self.study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=TPE_SEED))
        self.trial = None

    def ask(self) -> dict[str, str]:
        """The next trial's values as override strings, in the space's order."""
        self.trial = self.study.ask(self.distributions)
        values = {**self.trial.params, **self.fixed}
        return {k: str(values[k]) for k in self.keys}

    def tell(self, score: float | None) -> None:
        """Record the last trial's score (None: the job failed)."""
        from optuna.trial import TrialState

        if score is None:
            self.study.tell(self.trial, state=TrialState.FAIL)
        else:
            self.study.tell(self.trial, score)
