"""Pytest fixtures: the tiny config factory and made-up data (shared helpers live in tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from tests.helpers import TINY, compose_config


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
