"""LoRA's own knobs: ``alpha`` as a multiple of the rank, and the class that configs written before the
generic PEFT strategy name (``_target_: transferlab.strategies.LoRA``), so their checkpoints still load.

New runs use ``strategy=lora`` (configs/strategy/lora.yaml): the generic ``PEFT`` strategy with a LoraConfig.
"""

from __future__ import annotations

from peft import LoraConfig
from torch import nn

from transferlab.strategies.adapters import PEFT
from transferlab.utils.errors import TransferlabError


def resolve_alpha(alpha: float | str, r: int) -> float:
    """``alpha`` as a number; the forms ``"r"`` and ``"2r"`` (any multiple) scale with the rank, for sweeps."""
    if isinstance(alpha, str):
        text = alpha.strip().replace(" ", "")
        try:
            return float(text[:-1] or 1) * r if text.endswith("r") else float(text)
        except ValueError:
            raise TransferlabError(f"strategy.alpha={alpha!r} is not a number or a multiple of r (like 2r).") from None
    return alpha


def lora_alpha(alpha: float | str, r: int) -> float:
    """The ``lora_alpha`` config resolver: validates rank and alpha, naming the user's keys, and resolves ``2r``."""
    # PEFT checks some of these deep inside model surgery; failing here names the config key.
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise TransferlabError(f"strategy.r={r} must be a positive integer (the LoRA rank). Try strategy.r=8.")
    value = resolve_alpha(alpha, r)
    if value is None or value <= 0:
        raise TransferlabError(f"strategy.alpha={alpha} must be positive. A common choice is 2 * r.")
    return value


class LoRA(PEFT):
    """LoRA from the flat keys of configs written before ``strategy=lora`` became a PEFT preset.

    It builds the same ``LoraConfig`` the preset does, so parameter names, checkpoints and adapters match.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        r: int = 8,
        alpha: float | str = 16,
        dropout: float = 0.0,
        use_rslora: bool = False,
        use_dora: bool = False,
        init_lora_weights: bool | str = True,
        bias: str = "none",
        **kwargs,
    ):
        if not 0 <= dropout < 1:
            raise TransferlabError(f"strategy.dropout={dropout} must be in [0, 1).")
        config = LoraConfig(
            r=r,
            lora_alpha=lora_alpha(alpha, r),
            lora_dropout=dropout,
            use_rslora=use_rslora,
            use_dora=use_dora,
            init_lora_weights=init_lora_weights,
            bias=bias,
        )
        super().__init__(net, num_classes, peft_config=config, **kwargs)
