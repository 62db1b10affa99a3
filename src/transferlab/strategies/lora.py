"""The class that configs written before the generic PEFT strategy name (``_target_: transferlab.strategies.LoRA``),
so their checkpoints still load. LoRA's ``alpha`` rule (``2r``) lives with the config resolvers.

New runs use ``strategy=lora`` (configs/strategy/lora.yaml): the generic ``PEFT`` strategy with a LoraConfig.
"""

from __future__ import annotations

from peft import LoraConfig
from torch import nn

from transferlab.config.resolvers import lora_alpha, resolve_alpha
from transferlab.strategies.adapters import PEFT
from transferlab.utils.errors import TransferlabError

__all__ = ["LoRA", "lora_alpha", "resolve_alpha"]  # the resolver's functions, where older code imported them


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
