"""AdaLoRA's rank budget: PEFT reallocates ranks after every optimizer step, which a plain training loop never asks for."""

from __future__ import annotations

from lightning import Callback, LightningModule, Trainer

from transferlab.utils.errors import TransferlabError


class AdaLoraBudget(Callback):
    """Tell AdaLoRA the run's real step count at fit start, then call ``update_and_allocate`` after each
    optimizer step (PEFT's recipe: backward, step, update_and_allocate, zero_grad).

    Lightning zeroes gradients just before the next backward, so at ``on_train_batch_end`` the step's
    gradients, which AdaLoRA's importance scores need, are still there.
    """

    def __init__(self):
        self._last_step = -1

    @staticmethod
    def _tuner(pl_module: LightningModule):
        return pl_module.net.base_model

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Replace the YAML's placeholder ``total_step`` with the trainer's optimizer-step count."""
        tuner = self._tuner(pl_module)
        config = tuner.peft_config[tuner.trainable_adapter_name]
        total = int(trainer.estimated_stepping_batches)
        if config.tinit >= total - config.tfinal:
            raise TransferlabError(
                f"AdaLoRA needs tinit < total steps - tfinal, but this run has {total} steps with "
                f"tinit={config.tinit}, tfinal={config.tfinal}. Lower strategy.peft_config.tinit/tfinal or train longer."
            )
        tuner.rankallocator.set_total_step(total)  # the allocator shares the config object: both now agree
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        """Reallocate the rank budget once per optimizer step (not per accumulated micro-batch)."""
        if trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        self._tuner(pl_module).update_and_allocate(trainer.global_step - 1)
