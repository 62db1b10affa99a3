"""The PEFT catalogue through one generic strategy: every preset trains, saves, reloads and merges; a new method
is one YAML file; unsupported layers fail in one line; BitFit and norm tuning train what they say; old LoRA
checkpoints still load. Mechanics on tiny models with random weights (no ViT with real weights installs offline)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from peft import PeftModel
from torch import nn

from tests.helpers import ROOT, TINY, compose_config, read_metrics, subprocess_env
from transferlab.build import build_run
from transferlab.strategies import PEFT, FineTuning
from transferlab.train import train
from transferlab.utils.errors import TransferlabError

VIT = ["model=vit_tiny", "model.name=vit_tiny_patch16_224", "model.weights=none", "+model.img_size=32"]
# preset -> (extra overrides, whether PEFT can merge it into plain weights)
CONV_PRESETS = {
    "lora": [],
    "dora": [],
    "loha": [],
    "lokr": [],
    "ia3": [],
    "oft": [],
    "adalora": ["strategy.peft_config.tinit=1", "strategy.peft_config.tfinal=2", "strategy.peft_config.deltaT=1"],
}
VIT_PRESETS = {"vera": [], "ln_tuning": []}


def _images(cfg) -> torch.Tensor:
    torch.manual_seed(0)
    size = cfg.data.image_size
    return torch.randn(4, 3, size, size)


def _perturb_adapters(module: PEFT) -> None:
    """Adapters start as the identity (LoRA's B = 0, IA3's scales = 1): move them so merging has work to do."""
    with torch.no_grad():
        for name, p in module.net.named_parameters():
            if p.requires_grad and "modules_to_save" not in name:
                p.add_(0.05 * torch.randn_like(p))


def _check_preset(tmp_path, preset: str, overrides: list[str]) -> PEFT:
    """Train one tiny epoch, then: adapter folder written; save -> reload identical; merged == adapted."""
    cfg = compose_config(tmp_path, [*TINY, f"strategy={preset}", *overrides])
    train(cfg)
    metrics = read_metrics(cfg)
    assert metrics["status"] == "ok" and 0 < metrics["params/trainable_pct"] < 50
    adapter = Path(cfg.paths.output_dir) / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()

    module = build_run(cfg, trainer=False).module.eval()
    _perturb_adapters(module)
    module.save_adapter(tmp_path / "saved")
    base = copy.deepcopy(module.net).unload()  # the backbone without adapters (PEFT's own inverse)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "saved").eval()
    x = _images(cfg)
    with torch.no_grad():
        assert torch.equal(module(x), reloaded(x))
    assert module.check_merge(x, atol=1e-4) < 1e-4  # merged == adapted
    merged = module.plain_network()
    assert not any(type(m).__module__.startswith("peft") for m in merged.modules())
    return module


@pytest.mark.parametrize("preset", list(CONV_PRESETS))
def test_conv_preset_trains_saves_reloads_and_merges(tmp_path, preset):
    module = _check_preset(tmp_path, preset, CONV_PRESETS[preset])
    assert all(n.endswith(("conv_pw", "conv_pwl")) for n in module.targeted)  # the efficientnet family preset


@pytest.mark.parametrize("preset", list(VIT_PRESETS))
def test_vit_preset_trains_saves_reloads_and_merges(tmp_path, preset):
    module = _check_preset(tmp_path, preset, [*VIT, *VIT_PRESETS[preset]])
    expected = ("qkv",) if preset == "vera" else ("norm1", "norm2", "norm")
    assert module.targeted and all(n.endswith(expected) for n in module.targeted)


def test_a_new_method_is_one_yaml_file(tmp_path):
    """HRA ships with PEFT but not as a preset: a user's YAML in their own config folder trains it, no Python."""
    (tmp_path / "configs" / "strategy").mkdir(parents=True)
    (tmp_path / "configs" / "strategy" / "hra.yaml").write_text(
        "defaults:\n  - peft\n  - _self_\nname: hra\nknobs: [r]\nr: 4\npeft_config:\n  _target_: peft.HRAConfig\n  r: ${..r}\n"
    )
    out = tmp_path / "run"
    env = subprocess_env()
    proc = subprocess.run(
        [sys.executable, "-m", "transferlab.train", f"hydra.searchpath=[file://{tmp_path / 'configs'}]", *TINY, *VIT,
         "strategy=hra", f"paths.output_dir={out}", f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["strategy"] == "hra"
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "HRA" and adapter_config["r"] == 4


def test_method_on_unsupported_layers_fails_in_one_line(tmp_path):
    cfg = compose_config(tmp_path, [*TINY, "strategy=vera"])  # VeRA adapts Linear layers; EfficientNet's are 1x1 convs
    with pytest.raises(TransferlabError) as info:
        train.__wrapped__(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("Vera cannot adapt Conv2d layers (the efficientnet targets conv_pw, conv_pwl)")
    assert "vit" in message and "strategy.target_modules" in message


def test_bitfit_trains_biases_and_norm_tuning_trains_norms(tmp_path):
    bitfit = build_run(compose_config(tmp_path / "b", [*TINY, "strategy=bitfit"]), trainer=False).module
    norms = build_run(compose_config(tmp_path / "n", [*TINY, "strategy=norm_tuning"]), trainer=False).module
    assert isinstance(bitfit, FineTuning) and isinstance(norms, FineTuning)
    for module, kind in ((bitfit, "bias"), (norms, "norm")):
        body = [n for n, p in module.net.named_parameters() if p.requires_grad and not module.is_head_param(n)]
        assert body, kind
        frozen = [n for n, p in module.net.named_parameters() if not p.requires_grad]
        if kind == "bias":
            assert all(n.endswith(".bias") for n in body) and not any(n.endswith(".bias") for n in frozen)
        else:
            owners = {type(module.net.get_submodule(n.rpartition(".")[0])).__name__ for n in body}
            assert owners == {"BatchNormAct2d"}  # timm's BatchNorm (+ activation) in test_efficientnet
            assert any(n.endswith(".weight") for n in body)  # scales too, not only shifts
    # BatchNorm layers whose affine parameters train also update their statistics (the fine-tuning policy)
    bitfit.train()
    assert all(m.training for m in bitfit.net.modules() if isinstance(m, nn.BatchNorm2d))
    # The head trains at its own LR; the presets give the body the same LR
    groups = {g["lr"] for g in bitfit.param_groups()}
    assert groups == {bitfit.head_lr}


def test_adalora_reallocates_its_rank_budget_during_training(tmp_path):
    overrides = ["strategy.peft_config.tinit=1", "strategy.peft_config.tfinal=2", "strategy.peft_config.deltaT=1"]
    cfg = compose_config(tmp_path, [*TINY, "strategy=adalora", "strategy.r=2", *overrides])
    run = build_run(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    tuner = run.module.net.base_model
    config = tuner.peft_config["default"]
    assert config.total_step == run.trainer.global_step  # the callback told AdaLoRA the real step count
    # ranks were pruned from init_r (12) towards target_r (2): masked singular values are exactly zero
    kept = sum(int((p != 0).sum()) for n, p in run.module.net.named_parameters() if "lora_E" in n)
    total = sum(p.numel() for n, p in run.module.net.named_parameters() if "lora_E" in n)
    assert config.rank_pattern and kept < total


def test_adalora_schedule_longer_than_the_run_fails_clearly(tmp_path):
    cfg = compose_config(tmp_path, [*TINY, "strategy=adalora"])  # tinit 20 + tfinal 50 > 10 steps
    with pytest.raises(TransferlabError, match="AdaLoRA needs tinit < total steps - tfinal"):
        train.__wrapped__(cfg)


# --- LoRA runs written before strategy=lora became a PEFT preset -----------------------------------
OLD = ROOT / "tests" / "fixtures" / "lora_v0"  # written by commit 48de76f's code (strategies.LoRA, r=2, alpha=4)


def test_old_lora_checkpoint_still_evaluates_to_its_accuracy(tmp_path):
    from transferlab.eval import evaluate

    cfg = compose_config(tmp_path, [f"ckpt_path={OLD / 'best.ckpt'}", "trainer=cpu"], config_name="eval")
    evaluate(cfg)
    got = json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())
    assert got["test/acc"] == pytest.approx(json.loads((OLD / "metrics.json").read_text())["test/acc"], abs=1e-6)


def test_old_lora_checkpoint_loads_into_the_new_preset(tmp_path):
    """Today's ``strategy=lora`` builds the same parameter names, so an old checkpoint fits it tensor for tensor."""
    from transferlab.checkpoints import read_checkpoint

    checkpoint = read_checkpoint(OLD / "best.ckpt")
    cfg = compose_config(tmp_path, [*TINY, "strategy=lora", "strategy.r=2", "strategy.alpha=4"])
    module = build_run(cfg, trainer=False).module
    module.on_load_checkpoint(checkpoint)  # same strategy (LoRA == Lora) and every trainable tensor present
    missing, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=False)
    assert not unexpected and not [k for k in missing if "lora_" in k or "modules_to_save" in k]
    # and the old adapter folder is a plain PEFT adapter: it loads onto the backbone with the same outputs
    reloaded = PeftModel.from_pretrained(copy.deepcopy(module.net).unload(), OLD / "adapter").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(module.eval()(x), reloaded(x), atol=1e-6)


# --- reports: labels and colour families come from the strategy --------------------------------------
def test_report_labels_and_families_come_from_the_strategy(tmp_path):
    # Training asks the strategy's hooks (run_summary.arm_record) and writes the answers into metrics.json;
    # reporting reads them from there and imports no strategy.
    import yaml
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from transferlab.reporting.collect import collect_results

    presets = sorted(p.stem for p in (ROOT / "configs" / "strategy").glob("*.yaml"))
    labels, families = {}, {}
    for preset in presets:
        cfg = compose_config(tmp_path / preset, [*TINY, f"strategy={preset}"])
        strategy = OmegaConf.to_container(cfg.strategy)  # as .hydra/config.yaml holds it: unresolved
        labels[preset] = get_class(strategy["_target_"]).report_label(strategy)
        families[preset] = get_class(strategy["_target_"]).report_family(strategy)
    assert len(set(labels.values())) == len(presets)  # every preset is its own arm
    assert labels["lora"] == "lora r=8 a=16" and labels["dora"] == "dora r=8 a=16" and labels["ia3"] == "ia3"
    assert labels["fine_tuning"] == "fine_tuning (all)" and labels["bitfit"] == "bitfit"
    assert {families[p] for p in ("lora", "loha", "ia3", "adalora", "vera", "ln_tuning")} == {"adapters"}
    assert (families["feature_extraction"], families["fine_tuning"], families["bitfit"]) == (
        "frozen", "fine-tuning", "selective",
    )  # fmt: skip
    old = tmp_path / "old_sweep" / "0"  # a job folder from before metrics.json named its arm: the preset's name
    (old / ".hydra").mkdir(parents=True)
    (old / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"strategy": {"_target_": "gone.Module", "name": "custom"}})
    )
    (old / "metrics.json").write_text('{"status": "ok", "test/acc": 0.5}')
    row = collect_results(old.parent).iloc[0]
    assert (row["label"], row["family"]) == ("custom", "other")


@pytest.mark.parametrize("preset", ["loha", "oft"])
def test_export_merges_other_methods_into_plain_timm(tmp_path, preset):
    from safetensors.torch import load_file

    from transferlab.export import export

    cfg = compose_config(tmp_path, [*TINY, f"strategy={preset}"])
    train(cfg)
    last = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    export(compose_config(tmp_path / "export", [f"ckpt_path={last}"], config_name="export"))
    state = load_file(str(Path(cfg.paths.output_dir, "export", "model.safetensors")))
    timm.create_model("test_efficientnet", num_classes=10).load_state_dict(state)  # strict: plain timm keys only
    info = json.loads(Path(cfg.paths.output_dir, "export", "model.json").read_text())
    assert info["max_abs_diff"] < 1e-4 and info["strategy"] == {"loha": "LoHa", "oft": "OFT"}[preset]


def test_a_method_that_cannot_merge_says_so_in_one_line(tmp_path, monkeypatch):
    module = build_run(compose_config(tmp_path, [*TINY, "strategy=loha"]), trainer=False).module

    def refuse(self, *args, **kwargs):
        raise NotImplementedError("Merging is not supported for this adapter")

    monkeypatch.setattr(type(module.net.base_model), "merge_and_unload", refuse)  # the LoHa tuner's
    with pytest.raises(TransferlabError) as info:
        module.plain_network()
    assert str(info.value).startswith("LoHa adapters cannot be merged into a plain model (Merging is not supported")
    assert "adapter/" in str(info.value) and "\n" not in str(info.value)


def test_a_checkpoint_config_from_before_declared_knobs_still_rebuilds(tmp_path):
    """Runs saved before presets declared ``knobs`` stored r, alpha, ... flat and resolved: eval/export rebuild them."""
    from omegaconf import OmegaConf

    from transferlab.build import strategy_arguments
    from transferlab.checkpoints import run_config

    stored = OmegaConf.to_container(compose_config(tmp_path, [*TINY, "strategy=lora", "strategy.r=4"]), resolve=False)
    stored.pop("hydra")
    stored = OmegaConf.to_container(OmegaConf.create(stored), resolve=True)
    del stored["strategy"]["knobs"]
    arguments = strategy_arguments(run_config({"transferlab": {"config": stored}}))
    assert "r" not in arguments and arguments["peft_config"]["r"] == 4
