"""Test the best checkpoint again on each shifted test set (``data.test_shifts``), after the clean test.

Each shift is one more ``trainer.test`` on the same datamodule, which now serves the corrupted split; its
accuracy joins metrics.json as ``test_shift/<label>/acc`` (and ``f1_macro``), their mean as ``test_shift/mean_acc``,
and its per-example predictions go to ``predictions_<label>.npz``, in the clean file's example order.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from transferlab.predictions import save_predictions

log = logging.getLogger(__name__)


def test_shifted_sets(trainer, module, datamodule, ckpt_path: str | None, out_dir: Path, test_set: str) -> dict:
    """Run every configured shift's test pass (all ranks take part; rank 0 writes) and return their metrics."""
    shifts = datamodule.test_shifts
    if not shifts:
        return {}
    metrics, started = {}, time.perf_counter()
    for shift in shifts:
        datamodule.use_test_shift(shift)
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path or None, verbose=False)
        for name in ("acc", "f1_macro"):
            value = trainer.callback_metrics[f"test/{name}"]
            metrics[f"test_shift/{shift.label}/{name}"] = value.item() if isinstance(value, torch.Tensor) else value
        if trainer.is_global_zero and module.test_predictions is not None:
            save_predictions(out_dir, module.test_predictions, test_set=f"{test_set}:{shift.label}", shift=shift.label)
        log.info("Shifted test set %s: test/acc=%.4f", shift.label, metrics[f"test_shift/{shift.label}/acc"])
    datamodule.use_test_shift(None)
    accs = [metrics[f"test_shift/{s.label}/acc"] for s in shifts]
    metrics["test_shift/mean_acc"] = sum(accs) / len(accs)
    metrics["time/test_shift_s"] = time.perf_counter() - started
    return metrics
