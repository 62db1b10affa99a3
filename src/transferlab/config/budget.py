"""The step budget of the data-size study (``${step_budget:max_steps}`` and friends in
configs/experiment/strategy_vs_data_size.yaml, reading the config's ``budget`` block and ``data.train_size``).

A fixed number of epochs starves small training sets: 3 epochs of 100 images at batch 64 are 3 optimizer steps.
The rule here gives every size at least ``min_steps`` steps and large sizes their ``epochs`` passes:

    steps = max(min_steps, epochs x batches per epoch),  batches per epoch = max(1, train images // batch size)

rounded up to a multiple of ``validations``, so validation (and the best checkpoint) comes every steps/validations
steps, the last one at the final step, whatever the size.
"""

from __future__ import annotations

import math

from transferlab.utils.errors import TransferlabError


def step_budget(
    train_size: int | None, batch_size: int, all_images: int, epochs: int, min_steps: int, validations: int
) -> dict:
    """Trainer limits for one job: ``max_steps``, ``val_check_interval`` (in steps) and a ``max_epochs`` that the
    step budget reaches first (Lightning stops at whichever limit comes first)."""
    for name, value in (("batch_size", batch_size), ("all_images", all_images), ("epochs", epochs),
                        ("min_steps", min_steps), ("validations", validations)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TransferlabError(f"step_budget: {name}={value} must be a positive integer.")
    images = all_images if train_size is None else int(train_size)
    per_epoch = max(1, images // batch_size)  # training drops the last partial batch (data/datamodule.py)
    interval = math.ceil(max(min_steps, epochs * per_epoch) / validations)
    steps = interval * validations
    return {"max_steps": steps, "val_check_interval": interval, "max_epochs": math.ceil(steps / per_epoch)}


LIMITS = ("max_steps", "val_check_interval", "max_epochs")


def step_budget_resolver(limit: str, *, _root_) -> int:
    """``${step_budget:<limit>}``: one of :func:`step_budget`'s limits for the composed config ``_root_``."""
    if limit not in LIMITS:
        raise TransferlabError(f"${{step_budget:{limit}}}: the limit must be one of {', '.join(LIMITS)}.")
    budget = _root_.get("budget")
    if budget is None:
        raise TransferlabError(
            "${step_budget:...} needs a `budget` block (epochs, min_steps, all_images, validations)."
        )
    plan = step_budget(_root_.data.train_size, _root_.data.batch_size, budget.all_images, budget.epochs,
                       budget.min_steps, budget.validations)  # fmt: skip
    return plan[limit]
