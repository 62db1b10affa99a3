"""The README's three recipes (add a model, a dataset, a strategy), followed step by step."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import TINY, compose_config
from transferlab.strategies import FineTuning
from transferlab.train import train


class BiasOnly(FineTuning):
    """Recipe 3's example strategy: train the head and every bias (BitFit-style), with fine-tuning's LRs."""

    def setup_trainable(self) -> None:
        for name, p in self.net.named_parameters():
            p.requires_grad = self.is_head_param(name) or name.endswith(".bias")


def _configs(tmp_path: Path, group: str, name: str, text: str) -> str:
    folder = tmp_path / "my_configs" / group
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)
    return f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]"


def _run(tmp_path, *overrides) -> dict:
    tiny = [o for o in TINY if not (o.startswith("model.name=") and any(x.startswith("model=") for x in overrides))]
    cfg = compose_config(tmp_path / "run", [*tiny, "debug=fdr", *overrides])
    train(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def test_recipe_add_a_model(tmp_path):
    search = _configs(tmp_path, "model", "my_resnet", "name: test_resnet\nfamily: resnet\nweights: none\ndrop_rate: 0.0\n"
                      "channels_last: true\ncompile: false\n")  # fmt: skip
    metrics = _run(tmp_path, search, "model=my_resnet", "strategy=lora")
    assert metrics["status"] == "ok" and metrics["model"] == "test_resnet"


def test_recipe_add_a_dataset(tmp_path, monkeypatch):
    from transferlab.data import registry
    from transferlab.data.datasets import TensorImages
    from transferlab.data.sources import SourceData

    def stripes(seed: int = 0, **_):
        """Two classes of made-up images: horizontal vs vertical stripes."""
        g = torch.Generator().manual_seed(seed)
        images = (torch.rand(80, 1, 16, 16, generator=g) * 60).to(torch.uint8)
        images[:40, :, ::4, :] = 255
        images[40:, :, :, ::4] = 255
        labels = torch.tensor([0] * 40 + [1] * 40)
        full = TensorImages(images, labels, ["horizontal", "vertical"])
        return SourceData(full, TensorImages(images[::4], labels[::4], full.classes))

    monkeypatch.setitem(registry.SOURCES, "stripes", stripes)
    search = _configs(tmp_path, "data", "stripes", "defaults:\n  - digits\n  - _self_\nname: stripes\nnum_classes: 2\n")
    metrics = _run(tmp_path, search, "data=stripes", "data.train_size=40", "data.val_size=10")
    assert metrics["status"] == "ok" and metrics["data"] == "stripes"


def test_recipe_add_a_strategy(tmp_path):
    search = _configs(tmp_path, "strategy", "bias_only", "defaults:\n  - fine_tuning\n  - _self_\n"
                      "_target_: tests.test_recipes.BiasOnly\nname: bias_only\n")  # fmt: skip
    metrics = _run(tmp_path, search, "strategy=bias_only")
    assert metrics["status"] == "ok" and 0 < metrics["params/trainable_pct"] < 10
