"""What a process is running, and what must happen when that job ends or has to be stopped by force.

Modules that start things a job must not outlive (the extra ranks of a DDP job, their process group) register
here; the task wrapper and the signal handling call the hooks without knowing what they stop. Kept free of
torch and Lightning: the entry points import this before Hydra has composed the config.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig


@dataclass(frozen=True)
class CurrentTask:
    """A task function a process runs and the config it was called with (mutated in place as the job is prepared),
    for code that must start the same job in another process: the extra ranks of a DDP job."""

    name: str  # "module:function", importable
    cfg: DictConfig


_tasks: list[CurrentTask] = []
_job_end: list[Callable[[bool], None]] = []
_force_stop: list[Callable[[], None]] = []


def task_started(task: CurrentTask) -> None:
    """Mark ``task`` as running (tasks nest: eval inside a notebook run, say)."""
    _tasks.append(task)


def task_finished() -> None:
    """Mark the innermost task as done."""
    if _tasks:
        _tasks.pop()


def current_task() -> CurrentTask | None:
    """The innermost task this process is running, or None outside one."""
    return _tasks[-1] if _tasks else None


def on_job_end(hook: Callable[[bool], None]) -> None:
    """Call ``hook(ok)`` whenever a task ends (``ok``: it returned normally); registering twice is a no-op."""
    if hook not in _job_end:
        _job_end.append(hook)


def job_ended(ok: bool) -> None:
    """Run the job-end hooks."""
    for hook in list(_job_end):
        hook(ok)


def on_force_stop(hook: Callable[[], None]) -> None:
    """Call ``hook()`` when a stopping job is stuck (the signal watchdog), e.g. to end processes it waits for."""
    if hook not in _force_stop:
        _force_stop.append(hook)


def forget_force_stop(hook: Callable[[], None]) -> None:
    """Undo :func:`on_force_stop` (the thing it would stop has ended)."""
    if hook in _force_stop:
        _force_stop.remove(hook)


def force_stop() -> None:
    """Run the force-stop hooks (never raises: it runs from a watchdog thread)."""
    for hook in list(_force_stop):
        with contextlib.suppress(Exception):  # a last resort must not fail on one hook
            hook()
