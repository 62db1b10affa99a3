"""``ProtocolSweeper``: the sweeper ``protocol=tuned`` selects (tune -> select -> refit, each stage a batch of jobs
through the configured launcher).

Kept light on purpose: Hydra imports every module under ``hydra_plugins`` at start-up; the stages load on use.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ProtocolSweeper(Sweeper):
    """Hydra's basic sweeper's arms (the cartesian product of ``hydra.sweeper.params`` and the command line's
    sweeps), each tuned on validation over its strategy's ``search`` space, refit with the chosen values on
    ``protocol.refit_seeds`` and tested. Same config keys as the basic sweeper (``max_batch_size`` is accepted and
    unused: the protocol sizes its own batches); the protocol's own keys are ``protocol.*`` in the job config."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None, **other: Any) -> None:
        super().__init__()
        self.params = dict(params or {})
        self.other_keys = sorted(other)  # another sweeper's keys (hparams_search=...): refused in sweep()
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep the context and build the configured launcher, as the basic sweeper does."""
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        """Run the tune, select and refit stages; bad input stops with one line (exit 1)."""
        from ._impl import run_protocol

        return run_protocol(self, arguments)
