"""Compose real configs once per test with tiny, fast settings; fixtures for made-up data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from transferlab.utils.setup import CONFIG_DIR, setup_environment

setup_environment()

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


def compose_config(tmp_path: Path, overrides: list[str] = (), config_name: str = "train") -> DictConfig:
    """Compose ``config_name`` with ``overrides``, route every output into ``tmp_path`` and register it with Hydra."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "0"
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path):
    """Factory: the tiny mechanics config plus extra overrides."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(tmp_path, [*TINY, *overrides])

    return make


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A class-subfolder tree of real PNG files: 3 classes x 6 images of distinct colours."""
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"img_{i}.png")
    return root
