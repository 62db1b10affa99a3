"""One clear line, with the closest existing key, for an override of a key the config does not have.

Hydra answers ``strategy.rank=8`` with "Could not override ... use +strategy.rank=8", and that advice then
fails inside the strategy's constructor. Here the composition error names the group's chosen option and the
closest key instead: ``error: strategy.rank is not a key of strategy=lora. Did you mean strategy.r?``
"""

from __future__ import annotations

import difflib
import functools
import re

from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

_COULD_NOT_OVERRIDE = re.compile(r"Could not override '([^']+)'")


def closest_key(name: str, candidates: list[str]) -> str | None:
    """The candidate ``name`` most likely meant, or None when none is close."""
    candidates = [c for c in candidates if c != name]
    # A key the typed name starts with (rank -> r, lrate -> lr) first: difflib rates such short keys low.
    close = sorted((c for c in candidates if name.startswith(c) or c.startswith(name)), key=len, reverse=True)
    close = close or difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return close[0] if close else None


def unknown_key_message(key: str, cfg: DictConfig) -> str:
    """``error: a.b is not a key of a=<choice>. Did you mean a.c?`` for ``key`` against the composed ``cfg``."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    candidates = [str(k) for k in node if not str(k).startswith("_")] if isinstance(node, DictConfig) else []
    group = parent.split(".")[0]
    choice = OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None) if group else None
    where = f"{parent}={choice}" if choice and parent == group else (parent or "the config")
    close = closest_key(leaf, candidates)
    if close:
        return f"error: {key} is not a key of {where}. Did you mean {parent + '.' if parent else ''}{close}?"
    return f"error: {key} is not a key of {where}. Its keys: {', '.join(candidates)}."


def install_unknown_key_hint() -> None:
    """Wrap Hydra's config loader so an unknown override key gets :func:`unknown_key_message` (idempotent)."""
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
    except ImportError:  # another Hydra layout: keep Hydra's own message
        return
    original = ConfigLoaderImpl.load_configuration
    if getattr(original, "_transferlab_hint", False):
        return

    @functools.wraps(original)
    def load_configuration(self, config_name, overrides, run_mode, *args, **kwargs):
        try:
            return original(self, config_name, overrides, run_mode, *args, **kwargs)
        except ConfigCompositionException as e:
            match = _COULD_NOT_OVERRIDE.search(str(e))
            if match is None:
                raise
            key = match.group(1)
            rest = [o for o in overrides if o.split("=", 1)[0].lstrip("~") != key]
            try:  # compose without the bad key to learn the group's option and its keys
                cfg = original(self, config_name, rest, run_mode, *args, **kwargs)
            except Exception:  # noqa: BLE001 - any other problem: Hydra's own message
                raise e from None
            raise ConfigCompositionException(unknown_key_message(key, cfg)) from None

    load_configuration._transferlab_hint = True
    ConfigLoaderImpl.load_configuration = load_configuration
