"""Checkpoints written atomically: a kill mid-save leaves the previous file intact, never half a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from transferlab.utils.io import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but saving to a temp file renamed over the target.

    Lightning writes last.ckpt in place, so a run killed mid-save could lose its only resume point.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Save ``checkpoint`` to ``path`` atomically."""
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))
