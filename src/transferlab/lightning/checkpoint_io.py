"""Checkpoints written atomically: a kill mid-save leaves the previous file intact, never half a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from transferlab.utils.io import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but saving to a temp file renamed over the target.

    Checked against Lightning 2.6: its ``_atomic_save`` writes through an fsspec transaction, which stages the
    file in the system temp dir and *moves* it over the target. Where /tmp is another filesystem (tmpfs, a
    cluster's node-local disk) that move is a copy, and a kill mid-copy leaves a truncated last.ckpt: the
    run's only resume point. Ours stages next to the target, so the final step is always a rename.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Save ``checkpoint`` to ``path`` atomically."""
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))
