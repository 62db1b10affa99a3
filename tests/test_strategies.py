"""Strategy mechanics on a tiny random model: what trains, LR groups, BatchNorm modes, LoRA targets and merging."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferlab.models.backbone import build_network
from transferlab.models.families import block_index
from transferlab.strategies import FeatureExtraction, FineTuning, LoRA
from transferlab.utils.errors import TransferlabError


def tiny(name: str = "test_efficientnet", **kw) -> nn.Module:
    return build_network(name, num_classes=4, weights="none", **kw).net


def trainable(module) -> set[str]:
    return {n for n, p in module.net.named_parameters() if p.requires_grad}


def test_feature_extraction_trains_head_only_and_keeps_backbone_in_eval():
    fe = FeatureExtraction(tiny(), num_classes=4)
    assert trainable(fe) and all(n.startswith("classifier.") for n in trainable(fe))
    fe.train()
    bns = [m for n, m in fe.net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert fe.head.training
    stats = [m.running_mean.clone() for m in bns]
    fe(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, bns, strict=False))
    assert fe.encode(torch.randn(2, 3, 32, 32)).shape == (2, fe.net.num_features)


def test_fine_tuning_last_n_blocks_counts_timm_blocks():
    net = tiny()
    n_blocks = max(block_index(net).values()) + 1
    ft = FineTuning(net, num_classes=4, unfreeze="last_n_blocks", n_blocks=1)
    names = trainable(ft)
    top = n_blocks - 1
    assert any(n.startswith(f"blocks.{top}.") for n in names)
    assert not any(n.startswith(f"blocks.{top - 1}.") for n in names)
    assert not any(n.startswith("conv_stem") for n in names)
    assert {"classifier.weight", "classifier.bias"} <= names
    with pytest.raises(TransferlabError, match=f"has {n_blocks} blocks"):
        FineTuning(tiny(), num_classes=4, unfreeze="last_n_blocks", n_blocks=n_blocks + 1)


def test_fine_tuning_patterns_and_bad_pattern():
    ft = FineTuning(tiny(), num_classes=4, unfreeze=[r"^bn2\.", r"conv_head"])
    assert trainable(ft) == {"conv_head.weight", "bn2.weight", "bn2.bias", "classifier.weight", "classifier.bias"}
    with pytest.raises(TransferlabError, match="match no parameter"):
        FineTuning(tiny(), num_classes=4, unfreeze=["no_such_layer"])


def test_discriminative_and_layer_decayed_lrs():
    ft = FineTuning(tiny(), num_classes=4, unfreeze="all", head_lr=1e-2, backbone_lr=1e-3, layer_decay=0.5)
    assert ft.lr_for("classifier.weight") == 1e-2
    stem, top = ft.lr_for("conv_stem.weight"), ft.lr_for("bn2.weight")
    assert top == pytest.approx(1e-3)
    assert stem < top / 4  # several layers of 0.5 decay
    groups = ft.param_groups()
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(trainable(ft))
    assert {g["lr"] for g in groups} >= {1e-2, 1e-3}
    assert all(g["weight_decay"] == 0.0 for g in groups for p in g["params"] if p.ndim <= 1)


def test_frozen_batchnorm_stays_in_eval_while_unfrozen_trains():
    ft = FineTuning(tiny(), num_classes=4, unfreeze="last_n_blocks", n_blocks=1).train()
    modes = {n: m.training for n, m in ft.net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert modes["bn1"] is False
    assert modes["bn2"] is True


def test_lora_targets_preset_and_merge_matches():
    lora = LoRA(tiny(), num_classes=4, r=4, alpha=8, family="efficientnet")
    assert lora.targeted and all(n.endswith(("conv_pw", "conv_pwl")) for n in lora.targeted)
    names = trainable(lora)
    assert names and all("lora_" in n or "modules_to_save" in n for n in names)
    # B starts at zero: perturb adapters so the merge has something to fold in
    with torch.no_grad():
        for n, p in lora.net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    x = torch.randn(3, 3, 32, 32)
    diff = lora.check_merge(x)
    assert diff < 1e-4
    merged = lora.plain_network()
    assert not any("lora" in k for k in merged.state_dict())
    assert type(merged).__name__ == "EfficientNet"


def test_lora_options_reach_peft():
    lora = LoRA(tiny(), num_classes=4, r=2, alpha=4, use_rslora=True, use_dora=True, dropout=0.1, family="efficientnet")
    config = lora.net.peft_config["default"]
    assert config.use_rslora and config.use_dora and config.r == 2 and config.lora_alpha == 4
    assert any("lora_magnitude_vector" in n for n in trainable(lora))
