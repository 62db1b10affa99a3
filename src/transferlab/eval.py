"""Evaluate a checkpoint: ``python -m transferlab.eval ckpt_path=PATH``.

Model and data are rebuilt from the run config stored in the checkpoint, so the test metrics
reproduce the training run's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from transferlab.build import trainer_config
from transferlab.checkpoints import read_checkpoint, rebuild, run_config
from transferlab.config.setup import CONFIG_DIR, setup_environment
from transferlab.predictions import save_predictions
from transferlab.utils.io import atomic_write_json
from transferlab.utils.task import task_wrapper

log = logging.getLogger(__name__)
setup_environment()


@task_wrapper
def evaluate(cfg: DictConfig) -> dict:
    """Test the checkpoint on its run's test split and write metrics.json into this eval run's dir."""
    checkpoint = read_checkpoint(cfg.ckpt_path)
    out_dir = Path(cfg.paths.output_dir)
    train_cfg = run_config(checkpoint, data_root=cfg.get("data_root"), output_dir=str(out_dir))
    with open_dict(train_cfg):
        train_cfg.trainer.threads = cfg.trainer.get("threads")  # this machine's choice, not the training run's
    module, datamodule = rebuild(checkpoint, train_cfg, load_weights=False)  # applies the threads first
    trainer = hydra.utils.instantiate(trainer_config(cfg), callbacks=[], enable_checkpointing=False)
    results = trainer.test(module, datamodule=datamodule, ckpt_path=str(cfg.ckpt_path))[0]
    metrics = {**results, "ckpt_path": str(Path(cfg.ckpt_path).resolve()), "status": "ok"}
    save_predictions(out_dir, module.test_predictions, test_set=train_cfg.data.name)
    atomic_write_json(out_dir / "metrics.json", metrics)
    log.info("test/acc=%.4f -> %s", metrics.get("test/acc", float("nan")), out_dir / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Console entry point."""
    return evaluate(cfg)


if __name__ == "__main__":
    main()
