"""Per-family facts the strategies need: adapter target presets (LoRA and every other PEFT method) and where
the blocks are."""

from __future__ import annotations

import re

from torch import nn

from transferlab.utils.errors import TransferlabError

# PEFT ``target_modules`` per family. A string is a full-match regex over module names; a list
# matches name suffixes. Depthwise convs are left out on purpose: LoRA on them cannot be merged
# (EfficientNet/MobileNetV3 conv_dw, ConvNeXt conv_dw). tests/test_model_families.py checks each
# preset against its architectures.
LORA_PRESETS: dict[str, str | list[str]] = {
    # inverted residuals: the 1x1 expansion (conv_pw) and projection (conv_pwl) convs
    "efficientnet": ["conv_pw", "conv_pwl"],
    "mobilenetv3": ["conv_pw", "conv_pwl"],
    # timm ViT/DeiT fuse q, k and v into one Linear, so one adapter covers all three
    "vit": ["qkv"],
    # attention and MLP of every block; a bare "proj" suffix would also catch the patch-embedding conv
    "vit_full": r".*blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])",
    # conv1..conv3 inside the residual blocks (BasicBlock, Bottleneck); stem and downsample convs stay frozen
    "resnet": r".*layer\d+\.\d+\.conv\d",
    # the pointwise MLP of each block (Linear, or a 1x1 Conv2d where timm uses conv_mlp, e.g. convnext_atto)
    "convnext": r".*stages\.\d+\.blocks\.\d+\.mlp\.fc\d",
    # transformers' BlipAttention: fused qkv Linear and the output projection Linear
    "blip": ["qkv", "projection"],
}


# The layer types each family's preset targets, for errors that say where a method works (VeRA and
# FourierFT adapt Linear layers only). tests/test_model_families.py checks this against the models.
PRESET_LAYER_TYPES: dict[str, tuple[str, ...]] = {
    "efficientnet": ("Conv2d",),
    "mobilenetv3": ("Conv2d",),
    "vit": ("Linear",),
    "vit_full": ("Linear",),
    "resnet": ("Conv2d",),
    "convnext": ("Linear", "Conv2d"),
    "blip": ("Linear",),
}


def layer_types_by_family() -> dict[str, tuple[str, ...]]:
    """Layer types (class names) targeted by each family's preset."""
    return dict(PRESET_LAYER_TYPES)


def lora_preset(family: str) -> str | list[str]:
    """The default adapter targets of a model family (every PEFT method uses them unless told otherwise)."""
    if family not in LORA_PRESETS:
        raise TransferlabError(
            f"No adapter preset for family '{family}' (known: {', '.join(LORA_PRESETS)}). Set strategy.target_modules explicitly."
        )
    return LORA_PRESETS[family]


def block_regex(net: nn.Module) -> str:
    """The regex whose first group numbers the network's blocks, taken from timm's coarse ``group_matcher``."""
    blocks = net.group_matcher(coarse=True)["blocks"]
    if isinstance(blocks, str):
        return blocks
    return next(pattern for pattern, order in blocks if order is None)


def block_index(net: nn.Module) -> dict[str, int]:
    """Map each parameter name inside a block to its block number (0 = first block)."""
    pattern = re.compile(block_regex(net))
    found = {}
    for name, _ in net.named_parameters():
        m = pattern.match(name)
        if m:
            found[name] = int(m.group(1))
    if not found:
        raise TransferlabError(
            f"{type(net).__name__}'s group_matcher numbers no blocks. Use strategy.unfreeze=[regex, ...] instead of last_n_blocks."
        )
    ids = sorted(set(found.values()))
    dense = {b: i for i, b in enumerate(ids)}  # ResNet numbers its layers from 1
    return {name: dense[b] for name, b in found.items()}
