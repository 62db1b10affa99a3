"""What every benchmark shares: real configs composed like the CLI does, product objects built from them,
steady-state step timing, the machine record, and rich tables.

Benchmarks never build models or data themselves: they compose ``configs/`` with Hydra's compose API
(with ``transferlab.config.compose``) and call ``transferlab.build``, so what they time is what ``transferlab.train``
runs. Only the *reference* contenders (a bare PyTorch loop, a bare forward pass) are written here.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning import Callback, Trainer
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from transferlab.build import build_trainer
from transferlab.config import compose
from transferlab.config.setup import setup_environment

setup_environment()
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)  # logs: no 80-column squeeze

# The benchmark setting unless a benchmark says otherwise: real bundled EfficientNet-Lite0 weights and real
# Fashion-MNIST at 64 px, the project's default callbacks, loggers off (nothing to disk but checkpoints).
BASE_OVERRIDES = (
    "model=efficientnet_lite0",
    "model.weights=bundled",
    "data=fashion_mnist",
    "data.image_size=64",
    "logger=none",
    "seed=0",
)


def quiet() -> None:
    """Keep Lightning's start-up chatter and well-known small-data warnings out of the benchmark tables."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transferlab"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")


def merge_overrides(*groups: Iterable[str]) -> list[str]:
    """Hydra overrides in order, a later ``key=value`` replacing an earlier one for the same key."""
    merged: dict[str, str] = {}
    for group in groups:
        for o in group:
            merged[o.split("=", 1)[0].lstrip("+~")] = o
    return list(merged.values())


def compose_config(out_dir: str | Path, overrides: Iterable[str] = ()) -> DictConfig:
    """``configs/train.yaml`` composed with the benchmark base and ``overrides``, all outputs under ``out_dir``."""
    return compose.compose_config(Path(out_dir), merge_overrides(BASE_OVERRIDES, overrides))


@contextmanager
def workdir(prefix: str):
    """A temporary folder for run outputs (checkpoints, feature caches), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"transferlab-bench-{prefix}-") as d:
        yield Path(d)


class _Discard(io.TextIOBase):
    """A text stream that drops everything (a terminal nobody looks at)."""

    def write(self, s: str) -> int:
        return len(s)


def make_trainer(cfg: DictConfig, *callbacks: Callback) -> Trainer:
    """``transferlab.build.build_trainer`` (the project's default callbacks, loggers off) plus ``callbacks``.

    The rich progress bar stays in and renders every step as on a terminal, but into a stream that drops
    the output, so its cost is measured while the benchmark tables stay readable.
    """
    trainer = build_trainer(cfg, with_loggers=False)
    for cb in trainer.callbacks:
        if isinstance(cb, RichProgressBar):
            cb._console_kwargs = {"file": _Discard(), "force_terminal": True, "width": 120}
    trainer.callbacks.extend(callbacks)
    return trainer


def device_of(module) -> torch.device:
    """The device a Lightning run of ``module`` uses (what ``accelerator: auto`` picks)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bare_train_step(module, datamodule, batches: list, device: torch.device | None = None) -> Callable[[int], None]:
    """A plain PyTorch training step for ``module``'s network: no Lightning, no metrics, no logging.

    Same network, loss, optimizer and LR schedule (the module's own ``configure_optimizers``), same
    batch preprocessing (``datamodule.preprocess`` with augmentation, as ``on_after_batch_transfer``
    does while training), the uint8 ``batches`` already in memory.
    """
    import torch.nn.functional as F

    device = device or device_of(module)
    module.to(device).train()
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    batches = [(x.to(device), y.to(device)) for x, y in batches]
    net, channels_last, smoothing = module.net, module.channels_last, module.label_smoothing

    def step(i: int) -> None:
        images, labels = batches[i % len(batches)]
        x = datamodule.preprocess(images, augment=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(net(x), labels, label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    step.optimizer = optimizer
    return step


def take_batches(loader, n: int) -> list:
    """The first ``n`` batches of ``loader`` (cycling over epochs if it is shorter), held in memory."""
    out = []
    while len(out) < n:
        out += [b for _, b in zip(range(n - len(out)), loader, strict=False)]
    return out


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work so wall-clock times are real (no-op on CPU)."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


class StepTimer(Callback):
    """Wall and process CPU time at every training batch start (and the last batch end).

    The interval between two batch starts is one whole step as the trainer runs it: fetching and
    preprocessing the batch, forward, backward, optimizer and scheduler, metrics, logging, callbacks.
    """

    def __init__(self):
        self.marks: list[tuple[float, float]] = []
        self._device = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.marks, self._device = [], pl_module.device

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sync(self._device)
        self.marks.append(_now())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(self._device)
        self._last_end = _now()

    def on_train_end(self, trainer, pl_module) -> None:
        self.marks.append(self._last_end)

    def steps(self, warmup: int) -> dict[str, list[float]]:
        """``{"wall": [...], "cpu": [...]}``: seconds of each step after the first ``warmup`` ones."""
        pairs = list(zip(self.marks, self.marks[1:], strict=False))[warmup:]
        return {"wall": [b[0] - a[0] for a, b in pairs], "cpu": [b[1] - a[1] for a, b in pairs]}

    def step_times(self, warmup: int) -> list[float]:
        """Wall seconds of each step after the first ``warmup`` ones."""
        return self.steps(warmup)["wall"]


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def timed_steps(step: Callable[[int], None], n: int, warmup: int, device=None) -> dict[str, list[float]]:
    """Run ``step(i)`` ``warmup + n`` times; wall and CPU seconds of the last ``n`` (a bare loop's StepTimer)."""
    out: dict[str, list[float]] = {"wall": [], "cpu": []}
    for i in range(warmup + n):
        sync(device)
        wall, cpu = _now()
        step(i)
        sync(device)
        if i >= warmup:
            end_wall, end_cpu = _now()
            out["wall"].append(end_wall - wall)
            out["cpu"].append(end_cpu - cpu)
    return out


def alternate(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, list]:
    """Run every contender once per round, in turn (A, B, A, B, ...); what each returned, round by round.

    Interleaving spreads slow drifts of the machine (other jobs, clock, heat) over all contenders alike,
    and lets callers compare neighbouring rounds (paired ratios) rather than distant ones.
    """
    out: dict[str, list] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            gc.collect()  # outside every timer: no contender pays for another's garbage
            out[name].append(fn())
    return out


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator[i] / denominator[i] (each a per-round value)."""
    return median([a / b for a, b in zip(numerator, denominator, strict=True)])


def median(values: Sequence[float]) -> float:
    """Median (robust to the odd step that another process interrupted)."""
    return statistics.median(values) if values else float("nan")


def tensor_bytes(obj) -> int:
    """Bytes held by all tensors inside ``obj`` (nested dicts, lists, tuples)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Sum of tensor bytes in ``optimizer.state`` (AdamW: two moments per trainable tensor, plus step counters)."""
    return sum(tensor_bytes(s) for s in optimizer.state.values())


# --- the machine ------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Where the numbers came from: CPU model, cores, torch and its threads, CUDA device, load and niceness."""
    import lightning
    import timm

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu_model": _cpu_model(),
        "cpu_cores": cores,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": cuda,
        "lightning": lightning.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "nice": os.nice(0) if hasattr(os, "nice") else 0,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    info["line"] = (
        f"{info['cpu_model']}, {cores} cores, torch {info['torch']} ({info['torch_threads']} threads), "
        f"CUDA: {cuda or 'none'}, nice {info['nice']}, load avg {info['load_avg_1m']:.2f} at start"
    )
    return info


# --- output -----------------------------------------------------------------------------------
def target(value: float, op: str, bound: float) -> dict:
    """A target record: the value, the bound and whether it is met."""
    met = value >= bound if op == ">=" else value <= bound
    return {"value": round(value, 4), "target": f"{op} {bound}", "met": bool(met)}


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence], caption: str | None = None) -> None:
    """Print a rich table (numbers right-aligned)."""
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*[fmt(v) for v in row])
    console.print(t)


def fmt(v) -> str:
    """Human formatting for table cells."""
    if isinstance(v, bool) or v is None:
        return {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[v]
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
