"""What a run needs to be reproduced: seed, thread count, library versions, git commit."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata

from transferlab.utils.project import PROJECT_ROOT

_PACKAGES = (
    "transferlab",
    "torch",
    "torchvision",
    "lightning",
    "timm",
    "peft",
    "torchmetrics",
    "hydra-core",
    "omegaconf",
    "wandb",
    "numpy",
)


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the project, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_info(seed: int) -> dict:
    """Seed, torch's thread count, python and package versions, platform and git commit."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import torch  # imported on use: a report run that only reads versions stays light

    return {
        "seed": seed,
        "threads": torch.get_num_threads(),  # intra-op threads (trainer.threads): results shift slightly with it
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": git_commit(),
    }
