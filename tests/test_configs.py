"""Every config group option composes, and the names users type stay stable."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.conftest import compose_config
from transferlab.utils.setup import CONFIG_DIR

GROUPS = [
    "data",
    "model",
    "strategy",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "hydra",
    "experiment",
    "debug",
    "variant",
    "hparams_search",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(tmp_path, group, option):
    prefix = "+" if group == "variant" else ""
    overrides = [f"{prefix}{group}={option}"]
    if option == "imagefolder":
        overrides.append("data.root=/some/images")
    cfg = compose_config(tmp_path, overrides)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.strategy.name in ("feature_extraction", "fine_tuning", "lp_ft", "lora")


def test_unknown_group_option_is_rejected(tmp_path):
    with pytest.raises(ConfigCompositionException, match="fine_tunning"):
        compose_config(tmp_path, ["strategy=fine_tunning"])


def test_stable_user_facing_keys(tmp_path):
    cfg = compose_config(tmp_path, ["strategy=lora"])
    for key in ["data.train_size", "data.image_size", "data.batch_size", "data.num_workers", "model.weights", "seed",
                "trainer.max_epochs", "strategy.lr", "strategy.r", "strategy.alpha", "paths.cache_dir", "ckpt_path"]:  # fmt: skip
        assert OmegaConf.select(cfg, key, throw_on_missing=False, default="<absent>") != "<absent>", key
    ft = compose_config(tmp_path, ["strategy=fine_tuning"])
    assert ft.strategy.unfreeze == "all" and ft.strategy.head_lr == ft.strategy.lr
    assert cfg.model.weights == "bundled" and cfg.data.name == "fashion_mnist"
