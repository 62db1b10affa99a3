"""What tests (and benchmarks) share: the repository root, the tiny mechanics config, composing real configs
into a temporary folder, reading a run's metrics.json, and a clean environment for subprocesses."""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig

from transferlab.config.compose import compose_config  # noqa: F401 - the tests' way to compose a run
from transferlab.config.setup import CONFIG_DIR, setup_environment  # noqa: F401 - CONFIG_DIR for config tests

setup_environment()

ROOT = Path(__file__).resolve().parents[1]

# Mechanics tests: a tiny timm model, random weights, scikit-learn's digits at 32px, one epoch.
TINY = [
    "model.name=test_efficientnet",
    "model.weights=none",
    "data=digits",
    "data.image_size=32",
    "data.train_size=300",
    "data.val_size=50",
    "data.batch_size=32",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "logger=none",
    "callbacks.rich_progress_bar=null",
]


def read_metrics(run) -> dict:
    """The metrics.json of a run: ``run`` is its folder or its composed config."""
    folder = Path(run.paths.output_dir) if isinstance(run, DictConfig) else Path(run)
    return json.loads((folder / "metrics.json").read_text())


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI run in a test: no W&B state or full Hydra tracebacks from the test process,
    one torch thread (tests may run beside each other on 2 cores), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB") and k != "HYDRA_FULL_ERROR"}
    return env | {"OMP_NUM_THREADS": "1"} | extra
