"""Process start-up for the entry points: project root, .env, and the OmegaConf resolvers the configs use."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = str(Path(os.environ.get("TRANSFERLAB_CONFIG_DIR", PROJECT_ROOT / "configs")).resolve())


def _run_id() -> str:
    # Timestamps alone collide when two runs start in the same second (sweeps on a cluster).
    return secrets.token_hex(3)


def setup_environment() -> None:
    """Load ``.env``, pin the project root for relative paths, and register config resolvers (idempotent)."""
    from dotenv import load_dotenv

    load_dotenv(PROJECT_ROOT / ".env", override=False)
    os.environ.setdefault("TRANSFERLAB_ROOT", str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", _run_id, use_cache=True)
