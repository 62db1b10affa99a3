"""The backbone factory: any timm architecture, with a new head for the target classes and chosen weights."""

from __future__ import annotations

import logging

import timm
import torch
from torch import nn

from transferlab.models.weights import load_weights
from transferlab.utils.errors import TransferlabError, suggest

log = logging.getLogger(__name__)


def classifier_name(net: nn.Module) -> str:
    """Dotted name of the network's classification head (timm records it in ``pretrained_cfg``)."""
    return net.pretrained_cfg.get("classifier", "classifier")


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
) -> nn.Module:
    """Create timm model ``name`` with a new ``num_classes`` head and load ``weights`` into its body.

    ``net.weights_id`` identifies the weights for feature caches. Names starting with ``blip`` build
    BLIP's vision encoder through transformers instead (``transferlab.models.blip``).
    """
    if name.startswith("blip"):
        from transferlab.models.blip import build_blip_network

        return build_blip_network(name, num_classes, weights, drop_rate=drop_rate, **kwargs)  # a ViT: no NHWC
    if not timm.is_model(name):
        raise TransferlabError(
            f"Unknown timm model '{name}'.{suggest(name, timm.list_models())} See timm.list_models()."
        )
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
    net.weights_id = load_weights(net, weights, name, classifier_name(net))
    if channels_last:
        # NHWC: about 2x faster inference and 1.2x faster training for convnets on CPU (benchmarks/), faster on GPU too.
        net = net.to(memory_format=torch.channels_last)
    net.channels_last = channels_last
    return net
