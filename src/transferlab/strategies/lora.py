"""LoRA through PEFT: low-rank adapters on the family's target layers; the head trains alongside them."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn

from transferlab.models.families import lora_preset
from transferlab.strategies.base import TransferModule
from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import atomic_write_dir

log = logging.getLogger(__name__)

_ADAPTABLE = (nn.Linear, nn.Conv2d)


def resolve_alpha(alpha: float | str, r: int) -> float:
    """``alpha`` as a number; the forms ``"r"`` and ``"2r"`` (any multiple) scale with the rank, for sweeps."""
    if isinstance(alpha, str):
        text = alpha.strip().replace(" ", "")
        try:
            return float(text[:-1] or 1) * r if text.endswith("r") else float(text)
        except ValueError:
            raise TransferlabError(f"strategy.alpha={alpha!r} is not a number or a multiple of r (like 2r).") from None
    return alpha


def _validate(r: int, alpha: float, dropout: float) -> None:
    # PEFT checks some of these deep inside model surgery; failing here names the config key.
    if not isinstance(r, int) or r <= 0:
        raise TransferlabError(f"strategy.r={r} must be a positive integer (the LoRA rank). Try strategy.r=8.")
    if alpha is None or alpha <= 0:
        raise TransferlabError(f"strategy.alpha={alpha} must be positive. A common choice is 2 * r.")
    if not 0 <= dropout < 1:
        raise TransferlabError(f"strategy.dropout={dropout} must be in [0, 1).")


def adaptable_modules(net: nn.Module) -> list[str]:
    """Names of the modules LoRA can wrap (Linear and non-depthwise Conv2d)."""
    return [n for n, m in net.named_modules() if isinstance(m, _ADAPTABLE) and getattr(m, "groups", 1) == 1]


def resolve_targets(net: nn.Module, config: LoraConfig, head: str) -> list[str]:
    """The module names ``config.target_modules`` selects, or a clear error naming candidates."""
    matched = [
        n for n, _ in net.named_modules() if n and not n.startswith(head) and check_target_module_exists(config, n)
    ]
    if not matched:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in adaptable_modules(net) if not n.startswith(head)})
        raise TransferlabError(
            f"strategy.target_modules={config.target_modules} matches no module. Candidates: {', '.join(leaves[:12])}."
        )
    for name in matched:
        module = net.get_submodule(name)
        if not isinstance(module, _ADAPTABLE):
            raise TransferlabError(
                f"LoRA target '{name}' is a {type(module).__name__}; target Linear or Conv2d layers."
            )
        if getattr(module, "groups", 1) > 1:
            raise TransferlabError(
                f"LoRA target '{name}' is a depthwise conv (groups={module.groups}), which cannot take a mergeable adapter. "
                "Target pointwise convs instead (EfficientNet: conv_pw, conv_pwl)."
            )
    return matched


class LoRA(TransferModule):
    """Low-rank adapters (PEFT) on ``target_modules`` (default: the family preset) plus the new head.

    ``r``, ``alpha``, ``dropout``, ``use_rslora``, ``use_dora``, ``init_lora_weights`` and ``bias``
    map onto PEFT's ``LoraConfig``. Checkpoints hold only the trainable tensors when the base
    weights can be rebuilt from their source.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        r: int = 8,
        alpha: float | str = 16,
        dropout: float = 0.0,
        target_modules: str | list[str] | None = None,
        family: str = "efficientnet",
        use_rslora: bool = False,
        use_dora: bool = False,
        init_lora_weights: bool | str = True,
        bias: str = "none",
        **kwargs,
    ):
        alpha = resolve_alpha(alpha, r) if isinstance(r, int) else alpha
        _validate(r, alpha, dropout)
        head = net.pretrained_cfg.get("classifier", "classifier")
        targets = target_modules if target_modules is not None else lora_preset(family)
        targets = targets if isinstance(targets, str) else list(targets)
        config = LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=targets,
            use_rslora=use_rslora,
            use_dora=use_dora,
            init_lora_weights=init_lora_weights,
            bias=bias,
            modules_to_save=[head],
        )
        self.targeted = resolve_targets(net, config, head)
        peft_net = get_peft_model(net, config)
        peft_net.pretrained_cfg = dict(net.pretrained_cfg, classifier=f"base_model.model.{head}")
        super().__init__(peft_net, num_classes, **kwargs)
        self.head_name = f"base_model.model.{head}.modules_to_save.default"
        self.slim_checkpoints = True  # adapters and head only: that is LoRA's storage saving
        self.strict_loading = False  # on_load_checkpoint checks that every trainable tensor is present
        log.info("LoRA on %d modules, e.g. %s", len(self.targeted), ", ".join(self.targeted[:4]))

    def setup_trainable(self) -> None:
        """PEFT already froze the base model and marked adapters and head trainable."""

    # --- artifacts ----------------------------------------------------------------------------
    def save_adapter(self, directory: str | Path) -> Path:
        """Save the adapters and head as a PEFT adapter folder (safetensors), atomically."""
        return atomic_write_dir(directory, lambda tmp: self.net.save_pretrained(str(tmp), safe_serialization=True))

    def merged_network(self) -> nn.Module:
        """A plain timm model with the adapters folded into its weights (this module is left untouched)."""
        peft_net: PeftModel = copy.deepcopy(self.net)
        return peft_net.merge_and_unload()

    def trainable_summary(self) -> str:
        """One line: adapted modules and trainable share."""
        return f"{super().trainable_summary()} on {len(self.targeted)} adapted modules"

    @torch.no_grad()
    def check_merge(self, x: torch.Tensor, atol: float = 1e-4) -> float:
        """Max abs difference between adapted and merged outputs on ``x``; raises when above ``atol``."""
        merged = self.merged_network().eval()
        was = self.training
        self.eval()
        diff = (self.net(x) - merged(x)).abs().max().item()
        self.train(was)
        if diff > atol:
            raise TransferlabError(
                f"The merged model differs from the adapted one by {diff:.2e} (> {atol}). Report this as a bug."
            )
        return diff
