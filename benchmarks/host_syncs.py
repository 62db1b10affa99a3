"""host_syncs: how often a training step makes the host wait for the device, per strategy, with the default callbacks.

A host sync (``loss.item()``, ``if tensor:``, ``.cpu()``) stops Python until the GPU has drained its queue, so
the next step's kernels are launched late and the GPU idles. One short real fit per strategy (feature
extraction's head on cached features, fine-tuning all layers, LoRA r=8), built as ``transferlab.train`` builds
it: default callbacks and the default CSV logger. Counted:

- on CUDA, every synchronising call, with ``torch.cuda.set_sync_debug_mode("warn")`` (one warning each);
- on CPU, where nothing waits, the calls that would: ``Tensor.item``, ``.tolist``, ``.cpu``, ``.numpy``,
  ``__bool__``, ``__float__`` and ``__int__``, seen by a ``TorchFunctionMode``, except those of ``torch.optim``
  itself: its step counters stay on the host on a GPU too (unless ``fused``/``capturable``), so reading them
  waits for nothing. Syncs inside C++ kernels (e.g. ``torch.bincount`` sizing its output) are invisible here;
  the CUDA count sees them.

A step's window runs from one training batch's start to the next one's, within an epoch (epoch ends,
validation and checkpoints are once per epoch and left out). ``host_syncs.<strategy>.per_step`` = syncs over
steps (target <= 0.1: at most one sync per 10 steps).
"""

from __future__ import annotations

import sys
import warnings

import torch
from lightning import Callback
from torch.overrides import TorchFunctionMode

from benchmarks.common import compose_config, console, quiet, table, target, workdir
from transferlab.build import build_run, build_trainer

NAME = "host_syncs"
TARGET = ("<=", 0.1)
STRATEGIES = {"feature_extraction": [], "fine_tuning": [], "lora": ["strategy.r=8", "strategy.alpha=16"]}

# Tensor methods that hand a value to Python: on a GPU each one waits for the device.
_SYNCING = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.cpu,
    torch.Tensor.numpy,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
}


class HostSyncCounter(TorchFunctionMode):
    """Counts host syncs while entered: calls of ``_SYNCING`` on CPU, CUDA's sync warnings on a GPU.

    ``count`` is the running total; on CUDA it includes the warnings caught so far (``warnings`` records them).
    """

    def __init__(self, cuda: bool = False):
        super().__init__()
        self.cuda = cuda
        self.calls = 0
        self._caught: list = []
        self._catcher = None

    @property
    def count(self) -> int:
        """Host syncs seen so far."""
        if self.cuda:
            return sum("synchroniz" in str(w.message) for w in self._caught)
        return self.calls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _SYNCING and "/torch/optim/" not in sys._getframe(1).f_code.co_filename:
            self.calls += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        if self.cuda:
            self._catcher = warnings.catch_warnings(record=True)
            self._caught = self._catcher.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            return self
        return super().__enter__()

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
            return self._catcher.__exit__(*exc)
        return super().__exit__(*exc)


class StepWindows(Callback):
    """Attributes the counter's syncs to training steps: from one batch start to the next, within an epoch."""

    def __init__(self, counter: HostSyncCounter):
        self.counter = counter
        self.per_window: list[int] = []
        self._mark: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = self.counter.count
        if self._mark is not None:
            self.per_window.append(now - self._mark)
        self._mark = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._mark = None  # the epoch's end (validation, checkpoints) is not a step


def count_fit(cfg) -> dict:
    """Fit ``cfg`` with the counter on; syncs per step window and their total."""
    run = build_run(cfg, trainer=False)
    trainer = build_trainer(cfg)
    counter = HostSyncCounter(cuda=torch.cuda.is_available())
    windows = StepWindows(counter)
    trainer.callbacks.append(windows)
    with counter:
        trainer.fit(run.module, datamodule=run.datamodule)
    steps = len(windows.per_window)
    total = sum(windows.per_window)
    return {"steps": steps, "syncs": total, "per_step": total / steps if steps else float("nan"),
            "max_in_one_step": max(windows.per_window, default=0)}  # fmt: skip


def run(full: bool = False, steps: int | None = None, overrides=()) -> dict:
    """One counted fit per strategy; print a table; return the JSON section."""
    quiet()
    steps = steps or (100 if full else 40)
    batch = 32
    # One epoch of ``steps`` windows (drop_last): 32 px keeps it short; sizes do not change what syncs.
    settings = [
        "data.image_size=32",
        f"data.batch_size={batch}",
        f"data.train_size={int((steps + 1) * batch / 0.9) + 1}",
        "trainer.max_epochs=1",
        "logger=csv",
    ]
    result: dict = {"device": "cuda" if torch.cuda.is_available() else "cpu", "strategies": {}}
    with workdir(NAME) as tmp:
        for name, extra in STRATEGIES.items():
            console.print(f"  {name} ...", end="")
            cfg = compose_config(tmp / name, [*settings, f"strategy={name}", *extra, *overrides])
            counted = count_fit(cfg)
            result["strategies"][name] = counted
            result[name] = {"per_step": counted["per_step"]}
            console.print(f" {counted['syncs']} syncs in {counted['steps']} steps")
    result["targets"] = {f"{name}.per_step": target(result[name]["per_step"], *TARGET) for name in STRATEGIES}
    table(
        f"host_syncs: host syncs per training step ({result['device']}, default callbacks and logger)",
        ["strategy", "steps", "syncs", "per step", "most in one step"],
        [[n, c["steps"], c["syncs"], c["per_step"], c["max_in_one_step"]] for n, c in result["strategies"].items()],
    )
    return result
