"""One line for a ``trainer.limit_{train,val,test}_batches`` fraction that keeps no batch of a small split.

Lightning refuses it with a ``MisconfigurationException`` and a traceback that names neither the split's size nor
the value to use. The check runs only once Lightning has refused (its own rule decides), so no split is loaded or
counted twice on the way there.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from lightning.pytorch.utilities.exceptions import MisconfigurationException

from transferlab.utils.errors import TransferlabError

_SPLITS = {"train": "data.batch_size", "val": "data.eval_batch_size", "test": "data.eval_batch_size"}


def _batches(datamodule, split: str, world_size: int) -> tuple[int, int, int] | None:
    """(batches per process, images, batch size) of ``split``'s loader, the way Lightning counts them."""
    try:
        loader = getattr(datamodule, f"{split}_dataloader")()
    except Exception:  # noqa: BLE001 - the split is not set up: Lightning failed on something else
        return None
    images, size = len(loader.dataset), loader.batch_size
    if split == "train":  # our own sampler already shards training batches over the processes
        return len(loader), images, size
    return math.ceil(math.ceil(images / world_size) / size), images, size  # Lightning's padded shard


def limit_problem(trainer, datamodule) -> str | None:
    """The message for the first fractional limit that keeps no batch, or None when none does."""
    for split, batch_key in _SPLITS.items():
        limit = getattr(trainer, f"limit_{split}_batches")
        if not isinstance(limit, float) or not 0.0 < limit < 1.0:
            continue
        counted = _batches(datamodule, split, trainer.world_size)
        if counted is None or int(counted[0] * limit) >= 1:
            continue
        batches, images, size = counted
        per = " per process" if trainer.world_size > 1 else ""
        return (
            f"trainer.limit_{split}_batches={limit:g} keeps no batch: the {split} split has {batches} batch"
            f"{'es' if batches != 1 else ''}{per} ({images} images, {batch_key}={size}), and "
            f"int({limit:g} x {batches}) = 0. Set trainer.limit_{split}_batches=1 (an integer counts batches) or a "
            f"fraction of at least {1 / max(batches, 1):.3g}."
        )
    return None


@contextlib.contextmanager
def explain_batch_limits(trainer, datamodule) -> Iterator[None]:
    """Turn Lightning's refusal of a too-small fractional batch limit into one line that says what to set."""
    try:
        yield
    except MisconfigurationException as e:
        message = limit_problem(trainer, datamodule)
        if message is None:
            raise
        raise TransferlabError(message) from e
