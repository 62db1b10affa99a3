"""Every config group option composes, and the names users type stay stable."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from tests.helpers import compose_config
from transferlab.config.setup import CONFIG_DIR
from transferlab.strategies import TransferModule

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
    """The options users can pick in ``group``; files starting with ``_`` are shared bases, not options."""
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(tmp_path, group, option):
    prefix = "+" if group == "variant" else ""
    overrides = [f"{prefix}{group}={option}"]
    if option == "imagefolder":
        overrides.append("data.root=/some/images")
    if option in ("vtab1k", "vtab1k_suite"):  # a suite needs its folder and a task
        overrides += ["data.root=/some/suite", "data.task=dtd"]
    cfg = compose_config(tmp_path, overrides)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    # the strategy is a preset users can name, and its class is a TransferModule
    assert cfg.strategy.name in _options("strategy")
    assert issubclass(get_class(cfg.strategy._target_), TransferModule)


def test_stable_user_facing_keys(tmp_path):
    cfg = compose_config(tmp_path, ["strategy=lora"])
    for key in ["data.train_size", "data.image_size", "data.batch_size", "data.num_workers", "model.weights", "seed",
                "trainer.max_epochs", "strategy.lr", "strategy.r", "strategy.alpha", "paths.cache_dir", "ckpt_path"]:  # fmt: skip
        assert OmegaConf.select(cfg, key, throw_on_missing=False, default="<absent>") != "<absent>", key
    ft = compose_config(tmp_path, ["strategy=fine_tuning"])
    assert ft.strategy.unfreeze == "all" and "head_lr" not in ft.strategy and ft.strategy.backbone_lr < ft.strategy.lr
    assert cfg.model.weights == "bundled" and cfg.data.name == "fashion_mnist"


@pytest.mark.parametrize("model", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
@pytest.mark.parametrize(
    ("variant", "strategy"), [("fe", "feature_extraction"), ("ft_all", "fine_tuning"), ("lora_r8", "lora")]
)
def test_backbone_ladder_jobs_compose(tmp_path, model, variant, strategy):
    # each of the sweep's 9 jobs, as the sweeper composes it
    cfg = compose_config(tmp_path, ["experiment=backbone_ladder", f"model={model}", f"+variant={variant}"])
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.model.name == f"tf_{model}" and cfg.model.weights == "bundled" and cfg.model.family == "efficientnet"
    assert cfg.strategy.name == strategy and cfg.data.name == "fashion_mnist" and cfg.seed == 0
    assert (cfg.data.train_size, cfg.data.image_size, cfg.trainer.max_epochs) == (6000, 64, 3)
    if strategy == "lora":
        assert (cfg.strategy.r, cfg.strategy.alpha) == (8, 16)
    sweep = cfg.hydra.sweeper.params
    assert sweep["model"] == "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"
    assert sweep["+variant"] == "fe,ft_all,lora_r8"


def test_bundled_models_use_their_native_input_size():
    from transferlab.models.backbone import model_input_config

    for n, size in [(0, 224), (1, 240), (2, 260)]:
        spec = model_input_config(OmegaConf.load(Path(CONFIG_DIR) / "model" / f"efficientnet_lite{n}.yaml"))
        assert spec["input_size"] == (3, size, size), n
        assert spec["mean"] == spec["std"] == (0.5, 0.5, 0.5) and spec["interpolation"] == "bicubic"


@pytest.mark.parametrize("data", ["cifar10", "cifar100", "pets", "flowers102", "imagefolder"])
def test_natural_image_datasets_get_crop_and_flip(tmp_path, data):
    # only the datasets whose files say why (garments, digits) leave the shared crop + flip recipe
    cfg = compose_config(tmp_path, [f"data={data}", "data.root=/some/images"])
    assert cfg.data.augment and cfg.data.hflip and cfg.data.min_crop_scale < 1.0


def test_garments_and_digits_keep_their_own_augmentation(tmp_path):
    fashion = compose_config(tmp_path, ["data=fashion_mnist"]).data
    digits = compose_config(tmp_path, ["data=digits"]).data
    assert (fashion.min_crop_scale, fashion.hflip, fashion.batch_size) == (1.0, True, 64)
    assert (digits.min_crop_scale, digits.hflip, digits.batch_size) == (0.8, False, 32)
