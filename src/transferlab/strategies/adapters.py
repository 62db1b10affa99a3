"""Any HF PEFT method as a strategy: the ``peft.*Config`` comes from YAML, the targets from the model family.

A new method is one file in configs/strategy/ (``peft_config: {_target_: peft.HRAConfig, r: 8}``): this
module knows no method by name. PEFT does the model surgery, freezing, saving and merging.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning import Callback
from peft import PeftConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer, check_target_module_exists
from peft.utils import ModulesToSaveWrapper
from torch import nn

from transferlab.models.backbone import BackboneFacts
from transferlab.models.families import layer_types_by_family, lora_preset
from transferlab.strategies.base import TransferModule
from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import atomic_write_dir

log = logging.getLogger(__name__)


def method_name(config: PeftConfig) -> str:
    """The method's short name from its config class: ``LoHa`` for ``LoHaConfig``."""
    return type(config).__name__.removesuffix("Config")


def resolve_targets(net: nn.Module, config: PeftConfig, head: str) -> list[str]:
    """The module names ``config.target_modules`` selects outside the head, or a clear error naming candidates."""
    matched = [
        n for n, _ in net.named_modules() if n and not n.startswith(head) and check_target_module_exists(config, n)
    ]
    if not matched:
        leaves = sorted(
            {n.rsplit(".", 1)[-1] for n, m in net.named_modules() if isinstance(m, nn.Linear | nn.Conv2d) and n}
        )
        raise TransferlabError(
            f"strategy.target_modules={config.target_modules} matches no module. Candidates: {', '.join(leaves[:12])}."
        )
    return matched


def _settings_changed(peft_net: nn.Module, config: PeftConfig) -> dict[str, list]:
    """The per-layer values PEFT chose where they differ from the config's (e.g. OFT's block size, adjusted to a
    divisor of each layer's width), from its layers' own records (``other_param_names``, per adapter)."""
    used: dict[str, set] = {}
    for module in peft_net.modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        for name in module.other_param_names:
            asked, per_adapter = getattr(config, name, None), getattr(module, name, None)
            if (
                not isinstance(asked, int | float)
                or isinstance(asked, bool)
                or not asked
                or not isinstance(per_adapter, dict)
            ):
                continue  # 0 means "derive it" (OFT's r), and non-numbers (dropout modules) are not settings
            value = per_adapter.get("default")
            if isinstance(value, int | float) and value != asked:
                used.setdefault(name, set()).add(value)
    return {name: sorted(values) for name, values in used.items()}


def _unsupported_layer_error(net: nn.Module, config: PeftConfig, targets: list[str], family: str, cause: Exception):
    """One line for 'this method cannot adapt these layers': the method, the layer type, and where it works."""
    found = sorted({type(net.get_submodule(n)).__name__ for n in targets})
    elsewhere = {f for f, kinds in layer_types_by_family().items() if not set(kinds) & set(found)}
    where = f"model families {', '.join(sorted(elsewhere))} (e.g. model=vit_tiny)" if elsewhere else "other layers"
    leaves = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in targets})[:4])
    return TransferlabError(
        f"{method_name(config)} cannot adapt {'/'.join(found)} layers (the {family} targets {leaves}): "
        f"use it on {where}, or set strategy.target_modules to layers it supports. PEFT says: {str(cause).splitlines()[0]}"
    )


class PEFT(TransferModule):
    """Adapters of any PEFT method (``peft_config``, a ``peft.*Config``) plus the new head, which trains as
    PEFT's ``modules_to_save``.

    ``target_modules`` (or the config's own) default to the model family's preset. ``callbacks`` are
    Lightning callbacks a method needs during training (AdaLoRA's budget update), given in its YAML.
    Other keys are the shared loop's (``lr``, ``scheduler``, ...). A preset's own knobs (``strategy.r``,
    ``strategy.alpha``, ..., declared in its ``knobs`` list) never reach this class: its ``peft_config`` reads them
    by interpolation, and ``build.strategy_arguments`` leaves them out.
    Checkpoints hold only the trainable tensors when the base weights can be rebuilt from their source.
    """

    needs_pretrained_backbone = True  # adapters are small changes to frozen weights

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        facts: BackboneFacts | None = None,
        peft_config: PeftConfig | None = None,
        target_modules: str | Sequence[str] | None = None,
        family: str = "efficientnet",
        callbacks: Sequence[Callback] = (),
        **kwargs,
    ):
        if not isinstance(peft_config, PeftConfig):
            raise TransferlabError(
                f"strategy.peft_config must build a PEFT config (got {type(peft_config).__name__}). "
                "Example: peft_config: {_target_: peft.LoHaConfig, r: 8}."
            )
        facts = facts or BackboneFacts.of(net)
        head = facts.head_name
        config = self._with_defaults(peft_config, target_modules, family, head)
        self.targeted = resolve_targets(net, config, head)
        self.method = method_name(config)
        try:
            with warnings.catch_warnings(record=True) as said:  # PEFT warns when it changes a setting per layer
                warnings.simplefilter("always")
                peft_net = get_peft_model(net, config)
        except (ValueError, TypeError) as e:
            if "is not supported" in str(e) or "No layers types compatible" in str(e):
                raise _unsupported_layer_error(net, config, self.targeted, family, e) from None
            raise TransferlabError(f"{self.method} rejected its settings: {str(e).splitlines()[0]}") from None
        self.settings_used = _settings_changed(peft_net, config) if said else {}
        if self.settings_used:
            used = "; ".join(
                f"{k}={getattr(config, k)} became {', '.join(map(str, v))}" for k, v in self.settings_used.items()
            )
            log.warning(
                "%s did not use the settings asked for on every layer: %s (PEFT: %s). metrics.json records the values "
                "used as %s.", self.method, used, str(said[0].message).splitlines()[0],
                ", ".join(f"peft/used/{k}" for k in self.settings_used),
            )  # fmt: skip
        self.peft_config = config
        self.extra_callbacks = list(callbacks)
        # The head that trains is PEFT's copy of it (modules_to_save).
        facts = dataclasses.replace(facts, head_name=f"base_model.model.{head}.modules_to_save.default")
        super().__init__(peft_net, num_classes, facts=facts, **kwargs)
        self.slim_checkpoints = True  # adapters and head only: that is the storage saving of these methods
        self.strict_loading = False  # on_load_checkpoint checks that every trainable tensor is present
        log.info("%s on %d modules, e.g. %s", self.method, len(self.targeted), ", ".join(self.targeted[:4]))

    @staticmethod
    def _with_defaults(config: PeftConfig, target_modules, family: str, head: str) -> PeftConfig:
        # dataclasses.replace re-runs the config's own validation (__post_init__) on the completed config.
        changes = {}
        if target_modules is not None or config.target_modules is None:
            targets = target_modules if target_modules is not None else lora_preset(family)
            changes["target_modules"] = targets if isinstance(targets, str) else list(targets)
        if not getattr(config, "modules_to_save", None):
            changes["modules_to_save"] = [head]
        for field in dataclasses.fields(config):  # PEFT accepts a dropout of 1 (all adapter input dropped)
            value = getattr(config, field.name)
            if field.name.endswith("dropout") and isinstance(value, float) and not 0 <= value < 1:
                raise TransferlabError(
                    f"{method_name(config)} {field.name}={value} must be in [0, 1) (strategy.dropout in the presets)."
                )
        try:
            return dataclasses.replace(config, **changes) if changes else copy.deepcopy(config)
        except (ValueError, TypeError) as e:
            raise TransferlabError(f"{method_name(config)} rejected its settings: {str(e).splitlines()[0]}") from None

    def setup_trainable(self) -> None:
        """PEFT already froze the base model and marked adapters and head trainable."""

    @property
    def strategy_id(self) -> str:
        """The method (``Lora``, ``LoHa``, ...): a LoHa checkpoint cannot resume a LoRA run."""
        return self.method

    def configure_callbacks(self):
        """The callbacks the method's YAML asked for (e.g. AdaLoRA's rank budget)."""
        return self.extra_callbacks

    # --- artifacts ----------------------------------------------------------------------------
    def save_artifacts(self, out_dir: Path) -> dict[str, float]:
        """The adapters and head as a PEFT adapter folder ``<run>/adapter/`` (safetensors; the best checkpoint's),
        and its size: what sharing one backbone across tasks costs per task."""
        folder = self.save_adapter(Path(out_dir) / "adapter")
        used = {f"peft/used/{k}": ",".join(map(str, v)) for k, v in self.settings_used.items()}
        return {"adapter/size_mb": sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20, **used}

    def save_adapter(self, directory: str | Path) -> Path:
        """Save the adapters and head as a PEFT adapter folder (safetensors), atomically."""
        return atomic_write_dir(directory, lambda tmp: self.net.save_pretrained(str(tmp), safe_serialization=True))

    def plain_network(self) -> nn.Module:
        """A plain timm model with the adapters folded into its weights (this module is left untouched)."""
        peft_net = copy.deepcopy(self.net)
        try:
            merged = peft_net.merge_and_unload()
        except (NotImplementedError, ValueError, TypeError, AttributeError) as e:
            raise TransferlabError(
                f"{self.method} adapters cannot be merged into a plain model ({str(e).splitlines()[0]}). "
                "Use the run's adapter/ folder with peft.PeftModel.from_pretrained instead."
            ) from None
        for name, module in list(merged.named_modules()):
            if isinstance(module, ModulesToSaveWrapper):  # some tuners (LN tuning) unload but leave the head wrapped
                merged.set_submodule(name, next(iter(module.modules_to_save.values())))
        return merged

    def trainable_summary(self) -> str:
        """One line: adapted modules and trainable share."""
        return f"{super().trainable_summary()} on {len(self.targeted)} {self.method}-adapted modules"

    @torch.no_grad()
    def check_merge(self, x: torch.Tensor, atol: float = 1e-4) -> float:
        """Max abs difference between adapted and merged outputs on ``x``; raises when above ``atol``."""
        merged = self.plain_network().eval()
        was = self.training
        self.eval()
        diff = (self.net(x) - merged(x)).abs().max().item()
        self.train(was)
        if diff > atol:
            raise TransferlabError(
                f"The merged model differs from the adapted one by {diff:.2e} (> {atol}). Report this as a bug."
            )
        return diff

    # --- reports ------------------------------------------------------------------------------
    @classmethod
    def report_label(cls, strategy_cfg: dict) -> str:
        """The preset's name with its rank and alpha where it has them: ``lora r=8 a=16``, ``lora r=8 a=16 dora``
        (LoRA with ``use_dora``), ``dora r=8 a=16``."""
        parts = [str(strategy_cfg.get("name", "peft"))]
        for key, short in (("r", "r"), ("alpha", "a")):
            if strategy_cfg.get(key) is not None:
                value = strategy_cfg[key]
                parts.append(f"{short}={int(value) if isinstance(value, float) and value.is_integer() else value}")
        flags = [flag.removeprefix("use_") for flag in ("use_dora", "use_rslora") if strategy_cfg.get(flag)]
        parts += [flag for flag in flags if flag != parts[0]]  # the dora preset is named after its flag already
        return " ".join(parts)

    @classmethod
    def report_family(cls, strategy_cfg: dict) -> str:
        """Every adapter method shares one hue in plots."""
        return "adapters"
