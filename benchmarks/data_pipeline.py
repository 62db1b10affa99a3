"""data_pipeline: can the DataModule feed training? Its batches per second vs the model's training steps per second.

- ``loader``: the real ``ImageDataModule`` (as Hydra builds it): its ``train_dataloader()`` iterated across
  epochs (the sampler reshuffles per epoch; workers, where configured, persist) and every batch moved to
  the device and preprocessed with augmentation, as ``on_after_batch_transfer`` does while training.
- ``train_step``: the fine-tuning network's training step (forward, backward, AdamW) at the same batch size,
  on batches already in memory, so it measures the model alone.

``loader_vs_train_ratio`` = loader batches/s over training steps/s (target >= 5: the loader then costs at most
a sixth of a step even with no overlap). Rounds alternate loader, train_step, loader, ... after a warm-up.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from benchmarks.common import (
    alternate,
    bare_train_step,
    compose_config,
    device_of,
    median,
    quiet,
    sync,
    table,
    take_batches,
    target,
    timed_steps,
    workdir,
)
from transferlab.build import build_datamodule, build_module

NAME = "data_pipeline"
TARGETS = {"loader_vs_train_ratio": (">=", 5.0)}


def _loader_rate(datamodule, device: torch.device, n_batches: int, warmup: int, state: dict) -> float:
    """Batches per second over ``n_batches`` (after ``warmup``), epochs chained as the trainer chains them."""
    loader = state.setdefault("loader", datamodule.train_dataloader())  # one loader: workers persist across epochs
    count, start = 0, None
    while count < warmup + n_batches:
        loader.sampler.set_epoch(state.setdefault("epoch", 0))
        state["epoch"] += 1
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            datamodule.preprocess(images, augment=True)
            count += 1
            if count == warmup:
                sync(device)
                start = time.perf_counter()
            if count == warmup + n_batches:
                break
    sync(device)
    return n_batches / (time.perf_counter() - start)


def run(
    full: bool = False,
    steps: int | None = None,
    loader_batches: int | None = None,
    rounds: int | None = None,
    warmup: int = 1,
    train_size: int = 2000,
    overrides=(),
) -> dict:
    """Interleave loader and training-step rounds; print a table; return the JSON section."""
    quiet()
    steps = steps or (10 if full else 4)
    loader_batches = loader_batches or (200 if full else 40)
    rounds = rounds or (3 if full else 2)
    worker_options = [None, 2] if full else [None]  # None = as configured (data.num_workers)
    with workdir(NAME) as tmp:
        cfg = compose_config(tmp, ["strategy=fine_tuning", f"data.train_size={train_size}", *overrides])
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = build_datamodule(cfg)
        module = build_module(cfg, datamodule.num_classes)
        device = device_of(module)
        batch = datamodule.batch_size
        step = bare_train_step(module, datamodule, take_batches(datamodule.train_dataloader(), warmup + steps))

        contenders, loaders = {}, {}
        for workers in worker_options:
            name = f"loader (num_workers={datamodule.num_workers if workers is None else workers})"
            if workers is not None:
                dm = build_datamodule(
                    compose_config(tmp, [f"data.train_size={train_size}", f"data.num_workers={workers}", *overrides])
                )
                dm.setup("fit")
            else:
                dm = datamodule
            state = loaders[name] = {}
            contenders[name] = lambda dm=dm, state=state: _loader_rate(dm, device, loader_batches, warmup, state)
        contenders["train_step"] = lambda: 1 / median(timed_steps(step, steps, warmup, device)["wall"])
        rates = alternate(contenders, rounds)  # per round: batches/s of each loader, steps/s of training
        for state in loaders.values():  # stop persistent workers
            state.pop("loader", None)

    train_rate = median(rates.pop("train_step"))
    loader_rates = {k: median(v) for k, v in rates.items()}
    default_name = next(iter(loader_rates))
    result = {
        "loader_vs_train_ratio": loader_rates[default_name] / train_rate,
        "loader_batches_per_s": loader_rates,
        "train_steps_per_s": train_rate,
        "settings": {"batch_size": batch, "image_size": int(cfg.data.image_size), "num_workers": datamodule.num_workers,
                     "persistent_workers": "yes when num_workers > 0", "train_strategy": "fine_tuning (all)",
                     "device": str(device), "rounds": rounds, "loader_batches_per_round": loader_batches,
                     "train_steps_per_round": steps},
    }  # fmt: skip
    if len(loader_rates) > 1:
        result["ratio_by_loader"] = {k: v / train_rate for k, v in loader_rates.items()}
    result["targets"] = {k: target(result[k], *TARGETS[k]) for k in TARGETS}
    rows = [[k, v, 1000 / v, v / train_rate] for k, v in loader_rates.items()]
    rows.append(["training step (fine_tuning, all)", train_rate, 1000 / train_rate, 1.0])
    table(
        f"data_pipeline: batches of {batch} at {cfg.data.image_size}px on {device}, loader + preprocessing vs training",
        ["contender", "batches/s", "ms/batch", "vs training"],
        rows,
        caption=f"loader_vs_train_ratio {result['loader_vs_train_ratio']:.1f} (target >= 5)",
    )
    return result
