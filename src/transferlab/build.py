"""Turn a composed config into the three pieces of a run: datamodule, strategy module and trainer.

Shared by train, eval and export so a checkpoint's stored config rebuilds exactly what trained.
"""

from __future__ import annotations

import logging

import hydra
import timm
from hydra.errors import InstantiationException
from lightning import LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.models.backbone import build_network
from transferlab.strategies.base import TransferModule
from transferlab.utils.errors import TransferlabError, suggest
from transferlab.utils.instantiate import instantiate_callbacks, instantiate_loggers

log = logging.getLogger(__name__)

_MODEL_ONLY_KEYS = ("family", "compile", "name", "weights", "input_size", "mean", "std")


def _instantiate(cfg: DictConfig, **kwargs):
    """``hydra.utils.instantiate`` that lets our own bad-input errors through unwrapped."""
    try:
        return hydra.utils.instantiate(cfg, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, TransferlabError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def model_input_config(model_cfg: DictConfig) -> dict:
    """Input size, mean and std the model expects, from timm's pretrained config (or the model config)."""
    name = model_cfg.name
    if name.startswith("blip"):
        return {
            "input_size": (3, model_cfg.image_size, model_cfg.image_size),
            "mean": tuple(model_cfg.mean),
            "std": tuple(model_cfg.std),
            "interpolation": "bicubic",
        }
    if not timm.is_model(name):
        raise TransferlabError(
            f"Unknown timm model '{name}'.{suggest(name, timm.list_models())} See timm.list_models()."
        )
    pretrained = timm.get_pretrained_cfg(name)
    cfg = pretrained.to_dict() if pretrained is not None else {}
    img_size = model_cfg.get("img_size")  # a ViT built for another size (+model.img_size=N) must get N-pixel images
    if img_size:
        cfg["input_size"] = (3, img_size, img_size) if isinstance(img_size, int) else (3, *img_size)
    return {
        "input_size": tuple(model_cfg.get("input_size") or cfg.get("input_size", (3, 224, 224))),
        "mean": tuple(model_cfg.get("mean") or cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)),
        "std": tuple(model_cfg.get("std") or cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)),
        "interpolation": model_cfg.get("interpolation") or cfg.get("interpolation", "bilinear"),
    }


def build_datamodule(cfg: DictConfig) -> LightningDataModule:
    """The configured DataModule, told the model's input size (unless data.image_size is set), mean and std."""
    spec = model_input_config(cfg.model)
    image_size = cfg.data.get("image_size") or spec["input_size"][-1]
    return _instantiate(
        cfg.data,
        image_size=image_size,
        mean=list(spec["mean"]),
        std=list(spec["std"]),
        interpolation=spec["interpolation"],
        _convert_="all",
    )


def build_module(cfg: DictConfig, num_classes: int) -> TransferModule:
    """The strategy's LightningModule around a freshly built backbone with a ``num_classes`` head."""
    model_kwargs = {
        k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k not in _MODEL_ONLY_KEYS
    }
    net = build_network(cfg.model.name, num_classes, weights=str(cfg.model.weights), **model_kwargs)
    strategy_cfg = cfg.strategy.copy()
    with open_dict(strategy_cfg):
        strategy_cfg.pop("name", None)
    module = _instantiate(strategy_cfg, net=net, num_classes=num_classes, _convert_="all")
    if cfg.model.get("compile"):
        # In-place Module.compile keeps parameter names (and so checkpoints) unchanged, unlike torch.compile(net).
        module.net.compile()
    return module


def build_trainer(cfg: DictConfig, with_loggers: bool = True) -> Trainer:
    """The configured Lightning Trainer with its callbacks and (optionally) loggers."""
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"), cfg) if with_loggers else []
    if not loggers:  # Lightning refuses an LR monitor with nothing to log to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
