"""Process start-up for the entry points: project root, .env, the OmegaConf resolvers the configs use, and quieter
third-party output (no Lightning adverts; unknown override keys answered with the closest key)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf

from transferlab.config.budget import step_budget_resolver
from transferlab.config.overrides import install_unknown_key_hint
from transferlab.config.resolvers import lora_alpha
from transferlab.utils.project import PROJECT_ROOT

CONFIG_DIR = str(Path(os.environ.get("TRANSFERLAB_CONFIG_DIR", PROJECT_ROOT / "configs")).resolve())


def _run_id() -> str:
    # Timestamps alone collide when two runs start in the same second (sweeps on a cluster).
    return secrets.token_hex(3)


class _NoPromotionalTips(logging.Filter):
    """Drop Lightning's "💡 Tip: ... try installing litlogger/litmodels" lines: adverts, not run information."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def _silence_lightning_tips() -> None:
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # where rank_zero_info logs
    if not any(isinstance(f, _NoPromotionalTips) for f in logger.filters):
        logger.addFilter(_NoPromotionalTips())


def setup_environment() -> None:
    """Load ``.env``, pin the project root for relative paths, and register config resolvers (idempotent)."""
    from dotenv import load_dotenv

    load_dotenv(PROJECT_ROOT / ".env", override=False)
    os.environ.setdefault("TRANSFERLAB_ROOT", str(PROJECT_ROOT))
    _silence_lightning_tips()
    install_unknown_key_hint()  # strategy.rank=8 -> "Did you mean strategy.r?" instead of Hydra's "+strategy.rank"
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", _run_id, use_cache=True)
    if not OmegaConf.has_resolver("lora_alpha"):  # strategy.alpha=2r in LoRA-family presets
        OmegaConf.register_new_resolver("lora_alpha", lora_alpha)
    if not OmegaConf.has_resolver("step_budget"):  # the data-size study's optimizer-step budget
        OmegaConf.register_new_resolver("step_budget", step_budget_resolver)
