"""SIGTERM and SIGINT as a clean stop: inside a job they raise ``JobInterrupted`` at once; between sweep jobs
they are remembered, and the sweep stops before its next job.

Lightning alone turns SIGTERM into ``SIGTERMException``, a ``SystemExit`` with no code: the process then exits 0,
which a scheduler reads as success. Lightning keeps calling a handler installed before ``fit`` (it chains them),
so this one still runs during training. Checkpoints are written atomically (AtomicCheckpointIO), so raising
mid-save keeps the previous last.ckpt.

A Python signal handler only runs between bytecodes of the main thread: a job blocked in a collective (a DDP rank
waiting for one that died) would never see it. A watchdog thread, woken by the signal through
``signal.set_wakeup_fd``, bounds that: if the job has not stopped ``WATCHDOG_S`` seconds after the signal, it runs
the force-stop hooks (the DDP launcher kills the other ranks, which ends the collective with an error), and after as
long again it ends the process with the signal's exit status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator

from transferlab.utils import lifecycle
from transferlab.utils.ranks import LEADER_PID, follower_rank

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Seconds a stopping job may take before the watchdog steps in (twice that: the process ends).
WATCHDOG_S = float(os.environ.get("TRANSFERLAB_STOP_GRACE_S", 20))


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
    left_job = threading.Event()  # set when the armed block is left (the job stopped)
    watchdog: threading.Thread | None = None
    wakeup: tuple | None = None  # the socket pair behind signal.set_wakeup_fd (kept open while installed)


def _handler(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if _State.signum is not None:  # already stopping: let the clean-up finish (SIGKILL still ends it)
        log.warning("%s again: already stopping, finishing the clean-up.", name)
        return
    _State.signum = signum
    _tell_leader(signum)
    if _State.armed:
        raise JobInterrupted(signum)
    log.warning("%s received: the sweep stops before its next job.", name)


def _tell_leader(signum: int) -> None:
    """An extra DDP rank that got a signal of its own passes it on to rank 0: the whole job stops, not one rank."""
    leader = os.environ.get(LEADER_PID)
    if follower_rank() > 0 and leader:
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.kill(int(leader), signum)


class _Watchdog(threading.Thread):
    """Woken by every signal (the wakeup fd); bounds how long a job that should stop may take."""

    def __init__(self, reader: socket.socket):
        super().__init__(daemon=True, name="transferlab-signal-watchdog")
        self.reader = reader

    def run(self) -> None:
        while True:
            try:
                data = self.reader.recv(64)
            except OSError:
                return
            if not data:
                return
            signum = data[0]
            if signum not in SIGNALS or not _State.armed:
                continue
            for step in ("force", "exit"):
                stopped = _State.left_job.wait(WATCHDOG_S)
                if stopped:
                    break
                if step == "force":
                    log.warning("%s: the job is still running %.0f s on; stopping what it waits for.",
                                signal.Signals(signum).name, WATCHDOG_S)  # fmt: skip
                    lifecycle.force_stop()
                else:
                    log.error("%s: the job did not stop; ending the process.", signal.Signals(signum).name)
                    os._exit(exit_status(signum))


def _start_watchdog() -> None:
    if _State.watchdog is not None:
        return
    reader, writer = socket.socketpair()
    reader.setblocking(True)
    writer.setblocking(False)
    try:
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread of the main interpreter
        reader.close()
        writer.close()
        return
    _State.watchdog = _Watchdog(reader)
    _State.wakeup = (reader, writer)
    _State.watchdog.start()


def install() -> None:
    """Route SIGTERM and SIGINT to this module and start the watchdog (idempotent; only the main thread may set
    handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is not _handler:
            _State.originals[signum] = current
            signal.signal(signum, _handler)
    _start_watchdog()


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
    _State.left_job.clear()
    _State.armed = True
    try:
        if _State.signum is not None:
            raise JobInterrupted(_State.signum)
        yield
    finally:
        _State.armed = False
        _State.left_job.set()


def exit_status(signum: int) -> int:
    """The shell's convention for a process ended by ``signum``: 128 + signal number (143 for SIGTERM)."""
    return 128 + int(signum)
