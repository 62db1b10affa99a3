"""strategy_costs: what each strategy costs to train and to keep, in one table.

Strategies (``variant``-style overrides, each a real ``transferlab.train`` setup): feature extraction with
the feature cache, fine-tuning all layers, fine-tuning the last 2 blocks, LoRA r=8. Each round runs one
short real ``trainer.fit`` per strategy (strategies alternate; a fresh module every round) with the
project's default callbacks, so ModelCheckpoint writes a real checkpoint as training does.

Columns: steady-state training throughput (samples/s, median step after warm-up), peak memory (CUDA max
allocated, or on CPU the RunStats resident-memory peak and its rise during the fit), trainable parameters,
optimizer-state bytes (tensors in ``optimizer.state`` after the fit's steps), checkpoint size (last.ckpt).
LoRA and feature extraction checkpoints hold only trainable tensors (plus buffers) by design.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

from benchmarks.common import (
    StepTimer,
    compose_config,
    make_trainer,
    median,
    optimizer_state_bytes,
    quiet,
    table,
    target,
    workdir,
)
from transferlab.build import build_run
from transferlab.callbacks import RunStats

NAME = "strategy_costs"
STRATEGIES = {
    "feature_extraction (cache)": ["strategy=feature_extraction"],
    "fine_tuning all": ["strategy=fine_tuning", "strategy.unfreeze=all"],
    "fine_tuning last 2 blocks": ["strategy=fine_tuning", "strategy.unfreeze=last_n_blocks", "strategy.n_blocks=2"],
    "lora r=8": ["strategy=lora", "strategy.r=8", "strategy.alpha=16"],
}
TARGETS = {"lora_optimizer_state_saving": (">=", 10.0), "lora_checkpoint_saving": (">=", 5.0)}


def _fit(cfg, warmup: int) -> dict:
    """One short fit (one epoch); the costs it measured."""
    shutil.rmtree(cfg.paths.output_dir, ignore_errors=True)
    run = build_run(cfg, trainer=False)
    module, data = run.module, run.datamodule
    timer = StepTimer()
    trainer = make_trainer(cfg, timer)
    trainer.fit(module, datamodule=data)
    stats = next(cb for cb in trainer.callbacks if isinstance(cb, RunStats))
    ckpt = Path(trainer.checkpoint_callback.last_model_path)
    return {
        "step_times": timer.step_times(warmup),
        "batch_size": cfg.data.batch_size,
        "peak_mb": stats.stats["memory/peak_mb"],
        "peak_rise_mb": stats.stats["memory/peak_mb"] - getattr(stats, "_baseline", 0.0)
        if not getattr(stats, "_cuda", False)
        else stats.stats["memory/peak_mb"] - getattr(stats, "_baseline_cuda", 0.0),
        "cuda": bool(getattr(stats, "_cuda", False)),
        "params": module.param_counts(),
        "optimizer_state_bytes": optimizer_state_bytes(trainer.optimizers[0]),
        "checkpoint_bytes": ckpt.stat().st_size if ckpt.is_file() else None,
        "extract_s": data.fit_setup_seconds,
    }


def run(
    full: bool = False,
    steps: int | None = None,
    rounds: int | None = None,
    warmup: int = 2,
    strategies: dict | None = None,
    overrides=(),
) -> dict:
    """Fit every strategy once per round (alternating); print one table; return the JSON section."""
    quiet()
    steps = steps or (20 if full else 5)
    rounds = rounds or (3 if full else 2)
    strategies = strategies or STRATEGIES
    results: dict[str, list[dict]] = {name: [] for name in strategies}
    with workdir(NAME) as tmp:
        probe = compose_config(tmp, overrides)
        batch = int(probe.data.batch_size)
        settings = [
            f"data.train_size={batch * (warmup + steps)}",  # one epoch = warm-up + measured steps (drop_last)
            f"data.val_size={batch}",
            "trainer.max_epochs=1",
        ]
        for _ in range(rounds):
            for name, strategy in strategies.items():
                cfg = compose_config(tmp / name.replace(" ", "_"), [*settings, *strategy, *overrides])
                gc.collect()  # as between sweep jobs (utils/task.py): each fit starts from live memory only
                results[name].append(_fit(cfg, warmup))

    table_rows, section = [], {}
    for name, runs in results.items():
        first = runs[0]  # memory, optimizer state and checkpoint from the first (cold) fit of each
        step_s = median([t for r in runs for t in r["step_times"]])
        section[name] = {
            "train_samples_per_s": first["batch_size"] / step_s,
            "peak_memory_mb": first["peak_mb"],
            "peak_memory_rise_mb": first["peak_rise_mb"],
            "memory_kind": "cuda max allocated" if first["cuda"] else "cpu rss (RunStats)",
            "trainable_params": first["params"]["params/trainable"],
            "total_params": first["params"]["params/total"],
            "optimizer_state_bytes": first["optimizer_state_bytes"],
            "checkpoint_bytes": first["checkpoint_bytes"],
            "feature_extraction_s": first["extract_s"] or None,
        }
        s = section[name]
        table_rows.append([
            name, s["train_samples_per_s"], s["peak_memory_mb"], s["peak_memory_rise_mb"], s["trainable_params"],
            s["optimizer_state_bytes"] / 2**20, (s["checkpoint_bytes"] or 0) / 2**20,
        ])  # fmt: skip
    result = {"strategies": section, "settings": {"batch_size": batch, "steps_per_round": steps, "warmup_steps": warmup,
                                                   "rounds": rounds, "image_size": int(probe.data.image_size)}}  # fmt: skip
    ft, lora = section.get("fine_tuning all"), section.get("lora r=8")
    if ft and lora:
        result["lora_optimizer_state_saving"] = ft["optimizer_state_bytes"] / max(lora["optimizer_state_bytes"], 1)
        result["lora_checkpoint_saving"] = (ft["checkpoint_bytes"] or 0) / max(lora["checkpoint_bytes"] or 1, 1)
        result["targets"] = {k: target(result[k], *TARGETS[k]) for k in TARGETS}
    table(
        f"strategy_costs: EfficientNet-Lite0 at {probe.data.image_size}px, batch {batch} "
        f"({rounds} alternating rounds, {steps} steps after {warmup} warm-up)",
        ["strategy", "train samples/s", "peak MB", "fit rise MB", "trainable params", "optimizer MB", "checkpoint MB"],
        table_rows,
        caption=(
            f"LoRA vs fine-tuning all: optimizer state {result['lora_optimizer_state_saving']:.1f}x smaller, "
            f"checkpoint {result['lora_checkpoint_saving']:.1f}x smaller. Feature extraction throughput is head "
            "training on cached features (extraction is timed separately)."
            if "targets" in result
            else None
        ),
    )
    return result
