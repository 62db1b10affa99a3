"""SIGTERM and SIGINT as a clean stop: inside a job they raise ``JobInterrupted`` at once; between sweep jobs
they are remembered, and the sweep stops before its next job.

Lightning alone turns SIGTERM into ``SIGTERMException``, a ``SystemExit`` with no code: the process then exits 0,
which a scheduler reads as success. Lightning keeps calling a handler installed before ``fit`` (it chains them),
so this one still runs during training. Checkpoints are written atomically (AtomicCheckpointIO), so raising
mid-save keeps the previous last.ckpt.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class JobInterrupted(BaseException):
    """A signal stopped the job. A BaseException, so neither a sweep's failure handling nor Hydra records it as
    an ordinary failure, and Lightning re-raises it after its own clean-up."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    signum: int | None = None  # the first signal received
    armed = False  # inside a job: raise at once
    originals: dict = {}  # handlers to put back


def _handler(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if _State.signum is not None:  # already stopping: let the clean-up finish (SIGKILL still ends it)
        log.warning("%s again: already stopping, finishing the clean-up.", name)
        return
    _State.signum = signum
    if _State.armed:
        raise JobInterrupted(signum)
    log.warning("%s received: the sweep stops before its next job.", name)


def install() -> None:
    """Route SIGTERM and SIGINT to this module (idempotent; only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is not _handler:
            _State.originals[signum] = current
            signal.signal(signum, _handler)


def restore() -> None:
    """Put back the handlers ``install`` replaced and forget any received signal."""
    if threading.current_thread() is threading.main_thread():
        for signum, handler in _State.originals.items():
            signal.signal(signum, handler)
    _State.originals.clear()
    _State.signum = None


def pending() -> int | None:
    """The signal received so far (None if none)."""
    return _State.signum


@contextlib.contextmanager
def armed() -> Iterator[None]:
    """Within this block a signal raises ``JobInterrupted`` at once (one that came earlier raises on entry)."""
    _State.armed = True
    try:
        if _State.signum is not None:
            raise JobInterrupted(_State.signum)
        yield
    finally:
        _State.armed = False


def exit_status(signum: int) -> int:
    """The shell's convention for a process ended by ``signum``: 128 + signal number (143 for SIGTERM)."""
    return 128 + int(signum)
