"""Every model config across families: each strategy runs, LoRA presets hit the right modules and merge
exactly, last_n_blocks counts the family's blocks, and features have the documented size.

Tests train real architectures with random weights (model.weights=none, no download) on 32px digits;
BLIP is shrunk through its tiny-config keys. The README's model table is checked on the meta device.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from peft import LoraConfig

from tests.helpers import TINY, compose_config
from transferlab.build import _MODEL_ONLY_KEYS, build_module
from transferlab.models.backbone import build_network, model_input_config
from transferlab.models.families import block_index, lora_preset
from transferlab.strategies import FineTuning
from transferlab.strategies.adapters import resolve_targets
from transferlab.train import train
from transferlab.utils.errors import TransferlabError

BLIP_TINY = (
    "model.hidden_size=32",
    "model.num_hidden_layers=2",
    "model.num_attention_heads=2",
    "model.intermediate_size=64",
    "model.patch_size=8",
    "model.image_size=32",
)
VIT_32 = ("+model.img_size=32",)  # timm ViTs are built for one input size


@dataclass(frozen=True)
class Spec:
    """What the README's model table says about one model config (the real, full-size architecture)."""

    config: str
    params: int  # backbone parameters, head excluded
    dim: int  # FeatureExtraction.encode output = the head's input
    blocks: int  # what unfreeze=last_n_blocks counts
    lora: frozenset[str]  # leaf names of the family preset's LoRA targets
    native: int = 224  # input size the data is resized to by default
    tiny: tuple[str, ...] = ()  # overrides that make the 32px test model
    tiny_dim: int | None = None  # when the tiny overrides change the shape (BLIP)
    tiny_blocks: int | None = None
    slow: bool = False


def _lora(*names: str) -> frozenset[str]:
    return frozenset(names)


SPECS = [
    Spec("efficientnet_lite0", 3_371_008, 1280, 7, _lora("conv_pw", "conv_pwl")),
    Spec("efficientnet_lite1", 4_135_680, 1280, 7, _lora("conv_pw", "conv_pwl"), native=240),
    Spec("efficientnet_lite2", 4_811_072, 1280, 7, _lora("conv_pw", "conv_pwl"), native=260),
    Spec("efficientnet_b0", 4_007_548, 1280, 7, _lora("conv_pw", "conv_pwl"), slow=True),
    Spec("mobilenetv3_large", 4_202_032, 1280, 7, _lora("conv_pw", "conv_pwl")),
    Spec("resnet18", 11_176_512, 512, 4, _lora("conv1", "conv2")),
    Spec("resnet50", 23_508_032, 2048, 4, _lora("conv1", "conv2", "conv3"), slow=True),
    Spec("convnext_atto", 3_374_520, 320, 4, _lora("fc1", "fc2")),
    Spec("convnext_tiny", 27_820_128, 768, 4, _lora("fc1", "fc2"), slow=True),
    Spec("vit_tiny", 5_524_416, 192, 12, _lora("qkv"), 224, VIT_32),
    Spec("vit_small", 21_665_664, 384, 12, _lora("qkv"), 224, VIT_32),
    Spec("deit_small", 21_665_664, 384, 12, _lora("qkv"), 224, VIT_32),
    Spec("vit_base", 85_798_656, 768, 12, _lora("qkv"), 224, VIT_32, slow=True),
    Spec("vit_base_in21k", 85_798_656, 768, 12, _lora("qkv"), 224, VIT_32, slow=True),
    Spec("blip_vision", 86_090_496, 768, 12, _lora("qkv", "projection"), 384, BLIP_TINY, tiny_dim=32, tiny_blocks=2),
]
BY_NAME = {s.config: s for s in SPECS}


def _param(spec: Spec, *marks) -> pytest.param:
    return pytest.param(spec, marks=[*marks, *([pytest.mark.slow] if spec.slow else [])], id=spec.config)


def _cfg(tmp_path: Path, spec: Spec, *overrides: str):
    """The tiny mechanics config (digits at 32px, CPU, no loggers) with this model config and random weights."""
    tiny = [o for o in TINY if not o.startswith("model.name=")]
    return compose_config(tmp_path, [*tiny, f"model={spec.config}", "model.weights=none", *spec.tiny, *overrides])


def _module(tmp_path: Path, spec: Spec, strategy: str, *overrides: str):
    return build_module(_cfg(tmp_path, spec, f"strategy={strategy}", *overrides), num_classes=10)


def _images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# --- (a) every strategy runs end to end -----------------------------------------------------------
@pytest.mark.parametrize("strategy", ["feature_extraction", "fine_tuning", "lora"])
@pytest.mark.parametrize("spec", [_param(s) for s in SPECS])
def test_every_strategy_runs_fast_dev_run(tmp_path, spec, strategy):
    cfg = _cfg(tmp_path, spec, f"strategy={strategy}", "debug=fdr", "data.train_size=100", "data.val_size=20")
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["model"] == cfg.model.name
    assert 0 < metrics["params/trainable"] <= metrics["params/total"]
    assert 0 <= metrics["test/acc"] <= 1


# --- (b) LoRA: the preset adapts the documented modules, and merging is exact ----------------------
@pytest.mark.parametrize("spec", [_param(s) for s in SPECS])
def test_lora_preset_targets_and_merge_is_exact(tmp_path, spec):
    lora = _module(tmp_path, spec, "lora", "strategy.r=2", "strategy.alpha=4")
    assert lora.targeted and {n.rsplit(".", 1)[-1] for n in lora.targeted} == spec.lora
    base = lora.net.get_base_model()
    for name in lora.targeted:
        layer = base.get_submodule(name).base_layer
        assert getattr(layer, "groups", 1) == 1, f"{name} is depthwise"
    with torch.no_grad():  # B starts at zero: give the adapters something to fold in
        for n, p in lora.net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    assert lora.check_merge(_images()) < 1e-4
    merged = lora.plain_network()
    assert not any("lora" in k for k in merged.state_dict())


# --- (c) last_n_blocks counts the family's blocks -----------------------------------------------------
@pytest.mark.parametrize("spec", [_param(s) for s in SPECS])
def test_last_n_blocks_counts_family_blocks(tmp_path, spec):
    ft = _module(tmp_path, spec, "fine_tuning", "strategy.unfreeze=last_n_blocks", "strategy.n_blocks=1")
    blocks = block_index(ft.net)
    count = max(blocks.values()) + 1
    assert count == (spec.tiny_blocks or spec.blocks)
    trainable = {n for n, p in ft.net.named_parameters() if p.requires_grad}
    assert {n for n, b in blocks.items() if b == count - 1} <= trainable  # the top block trains
    assert not any(n in trainable for n, b in blocks.items() if b < count - 1)  # the ones below do not
    first = next(n for n, _ in ft.net.named_parameters())
    assert first not in trainable  # nor does the stem
    with pytest.raises(TransferlabError, match=f"has {count} blocks"):
        FineTuning(ft.net, num_classes=10, unfreeze="last_n_blocks", n_blocks=count + 1)


# --- (d) feature extraction: features of the documented size feed the head -----------------------------
@pytest.mark.parametrize("spec", [_param(s) for s in SPECS])
def test_feature_extraction_features_have_documented_dim(tmp_path, spec):
    fe = _module(tmp_path, spec, "feature_extraction", "strategy.cache_features=false")
    features = fe.encode(_images())
    assert features.shape == (2, spec.tiny_dim or spec.dim)
    assert fe.head(features).shape == (2, 10)  # the head takes them as they come from the cache


# --- the README's model table, on the real architectures ---------------------------------------------
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.config)
def test_model_table_matches_real_architectures(tmp_path, spec):
    cfg = compose_config(tmp_path, [f"model={spec.config}", "model.weights=none"])
    size = model_input_config(cfg.model)["input_size"][-1]
    assert size == spec.native
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k not in _MODEL_ONLY_KEYS}
    with torch.device("meta"):  # shapes only: no memory, no compute, no download
        net = build_network(cfg.model.name, 0, weights="none", **kwargs).net
        features = net.forward_head(net.forward_features(torch.zeros(1, 3, size, size)), pre_logits=True)
    assert sum(p.numel() for p in net.parameters()) == spec.params
    assert features.shape == (1, spec.dim)
    assert max(block_index(net).values()) + 1 == spec.blocks
    targets = lora_preset(cfg.model.family)
    config = LoraConfig(target_modules=targets if isinstance(targets, str) else list(targets))
    head = net.pretrained_cfg["classifier"]
    assert {n.rsplit(".", 1)[-1] for n in resolve_targets(net, config, head)} == spec.lora


# --- BLIP: weight sources and errors --------------------------------------------------------------------
def _tiny_blip_kwargs() -> dict:
    return {k.split(".")[1].split("=")[0]: int(k.split("=")[1]) for k in BLIP_TINY}


def test_blip_looks_like_a_timm_model():
    backbone = build_network("blip_vision", num_classes=3, weights="none", **_tiny_blip_kwargs())
    net, facts = backbone.net, backbone.facts
    cfg = net.pretrained_cfg
    assert cfg["classifier"] == "head" and cfg["input_size"] == (3, 32, 32) and cfg["interpolation"] == "bicubic"
    assert net.get_classifier() is net.head and net.num_features == 32 and net.num_classes == 3
    assert facts.weights_id.endswith(":none") and not facts.rebuildable
    assert (facts.head_name, facts.feature_dim, facts.channels_last) == ("head", 32, False)
    x = torch.randn(2, 3, 48, 48)  # another size: the position grid is interpolated
    assert net(x).shape == (2, 3)
    assert net.forward_head(net.forward_features(x), pre_logits=True).shape == (2, 32)
    names = [n for n, _ in net.named_parameters()]
    assert names[0].startswith("vision_model.embeddings") and names[-1].startswith("head.")


def test_blip_loads_a_saved_folder_and_a_full_blip_state_dict(tmp_path):
    from safetensors.torch import save_file
    from transformers import BlipVisionConfig, BlipVisionModel

    tiny = _tiny_blip_kwargs()
    source = BlipVisionModel(BlipVisionConfig(**tiny, initializer_range=0.02))
    source.save_pretrained(tmp_path / "folder")
    expected = source.state_dict()

    def same(backbone) -> bool:
        state = backbone.net.vision_model.state_dict()
        return all(torch.equal(state[k], v) for k, v in expected.items())

    from_folder = build_network("blip_vision", 3, weights=str(tmp_path / "folder"))
    assert same(from_folder) and ":dir:" in from_folder.facts.weights_id

    # A full BLIP checkpoint nests the tower under vision_model. next to the text model, which is skipped.
    full = {f"vision_model.{k}": v.contiguous() for k, v in expected.items()}
    full["text_decoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(4, 4)
    save_file(full, str(tmp_path / "blip.safetensors"))
    from_file = build_network("blip_vision", 3, weights=str(tmp_path / "blip.safetensors"), **tiny)
    assert same(from_file) and ":file:" in from_file.facts.weights_id

    (tmp_path / "empty").mkdir()
    with pytest.raises(TransferlabError, match="not a save_pretrained folder"):
        build_network("blip_vision", 3, weights=str(tmp_path / "empty"))
    wrong = {k: v for k, v in tiny.items() if k != "intermediate_size"}  # a 3072-wide MLP does not fit the file
    with pytest.raises(TransferlabError, match="is .* needs"):
        build_network("blip_vision", 3, weights=str(tmp_path / "blip.safetensors"), **wrong)


@pytest.mark.parametrize(
    ("weights", "kwargs", "match"),
    [
        ("bundled", {}, "No bundled weights ship for BLIP"),
        ("hub", {"hidden_size": 32}, "hub models and saved folders bring their own shape"),
        ("/no/such/folder", {}, "no such folder or file"),
        ("none", {"depth": 2}, "Unknown BLIP model keys"),
    ],
)
def test_blip_bad_settings_fail_clearly(weights, kwargs, match):
    with pytest.raises(TransferlabError, match=match):
        build_network("blip_vision", 3, weights=weights, **kwargs)


def test_blip_hub_offline_fails_clearly(monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.BlipVisionModel, "from_pretrained", offline)
    with pytest.raises(
        TransferlabError,
        match=r"Could not load BLIP weights from Hub model Salesforce/blip-image-captioning-base \(OSError: offline\?.*none",
    ):
        build_network("blip_vision", 3, weights="hub")


def test_blip_without_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise ImportError
    with pytest.raises(TransferlabError, match=r"pip install -e \.\[blip\]"):
        build_network("blip_vision", 3, weights="none")


def test_blip_layer_decay_groups_follow_encoder_layers(tmp_path):
    ft = _module(tmp_path, BY_NAME["blip_vision"], "fine_tuning", "strategy.layer_decay=0.5")
    stem = ft.lr_for("vision_model.embeddings.patch_embedding.weight")
    layer0 = ft.lr_for("vision_model.encoder.layers.0.self_attn.qkv.weight")
    top = ft.lr_for("vision_model.post_layernorm.weight")
    assert stem < layer0 < top == pytest.approx(ft.backbone_lr)


def test_blip_lora_run_exports_weights_that_load_back(tmp_path):
    from safetensors.torch import load_file

    from transferlab.export import export

    cfg = _cfg(tmp_path, BY_NAME["blip_vision"], "strategy=lora", "data.train_size=100", "data.val_size=20")
    train(cfg)
    last = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    export(compose_config(tmp_path / "export", [f"ckpt_path={last}"], config_name="export"))
    exported = Path(cfg.paths.output_dir, "export", "model.safetensors")
    state = load_file(str(exported))
    assert not any("lora" in k for k in state) and "head.weight" in state
    net = build_network(
        "blip_vision", 10, weights=str(exported), **_tiny_blip_kwargs()
    ).net  # the merged body, new head
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items() if not k.startswith("head."))


def test_vit_full_preset_adapts_blocks_but_not_the_patch_embedding():
    with torch.device("meta"):
        net = build_network("vit_tiny_patch16_224", 0, weights="none").net
    targets = resolve_targets(net, LoraConfig(target_modules=lora_preset("vit_full")), "head")
    assert len(targets) == 4 * 12 and all(n.startswith("blocks.") for n in targets)


def test_vit_img_size_sets_the_data_size(tmp_path):
    cfg = compose_config(tmp_path, ["model=vit_tiny", "+model.img_size=96"])
    assert model_input_config(cfg.model)["input_size"] == (3, 96, 96)
