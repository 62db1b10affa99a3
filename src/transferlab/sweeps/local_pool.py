"""SIGTERM and SIGINT for sweeps whose jobs run in local worker processes (``hydra/launcher=parallel`` and ``gpus``,
both joblib's loky pool).

A signal sent to the sweep's own process (``kill PID``, a scheduler, ``timeout``) would end it at once and leave
its workers training, orphaned: a pool worker does not hear its parent's signals. While a batch runs,
:class:`StopOnSignal` catches them in the launching process, passes them on to the workers (whose jobs stop the
way they do under the basic launcher: ``status: interrupted``, checkpoint kept) and marks the sweep as stopping, so
jobs handed out afterwards do not start. :class:`StopsWithSweep` wraps the task in the workers: a job stopped by a
signal leaves as an ordinary failed job return, not as ``SystemExit``, because joblib would answer that by killing
the other workers mid clean-up. When the batch is back, the launcher writes the report and exits 128 + the signal.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from transferlab.sweeps import interrupt


class SweepStopped(Exception):  # noqa: N818 - a state, like JobInterrupted
    """A job that a signal stopped, or that did not start because the sweep was stopping. An Exception, so
    Hydra's ``execute_job`` records it as the job's return and joblib collects the other workers normally."""


class StopOnSignal:
    """Context manager for the launching process: SIGTERM/SIGINT are passed on to the pool's workers and
    remembered (``signum``); ``flag`` is a file whose presence tells workers not to start another job."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="transferlab-stop-")
        self.flag = str(Path(self._dir.name) / "stopping")
        self._previous: dict = {}

    def __enter__(self) -> StopOnSignal:
        for signum in interrupt.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._forward)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._dir.cleanup()

    def _forward(self, signum: int, frame) -> None:
        if self.signum is not None:  # once: a second Ctrl-C must not cut the workers' clean-up short
            return
        self.signum = signum
        Path(self.flag).touch()
        for worker in multiprocessing.active_children():  # the loky workers (not its resource trackers)
            os.kill(worker.pid, signum)


class StopsWithSweep:
    """The task function as a pool worker runs it (picklable: joblib ships it to the workers)."""

    def __init__(self, task_function: Callable[[DictConfig], object], flag: str):
        self.task_function, self.flag = task_function, flag

    def __call__(self, cfg: DictConfig):
        if os.path.exists(self.flag):
            raise SweepStopped("not started: the sweep was stopping")
        try:
            return self.task_function(cfg)
        except SystemExit as e:
            if interrupt.pending() is None:  # not a signal's exit (the job's own): joblib's usual handling
                raise
            raise SweepStopped(f"stopped by {signal.Signals(interrupt.pending()).name}") from e


def exit_if_stopped(stop: StopOnSignal, sweep_dir: Path, resume: str, write_report: Callable[[Path], None]) -> None:
    """After the batch: if a signal came, rebuild the report over every job's files, print one line and exit
    128 + the signal number."""
    if stop.signum is None:
        return
    write_report(sweep_dir)
    name = signal.Signals(stop.signum).name
    interrupt.print_interrupted(
        f"{name} stopped the sweep {sweep_dir}: its running jobs were stopped (their checkpoints kept), no further "
        f"job started. Resume: {resume}"
    )
    raise SystemExit(interrupt.exit_status(stop.signum))
