"""Learning-rate schedules stepped per optimizer step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from transferlab.utils.errors import TransferlabError


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_factor: float = 0.0
) -> LambdaLR:
    """Linear warmup over ``warmup_fraction`` of the steps, then cosine decay to ``min_factor`` of each group's LR."""
    warmup = max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
    total_steps = max(total_steps, warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / (total_steps - warmup))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, total_steps: int, **_) -> LambdaLR:
    """No schedule: every group keeps its LR."""
    return LambdaLR(optimizer, lambda step: 1.0)


# The names ``strategy.scheduler`` accepts: an explicit registry, so a typo (or a torch class name) fails clearly.
SCHEDULES = {"warmup_cosine": warmup_cosine, "constant": constant}


def by_name(name: str):
    """The schedule factory registered as ``name``, or a one-line error listing the names."""
    if name not in SCHEDULES:
        raise TransferlabError(f"strategy.scheduler={name!r} is unknown. Use one of: {', '.join(SCHEDULES)}.")
    return SCHEDULES[name]


def add_param_group(optimizer: Optimizer, scheduler: LambdaLR | None, group: dict) -> None:
    """Add ``group`` to a running optimizer and teach the scheduler about it.

    LambdaLR records one base LR and lambda per group at construction; a group added later
    (gradual unfreezing) would otherwise keep a constant, unscheduled LR.
    """
    group.setdefault("initial_lr", group["lr"])
    optimizer.add_param_group(group)
    if scheduler is not None:
        scheduler.base_lrs.append(group["initial_lr"])
        scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
        group["lr"] = group["initial_lr"] * scheduler.lr_lambdas[0](scheduler.last_epoch)


def cover_all_groups(scheduler: LambdaLR | None, optimizer: Optimizer) -> None:
    """Give every optimizer group a lambda: a LambdaLR restored from a checkpoint keeps only its first ones."""
    if scheduler is None:
        return
    while len(scheduler.lr_lambdas) < len(optimizer.param_groups):
        scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
