"""Backbone factory and weight sources: the bundled ImageNet weights are real, bad weights fail clearly."""

from __future__ import annotations

import pytest
import torch
from timm.data import ImageNetInfo

from transferlab.models.backbone import build_network, input_config
from transferlab.utils.errors import TransferlabError


def _top5(net, image) -> list[str]:
    cfg = input_config(net)
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
    x = torch.nn.functional.interpolate(x, size=cfg["input_size"][1:], mode="bicubic", antialias=True).clamp(0, 1)
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        top = net.eval()(x).topk(5).indices[0].tolist()
    info = ImageNetInfo()
    return [info.index_to_description(i).lower() for i in top]


def test_bundled_weights_classify_real_photos():
    from sklearn.datasets import load_sample_image

    net = build_network("tf_efficientnet_lite0", num_classes=1000, weights="bundled")
    # The new head is random, so put the packaged ImageNet head back to read ImageNet classes.
    from transferlab.models.weights import bundled_weights_path, read_state_dict

    packaged = read_state_dict(bundled_weights_path("tf_efficientnet_lite0"))
    net.classifier.load_state_dict({"weight": packaged["_fc.weight"], "bias": packaged["_fc.bias"]})
    assert input_config(net)["mean"] == (0.5, 0.5, 0.5) and input_config(net)["std"] == (0.5, 0.5, 0.5)

    temple = _top5(net, load_sample_image("china.jpg"))
    flower = _top5(net, load_sample_image("flower.jpg"))
    assert any(k in " ".join(temple) for k in ("palace", "bell cote", "church", "dome", "monastery", "castle")), temple
    assert any(k in " ".join(flower) for k in ("daisy", "bee", "pot", "sunflower", "rapeseed")), flower
    assert "daisy" in flower[0] or "daisy" in flower[1], flower


def test_bundled_weights_map_every_tensor():
    net = build_network("tf_efficientnet_lite0", num_classes=10, weights="bundled")
    ref = build_network("tf_efficientnet_lite0", num_classes=10, weights="none")
    changed = [
        k
        for k, v in net.state_dict().items()
        if not k.startswith("classifier") and not torch.equal(v, ref.state_dict()[k])
    ]
    # every float tensor of the body changed (num_batches_tracked counters may coincide)
    floats = [k for k, v in ref.state_dict().items() if not k.startswith("classifier") and v.is_floating_point()]
    assert set(floats) <= set(changed)
    assert net.classifier.out_features == 10
    assert net.weights_id.startswith("tf_efficientnet_lite0:bundled")


def test_unknown_model_suggests_close_names():
    with pytest.raises(TransferlabError, match="Did you mean: .*tf_efficientnet_lite0"):
        build_network("tf_efficientnet_lite", num_classes=10)


def test_bundled_for_other_model_is_refused():
    with pytest.raises(TransferlabError, match="No bundled weights for 'resnet18'"):
        build_network("resnet18", num_classes=10, weights="bundled")


def test_weights_file_round_trip_and_failures(tmp_path):
    from safetensors.torch import save_file

    src = build_network("test_efficientnet", num_classes=5, weights="none")
    good = tmp_path / "good.safetensors"
    save_file(src.state_dict(), str(good))
    net = build_network("test_efficientnet", num_classes=3, weights=str(good))
    assert torch.equal(net.conv_stem.weight, src.conv_stem.weight)

    with pytest.raises(TransferlabError, match="does not exist"):
        build_network("test_efficientnet", num_classes=3, weights=str(tmp_path / "missing.pth"))

    truncated = tmp_path / "truncated.pth"
    torch.save(src.state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(TransferlabError, match="corrupt or truncated"):
        build_network("test_efficientnet", num_classes=3, weights=str(truncated))

    other = tmp_path / "resnet.pth"
    torch.save(build_network("test_resnet", num_classes=3).state_dict(), other)
    with pytest.raises(TransferlabError, match="does not match test_efficientnet"):
        build_network("test_efficientnet", num_classes=3, weights=str(other))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(1), "obj": object()}, path)
    with pytest.raises(TransferlabError, match="arbitrary code"):
        build_network("test_efficientnet", num_classes=3, weights=str(path))
