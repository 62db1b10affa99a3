"""The backbone factory: any timm architecture, with a new head for the target classes and chosen weights."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import timm
import torch
from omegaconf import DictConfig
from torch import nn

from transferlab.models.weights import load_weights
from transferlab.utils.errors import TransferlabError, suggest

log = logging.getLogger(__name__)


def classifier_name(net: nn.Module) -> str:
    """Dotted name of the network's classification head (timm records it in ``pretrained_cfg``)."""
    return net.pretrained_cfg.get("classifier", "classifier")


@dataclass(frozen=True)
class BackboneFacts:
    """What the strategies and the feature cache need to know about a built network, in one record.

    ``weights_id`` names the weights for feature caches and slim checkpoints; it ends in ``:none`` for random
    weights, which no source can rebuild.
    """

    head_name: str
    feature_dim: int
    weights_id: str
    architecture: str
    channels_last: bool = False

    @classmethod
    def of(cls, net: nn.Module, weights_id: str | None = None, channels_last: bool = False) -> BackboneFacts:
        """The facts of a timm-shaped ``net``; without ``weights_id`` its weights count as random."""
        architecture = net.pretrained_cfg.get("architecture") or type(net).__name__
        # timm's pooled (pre-logits) width: head_hidden_size where a head conv widens it (MobileNetV3)
        width = getattr(net, "head_hidden_size", None) or net.num_features
        return cls(classifier_name(net), int(width), weights_id or f"{architecture}:none", architecture, channels_last)

    @property
    def rebuildable(self) -> bool:
        """Whether the pretrained weights can be rebuilt from their source (anything but random weights)."""
        return not self.weights_id.endswith(":none")


@dataclass(frozen=True)
class Backbone:
    """A freshly built network with a new head, and its facts."""

    net: nn.Module
    facts: BackboneFacts


def is_blip(name: str) -> bool:
    """Whether model ``name`` is BLIP's vision encoder (built through transformers, not timm)."""
    return name.startswith("blip")


def model_input_config(model_cfg: DictConfig) -> dict:
    """Input size, mean, std and interpolation the model expects: timm's data config resolved from the model's
    pretrained config (before the network exists: the datamodule is built first), with the model config's own
    ``input_size``/``img_size``/``mean``/``std``/``interpolation`` taking precedence."""
    name = model_cfg.name
    if is_blip(name):
        return {
            "input_size": (3, model_cfg.image_size, model_cfg.image_size),
            "mean": tuple(model_cfg.mean),
            "std": tuple(model_cfg.std),
            "interpolation": "bicubic",
        }
    check_timm_model(name)
    pretrained = timm.get_pretrained_cfg(name)
    given = {**(model_cfg.get("timm_kwargs") or {}), **model_cfg}  # a ViT built for N px (img_size) gets N-px images
    args = {k: given[k] for k in ("input_size", "img_size", "mean", "std", "interpolation") if given.get(k)}
    data = timm.data.resolve_data_config(args, pretrained_cfg=pretrained.to_dict() if pretrained else {})
    return {k: data[k] for k in ("input_size", "mean", "std", "interpolation")}


def takes_img_size(name: str) -> bool:
    """Whether timm builds ``name`` as a VisionTransformer (ViT, DeiT), whose constructor takes ``img_size``."""
    return (
        not is_blip(name)
        and timm.is_model(name)
        and timm.models.is_model_in_modules(name, ["vision_transformer", "deit"])
    )


def check_timm_model(name: str) -> None:
    """One line for a model name timm does not know, with the closest names it does."""
    if not timm.is_model(name):
        raise TransferlabError(
            f"Unknown timm model '{name}'.{suggest(name, timm.list_models())} See timm.list_models()."
        )


def patch_size(net: nn.Module) -> int | None:
    """The side of the square patches a vision transformer cuts its input into (timm ViT/DeiT, BLIP); None for
    convnets, which take any size."""
    from transferlab.models.blip import BlipVisionClassifier  # torch only: transformers loads on use

    if isinstance(net, timm.models.vision_transformer.VisionTransformer):
        return int(net.patch_embed.patch_size[0])
    if isinstance(net, BlipVisionClassifier):
        return int(net.vision_model.config.patch_size)
    return None


def check_image_size(net: nn.Module, image_size: int | None) -> None:
    """Refuse an input size a transformer's patches do not tile: its last rows and columns would be dropped silently
    (timm's patch embedding is a stride-``patch`` convolution)."""
    patch = patch_size(net)
    if not image_size or not patch or image_size % patch == 0:
        return
    lower, upper = max(patch, image_size - image_size % patch), image_size - image_size % patch + patch
    raise TransferlabError(
        f"data.image_size={image_size} is not a multiple of the model's patch size {patch}: the patch embedding would "
        f"use {image_size // patch}x{image_size // patch} patches and silently drop the last {image_size % patch} "
        f"pixel rows and columns. Use data.image_size={lower} or {upper}."
    )


def build_network(
    name: str,
    num_classes: int,
    weights: str = "none",
    drop_rate: float = 0.0,
    channels_last: bool = False,
    **kwargs,
) -> Backbone:
    """Create timm model ``name`` with a new ``num_classes`` head, load ``weights`` into its body, and record its facts.

    Names starting with ``blip`` build BLIP's vision encoder through transformers instead (``transferlab.models.blip``).
    """
    if is_blip(name):
        from transferlab.models.blip import build_blip_network

        net, weights_id = build_blip_network(name, num_classes, weights, drop_rate=drop_rate, **kwargs)
        return Backbone(net, BackboneFacts.of(net, weights_id))  # a ViT: one patch conv, NHWC does not pay
    check_timm_model(name)
    try:
        net = timm.create_model(
            name, pretrained=weights == "hub", num_classes=num_classes, drop_rate=drop_rate, **kwargs
        )
    except (OSError, RuntimeError, ValueError) as e:
        if weights == "hub":
            raise TransferlabError(
                f"Could not fetch hub weights for '{name}' ({type(e).__name__}: offline?). Go online, or use model.weights=<file> or none."
            ) from e
        raise
    weights_id = load_weights(net, weights, name, classifier_name(net))
    if channels_last:
        # NHWC: about 2x faster inference and 1.2x faster training for convnets on CPU (benchmarks/), faster on GPU too.
        net = net.to(memory_format=torch.channels_last)
    return Backbone(net, BackboneFacts.of(net, weights_id, channels_last))
