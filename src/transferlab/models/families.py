"""Per-family facts the strategies need: LoRA target presets and where the blocks are."""

from __future__ import annotations

import re

from torch import nn

# PEFT ``target_modules`` per family. A string is a full-match regex over module names; a list
# matches name suffixes. Depthwise convs are left out on purpose: LoRA on them cannot be merged.
LORA_PRESETS: dict[str, str | list[str]] = {
    "efficientnet": ["conv_pw", "conv_pwl"],
    "mobilenetv3": ["conv_pw", "conv_pwl"],
    "vit": ["qkv"],
    "vit_full": ["qkv", "proj", "fc1", "fc2"],
    "resnet": r".*layer\d+\.\d+\.conv\d",
    "convnext": r".*stages\.\d+\.blocks\.\d+\.mlp\.fc\d",
    "blip": ["qkv", "projection"],
}


def lora_preset(family: str) -> str | list[str]:
    """The default LoRA targets of a model family."""
    if family not in LORA_PRESETS:
        from transferlab.utils.errors import TransferlabError

        raise TransferlabError(
            f"No LoRA preset for family '{family}' (known: {', '.join(LORA_PRESETS)}). Set strategy.target_modules explicitly."
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
    ids = sorted(set(found.values()))
    dense = {b: i for i, b in enumerate(ids)}  # ResNet numbers its layers from 1
    return {name: dense[b] for name, b in found.items()}
