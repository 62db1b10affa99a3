"""Train one strategy: ``python -m transferlab.train strategy=lora strategy.r=8``.

Reads top to bottom: compose config -> data -> backbone + strategy -> trainer -> fit -> test ->
artifacts -> metrics.json. Sweeps (``-m``) run this once per job.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from transferlab.config.setup import CONFIG_DIR, setup_environment
from transferlab.sweeps import resumable
from transferlab.sweeps.protocol import require_multirun
from transferlab.sweeps.resume import last_checkpoint
from transferlab.utils.console import print_config_tree
from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import atomic_write_json
from transferlab.utils.run_info import run_info
from transferlab.utils.task import task_wrapper

log = logging.getLogger(__name__)
setup_environment()


def _resume_checkpoint(cfg: DictConfig) -> str | None:
    """``resume=RUN_DIR`` continues that run in place; ``ckpt_path`` may be a file or ``last``."""
    from transferlab.checkpoints import read_checkpoint

    if cfg.get("resume"):
        run_dir = Path(cfg.resume).expanduser().resolve()
        last = last_checkpoint(run_dir)
        if not last.is_file():
            raise TransferlabError(
                f"resume={run_dir}: no checkpoints/last.ckpt there. Point resume at a run folder that saved one."
            )
        read_checkpoint(last)  # corrupt, truncated or foreign: one line now, not Lightning's torch.load traceback
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)  # checkpoints, CSV logs and metrics.json continue in the old run dir
        return str(last)
    ckpt = cfg.get("ckpt_path")
    if ckpt and ckpt != "last" and not Path(ckpt).is_file():
        raise TransferlabError(
            f"ckpt_path={ckpt} does not exist. Give the path of a .ckpt file, or use resume=RUN_DIR."
        )
    if ckpt and ckpt != "last":
        read_checkpoint(ckpt)
    return ckpt


# The epoch seeds derived from it (data/seeds.py: seed x 1,000 + epoch) must stay within numpy's 32-bit range.
MAX_SEED = 4_000_000


def _resolve_seed(cfg: DictConfig) -> None:
    """``seed=null`` (as lightning-hydra-template allows) draws a seed and records it like a given one; a resumed run
    keeps the seed its first attempt drew (from its run_info.json), so it continues the same run."""
    if cfg.get("seed") is not None:
        seed = cfg.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise TransferlabError(f"seed={seed} must be an integer from 0 to {MAX_SEED}, or null to draw one.")
        return
    try:
        seed = (
            json.loads((Path(cfg.paths.output_dir) / "run_info.json").read_text())["seed"]
            if cfg.get("resume")
            else None
        )
    except (OSError, ValueError, KeyError):
        seed = None
    how = "kept the seed this run drew before" if seed is not None else "drew"
    seed = seed if seed is not None else secrets.randbelow(MAX_SEED + 1)
    with open_dict(cfg):
        cfg.seed = seed  # every ${seed} (data splits, augmentation, epoch seeds) reads it from here
    log.info(
        "seed=null: %s seed %d (recorded in run_info.json and metrics.json; seed=%d reproduces it).", how, seed, seed
    )


@task_wrapper
@resumable  # sweeps re-run into their folder skip/resume jobs; SIGTERM/SIGINT stop cleanly
def train(cfg: DictConfig) -> dict:
    """Fit and test the configured strategy; write metrics.json into the run dir and return the metrics."""
    require_multirun(cfg)  # protocol=tuned without -m: one line, before the heavy imports
    # torch, Lightning, timm and PEFT take ~10 s to import on 2 cores: imported here, after Hydra has composed the
    # config, so a mistyped key or value is reported in a second (tests/test_bad_input.py checks that).
    from transferlab.build import build_run
    from transferlab.lightning.limits import explain_batch_limits
    from transferlab.predictions import save_predictions
    from transferlab.run_summary import run_summary
    from transferlab.shifted_test import test_shifted_sets
    from transferlab.utils.instantiate import log_run_to_loggers

    started = time.perf_counter()
    ckpt_path = _resume_checkpoint(cfg)
    _resolve_seed(cfg)
    out_dir = Path(cfg.paths.output_dir)
    run = build_run(cfg)
    datamodule, module, trainer = run.datamodule, run.module, run.trainer
    log_run_to_loggers(trainer.loggers, cfg)
    if trainer.is_global_zero:
        print_config_tree(cfg, save_dir=out_dir)
        atomic_write_json(out_dir / "run_info.json", run_info(cfg.seed))
        log.info(module.trainable_summary())

    with explain_batch_limits(trainer, datamodule):  # a trainer.limit_*_batches fraction that keeps no batch
        if cfg.train:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        fit_metrics = dict(trainer.callback_metrics)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if cfg.test:
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None)

    metrics = run_summary(cfg, trainer, module, datamodule, fit_metrics)
    # The whole job, data loading to test: what a sweep pays per job (interpreter start-up excluded).
    metrics["time/run_s"] = time.perf_counter() - started
    if trainer.is_global_zero:
        metrics.update(module.save_artifacts(out_dir))  # e.g. the best adapter: trainer.test loaded the best checkpoint
        if module.test_predictions is not None:  # per-example, for the report's paired tests
            save_predictions(out_dir, module.test_predictions, test_set=cfg.data.name)
    if cfg.test:  # data.test_shifts: the same best checkpoint on each shifted test set, after the clean files
        metrics.update(test_shifted_sets(trainer, module, datamodule, best, out_dir, test_set=cfg.data.name))
    log_run_to_loggers(trainer.loggers, cfg, metrics)
    if trainer.is_global_zero:
        atomic_write_json(out_dir / "metrics.json", metrics)
        log.info("Wrote %s (test/acc=%s)", out_dir / "metrics.json", metrics.get("test/acc"))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point."""
    return train(cfg)


if __name__ == "__main__":
    main()
