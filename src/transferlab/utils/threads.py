"""torch's intra-op threads for a run (``trainer.threads``), and a warning when the machine is already busy.

Two PyTorch processes that each take every core slow each other down many times over (measured: 2.3 s vs
18.7 s per step on 2 shared cores), and the thread count also shifts results at the float-noise level, so
it is set once, before anything is built, and recorded in run_info.json and metrics.json.
"""

from __future__ import annotations

import logging
import os

import torch

from transferlab.utils.errors import TransferlabError

log = logging.getLogger(__name__)
_checked = False  # once per process: a sequential sweep's own previous job would count as load


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to ``threads`` (None keeps torch's own choice); return the count in use."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise TransferlabError(
                f"trainer.threads={threads} must be a positive integer or null (torch's own choice). "
                "Try trainer.threads=1 on a shared machine."
            )
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return torch.get_num_threads()


def warn_if_overloaded(threads: int, load: float | None = None, cores: int | None = None) -> bool:
    """Log one warning when the 1-minute load average already exceeds the cores this run may use.

    ``load`` and ``cores`` default to ``os.getloadavg()[0]`` and the CPUs this process may run on.
    Checked once per process (later jobs of a sequential sweep would see the previous job's load); with one
    thread there is nothing left to lower, so it stays quiet. Returns whether it warned.
    """
    global _checked
    if load is None:
        if _checked:
            return False
        _checked = True
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):  # not available on every platform
            return False
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    usable = min(threads, cores)
    if usable <= 1 or load <= cores - usable + 0.5:  # room for this run's threads next to the load (0.5: noise)
        return False
    log.warning(
        "The machine is busy (1-minute load %.1f on %d cores) and this run uses %d threads: set trainer.threads=1 "
        "(and OMP_NUM_THREADS=1) so processes do not slow each other down.",
        load,
        cores,
        threads,
    )
    return True
