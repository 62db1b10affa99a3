"""The OmegaConf resolvers the configs use, and the rules behind them.

``lora_alpha`` turns a preset's ``alpha`` knob (a number, or ``r`` / ``2r`` that scales with the rank in sweeps)
into the number PEFT takes, naming the user's keys when a value is wrong. Plain functions without torch or PEFT, so
config composition, training and reporting share them without importing a strategy.
"""

from __future__ import annotations

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
