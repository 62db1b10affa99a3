"""BLIP's vision encoder (Hugging Face transformers) behind the small timm interface the strategies use.

The strategies only need what timm models offer: ``pretrained_cfg``, ``num_features``,
``forward_features`` / ``forward_head(pre_logits=True)``, ``group_matcher`` and a head at a known
name. ``BlipVisionClassifier`` supplies exactly that around a ``BlipVisionModel``, so feature
extraction, fine-tuning (last N blocks, layer-wise LR decay) and LoRA work unchanged.
transformers is an optional dependency, imported only here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path

import torch
from torch import nn

from transferlab.models.weights import _fingerprint, load_checked, read_state_dict
from transferlab.utils.errors import TransferlabError

DEFAULT_REPO = "Salesforce/blip-image-captioning-base"
# BLIP was pretrained with OpenAI CLIP's normalisation, not ImageNet's.
BLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
BLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# BlipVisionConfig fields a model config may set (null = the pretrained model's value), e.g. for tiny test models.
ARCH_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size")
# Full BLIP checkpoints (captioning, ITM, VQA) keep the vision tower under this prefix, next to the text model.
_PREFIX = "vision_model."


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise TransferlabError(
            "model=blip_vision needs Hugging Face transformers. Install it with `pip install -e .[blip]`."
        ) from e
    return transformers


class BlipVisionClassifier(nn.Module):
    """A ``BlipVisionModel`` (at ``vision_model``) plus a linear ``head`` on its CLS token, shaped like a timm model.

    Parameter names start with ``vision_model.`` as in full BLIP checkpoints, so those load directly.
    """

    def __init__(self, vision_model: nn.Module, num_classes: int, name: str = "blip_vision", drop_rate: float = 0.0):
        super().__init__()
        config = vision_model.config
        self.vision_model = vision_model
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = config.hidden_size
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        size = config.image_size
        self.pretrained_cfg = {
            "architecture": name,
            "classifier": "head",
            "input_size": (3, size, size),
            "mean": BLIP_MEAN,
            "std": BLIP_STD,
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "num_classes": num_classes,
        }

    @property
    def default_cfg(self) -> dict:
        """timm's older name for ``pretrained_cfg``."""
        return self.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised token embeddings (B, 1 + patches, D); position embeddings are resized to other input sizes."""
        return self.vision_model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits from ``forward_features`` output, or with ``pre_logits`` the pooled CLS vector (B, D)."""
        # The CLS token after post_layernorm is what BLIP's own heads read. (transformers' pooler_output
        # applies post_layernorm a second time.)
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images (B, 3, H, W)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The classification head."""
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh one for ``num_classes`` (0 = none)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm-style parameter groups: embeddings, then one group per encoder layer, then the final norm."""
        return {
            "stem": r"^vision_model\.embeddings",
            "blocks": [(r"^vision_model\.encoder\.layers\.(\d+)", None), (r"^vision_model\.post_layernorm", (99999,))],
        }


@contextlib.contextmanager
def _quiet_transformers(transformers):
    # Loading the vision tower from a full BLIP checkpoint lists hundreds of unused text-model keys;
    # missing vision keys are checked by the caller instead.
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def _from_pretrained(transformers, source: str, origin: str) -> nn.Module:
    """A ``BlipVisionModel`` from a hub repo or a saved folder (a vision-only model or a full BLIP model)."""
    with _quiet_transformers(transformers):
        model, info = transformers.BlipVisionModel.from_pretrained(
            source,
            key_mapping={"^" + re.escape(_PREFIX): ""},  # full BLIP checkpoints nest the tower under vision_model.
            dtype=torch.float32,
            output_loading_info=True,
        )
    if info["missing_keys"] or info["mismatched_keys"]:
        bad = sorted(info["missing_keys"]) or [str(k) for k in info["mismatched_keys"]]
        raise TransferlabError(
            f"{origin} is not a BLIP vision model: {len(bad)} vision tensors missing or mis-shaped (e.g. {bad[:2]}). "
            "Point model.weights at a BLIP model folder or state_dict file."
        )
    return model


def _random_config(transformers, image_size: int | None, arch: dict):
    """BlipVisionConfig for random init: the base model's shape unless ``arch`` overrides it."""
    # BLIP's default initializer_range (1e-10) expects pretrained weights to overwrite it; a random
    # model needs a usable scale (ViT's 0.02), or every feature would be nearly zero.
    config = {"initializer_range": 0.02, **arch}
    if image_size:
        config["image_size"] = image_size
    return transformers.BlipVisionConfig(**config)


def _load_file(net: BlipVisionClassifier, path: Path, name: str) -> None:
    """Load a state_dict file: a bare BlipVisionModel's, a full BLIP model's, or a transferlab export's."""
    state = read_state_dict(path)
    if any(k.startswith(_PREFIX) for k in state):
        state = {k: v for k, v in state.items() if k.startswith(_PREFIX)}  # drop the text model, if any
    else:
        state = {_PREFIX + k: v for k, v in state.items()}
    load_checked(net, state, "head", name, str(path))


def _pretrained_vision(transformers, weights: str, repo: str, path: Path | None):
    """The vision tower from the hub (``weights=hub``) or a ``save_pretrained`` folder, or one line saying why not."""
    origin = f"Hub model {repo}" if weights == "hub" else f"Folder {path}"
    try:
        return _from_pretrained(transformers, repo if weights == "hub" else str(path), origin)
    except TransferlabError:
        raise
    except Exception as e:  # offline, unknown repo, interrupted download, a folder without a model
        hint = "offline? Go online, or use" if weights == "hub" else "not a save_pretrained folder? Use"
        raise TransferlabError(
            f"Could not load BLIP weights from {origin} ({type(e).__name__}: {hint} "
            "model.weights=<saved folder or .safetensors file> or none."
        ) from e


def build_blip_network(
    name: str,
    num_classes: int,
    weights: str = "hub",
    repo: str = DEFAULT_REPO,
    image_size: int | None = None,
    drop_rate: float = 0.0,
    **arch: int | None,
) -> tuple[BlipVisionClassifier, str]:
    """BLIP's vision encoder with a new ``num_classes`` head, and the id of its weights.

    ``weights``: ``hub`` (``repo`` on the Hugging Face hub), a ``save_pretrained`` folder, a state_dict
    file, or ``none`` (random init). Hub models and folders bring their own shape; otherwise
    ``image_size`` and the ``ARCH_KEYS`` in ``arch`` shape the model (default: BLIP-base). Inputs of
    other sizes than the position grid's are interpolated.
    """
    unknown = sorted(set(arch) - set(ARCH_KEYS))
    if unknown:
        raise TransferlabError(
            f"Unknown BLIP model keys {unknown}. Known: repo, image_size, drop_rate, {', '.join(ARCH_KEYS)}."
        )
    arch = {k: v for k, v in arch.items() if v is not None}
    transformers = _transformers()
    weights = str(weights)
    if weights == "bundled":
        raise TransferlabError("No bundled weights ship for BLIP. Use model.weights=hub online, a path, or none.")
    path = None if weights in ("none", "hub") else Path(weights).expanduser()
    if path is not None and not path.exists():
        raise TransferlabError(
            f"model.weights={weights}: no such folder or file. Use hub, none, a save_pretrained folder or a state_dict file."
        )
    pretrained = weights == "hub" or (path is not None and path.is_dir())  # transformers' from_pretrained
    if arch and pretrained:
        raise TransferlabError(
            f"model.{next(iter(arch))} reshapes BLIP, but hub models and saved folders bring their own shape. "
            "Leave it null, or use model.weights=none or a state_dict file of that shape."
        )

    if pretrained:
        vision = _pretrained_vision(transformers, weights, repo, path)
        weights_id = f"{name}:hub:{repo}" if weights == "hub" else f"{name}:dir:{_fingerprint(path)}"
    else:  # random init, or the base shape that a state_dict file is then loaded into
        config = _random_config(transformers, image_size, arch)
        vision = transformers.BlipVisionModel(config)
        shape = {k: v for k, v in config.to_diff_dict().items() if k != "transformers_version"}
        digest = hashlib.sha1(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:8]
        weights_id = f"{name}:{digest}:none"  # the shape is part of what random features depend on

    net = BlipVisionClassifier(vision, num_classes, name=name, drop_rate=drop_rate)
    if path is not None and path.is_file():
        _load_file(net, path, name)
        weights_id = f"{name}:file:{_fingerprint(path)}"
    return net, weights_id
