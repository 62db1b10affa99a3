"""Measure what a comparison needs: fit time, training throughput and peak memory."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import torch
from lightning import Callback


def current_rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc), so RSS reflects what is live before a fit starts.

    No gc.collect() here: with torch, Lightning and timm loaded a full collection costs about 0.4 s of
    CPU, a fifth of a warm feature-extraction fit (benchmarks/feature_cache). A sweep job's garbage is
    collected when the job ends (utils/task.py); other code fitting repeatedly in one process should
    call gc.collect() between fits.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _PeakSampler(threading.Thread):
    """Samples RSS every few milliseconds: CPU runs have no allocator counter like CUDA's."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, current_rss_mb(), threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, current_rss_mb())

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.peak, current_rss_mb())


class RunStats(Callback):
    """Records ``time/fit_s``, ``throughput/train_samples_per_s``, ``memory/peak_mb`` and
    ``memory/fit_increase_mb`` (peak minus what the process held when the fit started) into ``self.stats``.

    Throughput counts only time spent inside training batches (forward, backward, step), so it
    compares strategies rather than validation or caching. Peak memory is CUDA's max allocated
    on GPU, and peak resident memory (sampled) on CPU.

    No host sync per step: on CUDA each batch is bracketed by two CUDA events, read once per epoch (a
    ``torch.cuda.synchronize()`` per batch would stall the CPU until the GPU drained its queue); on CPU the
    wall clock is already exact.
    """

    def __init__(self):
        self.stats: dict[str, float] = {}
        self._samples = 0
        self._train_time = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()
        self._samples, self._train_time, self._events = 0, 0.0, []
        # Lightning (2.6) moves the module back to the CPU before on_fit_end: remember the fit's device now.
        self._device = pl_module.device
        self._cuda = self._device.type == "cuda"
        if self._cuda:
            torch.cuda.reset_peak_memory_stats(self._device)
            self._baseline_cuda = torch.cuda.memory_allocated(self._device) / 2**20
            self._sampler = None
        else:
            _release_freed_memory()
            self._baseline = current_rss_mb()
            self._sampler = _PeakSampler()
            self._sampler.start()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self._events.append((start, torch.cuda.Event(enable_timing=True)))
        else:
            self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._cuda:
            self._events[-1][1].record()
        else:
            self._train_time += time.perf_counter() - self._batch_start
        self._samples += len(batch[1]) * trainer.world_size

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._read_events()

    def _read_events(self) -> None:
        """Add the recorded CUDA batches' time: one wait for the GPU per epoch, not two per batch."""
        if self._events:
            self._events[-1][1].synchronize()
            self._train_time += sum(start.elapsed_time(end) for start, end in self._events) / 1000.0
            self._events = []

    def on_fit_end(self, trainer, pl_module) -> None:
        self._read_events()  # a fit stopped mid-epoch (max_steps, a signal) still counts its last batches
        if self._cuda:
            torch.cuda.synchronize(self._device)
        peak = torch.cuda.max_memory_allocated(self._device) / 2**20 if self._cuda else self._sampler.stop()
        baseline = self._baseline_cuda if self._cuda else self._baseline
        self.stats = {
            "time/fit_s": time.perf_counter() - self._fit_start,
            "time/train_s": self._train_time,
            "throughput/train_samples_per_s": self._samples / self._train_time if self._train_time else 0.0,
            "memory/peak_mb": peak,
            # Jobs of a sweep share one process, so the peak alone also counts earlier jobs' leftovers.
            "memory/fit_increase_mb": max(peak - baseline, 0.0),
        }

    def on_exception(self, trainer, pl_module, exception) -> None:
        if getattr(self, "_sampler", None) is not None and self._sampler.is_alive():
            self._sampler.stop()
