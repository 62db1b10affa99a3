"""Reseed the random generators at every epoch start, so a resumed run continues exactly as an uninterrupted one."""

from __future__ import annotations

from lightning import Callback
from lightning.fabric.utilities.seed import seed_everything

from transferlab.data.seeds import epoch_seed


class EpochSeed(Callback):
    """Seed python, numpy and torch with ``epoch_seed(seed, epoch)`` before each training epoch.

    Lightning checkpoints do not hold RNG states; without this, augmentation and dropout after a
    resume would draw different numbers than the uninterrupted run.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False)
