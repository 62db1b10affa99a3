"""One sweep job per GPU: a job claims a free GPU and its share of the CPU cores, and gives both back when it ends.

A claim is an exclusive ``flock`` on ``<lock_dir>/gpu-<id>.lock``: the OS drops it when the job's process dies,
so a job that fails, is killed or crashes never leaves its GPU taken, and two sweeps on one machine share the
same locks. The GPU is handed to the job as ``CUDA_VISIBLE_DEVICES``, so the job's config (``devices: 1``) is the
same on whichever GPU it lands, and a re-run sweep still recognises it (sweeps/resume.py). torch is imported
only inside the functions: the launcher imports this module before any job starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "TRANSFERLAB_LOCK_DIR"
# The GPU a worker process's CUDA was first initialised on: CUDA_VISIBLE_DEVICES is read once per process, so a
# reused worker (joblib keeps them) must get the same GPU again.
_pinned: str | None = None


def default_lock_dir() -> Path:
    """``$TRANSFERLAB_LOCK_DIR``, else one folder in the system temp dir that every sweep on this machine shares."""
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "transferlab-gpu-locks")


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (indices or UUIDs), else 0..n-1."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch  # only when the environment does not say: device_count() asks the driver (NVML), no context

    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass(frozen=True)
class Claim:
    """A held GPU: its id, its slot (position among the visible GPUs) and the CPU cores that come with it."""

    gpu: str
    slot: int
    cores: tuple[int, ...]
    fd: int


def cores_for(slot: int, slots: int, cores: Sequence[int]) -> tuple[int, ...]:
    """Slot ``slot``'s contiguous share of ``cores`` (every slot gets at least one core)."""
    cores = sorted(cores)
    share = max(1, len(cores) // slots)
    start = (slot * share) % len(cores)
    return tuple(cores[start : start + share])


class DeviceClaims:
    """Claims over ``gpus`` (ids as in CUDA_VISIBLE_DEVICES) through lock files in ``lock_dir``."""

    def __init__(self, gpus: Sequence[str], lock_dir: str | Path | None = None, poll_s: float = 0.5):
        self.gpus = list(gpus)
        self.lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
        self.poll_s = poll_s

    def _lock_path(self, gpu: str) -> Path:
        return self.lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu)}.lock"

    def try_claim(self, gpu: str) -> Claim | None:
        """Claim ``gpu`` if no other process holds it."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path(gpu), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious `cat`
        slot = self.gpus.index(gpu)
        return Claim(gpu, slot, cores_for(slot, len(self.gpus), sorted(os.sched_getaffinity(0))), fd)

    def claim(self, only: str | None = None) -> Claim:
        """Wait for a free GPU (``only``: that one) and claim it."""
        candidates = [only] if only is not None else self.gpus
        waited = False
        while True:
            for gpu in candidates:
                claim = self.try_claim(gpu)
                if claim is not None:
                    return claim
            if not waited:
                log.info("All of GPU(s) %s are taken by other jobs; waiting for one.", ", ".join(candidates))
                waited = True
            time.sleep(self.poll_s)

    @staticmethod
    def release(claim: Claim) -> None:
        """Give the GPU back (closing the file drops the lock)."""
        with contextlib.suppress(OSError):
            fcntl.flock(claim.fd, fcntl.LOCK_UN)
        os.close(claim.fd)

    @contextlib.contextmanager
    def held(self, threads_unset: bool = True) -> Iterator[Claim]:
        """Hold a GPU for the block: CUDA_VISIBLE_DEVICES names it, this process runs on its cores (and, with
        ``threads_unset``, torch uses that many threads); all of it is given back when the block ends or raises."""
        global _pinned
        import torch  # in the job's process, which imports it anyway; CUDA is not initialised by this

        claim = self.claim(only=_pinned)
        old_env, old_cores, old_threads = (
            os.environ.get("CUDA_VISIBLE_DEVICES"),
            os.sched_getaffinity(0),
            torch.get_num_threads(),
        )
        try:
            os.environ["CUDA_VISIBLE_DEVICES"] = claim.gpu
            os.sched_setaffinity(0, claim.cores)
            if threads_unset:
                torch.set_num_threads(len(claim.cores))
            log.info("Job on GPU %s with CPU cores %s", claim.gpu, ",".join(map(str, claim.cores)))
            yield claim
        finally:
            if torch.cuda.is_initialized():
                _pinned = claim.gpu  # this process's CUDA now sees only this GPU, whatever the variable says later
            os.sched_setaffinity(0, old_cores)
            torch.set_num_threads(old_threads)
            if old_env is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = old_env
            self.release(claim)
