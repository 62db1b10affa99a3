"""framework_overhead: transferlab's fine-tuning steps under Lightning vs a bare PyTorch loop.

- ``lightning``: the ``FineTuning`` LightningModule exactly as Hydra builds it, fed by the real DataModule and
  driven by a Lightning Trainer with the project's default callbacks (checkpointing, rich progress bar,
  run stats, epoch seeding), loggers off. Every step: loader, batch preprocessing, forward, loss, metrics,
  logging, backward, AdamW, LR schedule, callback hooks.
- ``bare``: the same network (built from the same config), loss, optimizer, schedule and batch preprocessing
  in a plain loop over uint8 batches already in memory.

Steady state only: each round is a fresh ``trainer.fit`` (or loop) whose first ``warmup`` steps are dropped;
rounds alternate lightning, bare, lightning, bare, ... ``throughput_ratio`` = lightning / bare steps per
second, from the median step times (target >= 0.95).
"""

from __future__ import annotations

from benchmarks.common import (
    StepTimer,
    alternate,
    bare_train_step,
    compose_config,
    device_of,
    make_trainer,
    median,
    paired_ratio,
    quiet,
    table,
    take_batches,
    target,
    timed_steps,
    workdir,
)
from transferlab.build import build_module, build_run

NAME = "framework_overhead"
TARGETS = {"throughput_ratio": (">=", 0.95)}


def run(full: bool = False, steps: int | None = None, rounds: int | None = None, warmup: int = 2, overrides=()) -> dict:
    """Interleave Lightning and bare rounds; print a table; return the JSON section."""
    quiet()
    steps = steps or (20 if full else 5)
    rounds = rounds or (6 if full else 4)
    with workdir(NAME) as tmp:
        probe = compose_config(tmp, overrides)
        batch = int(probe.data.batch_size)
        # one epoch holds every step of a round (no epoch end, validation or checkpoint inside the window)
        settings = [
            "strategy=fine_tuning",
            f"data.train_size={batch * (warmup + steps + 2)}",
            "data.val_size=10",
            "trainer.max_epochs=1",
            f"+trainer.max_steps={warmup + steps}",
        ]
        cfg = compose_config(tmp, [*settings, *overrides])
        run = build_run(cfg, trainer=False)
        datamodule, module = run.datamodule, run.module
        bare_module = build_module(cfg, datamodule.num_classes)  # same config and seed: the same network
        device = device_of(module)
        step = bare_train_step(bare_module, datamodule, take_batches(datamodule.train_dataloader(), warmup + steps))

        def lightning_round() -> dict[str, list[float]]:
            timer = StepTimer()
            make_trainer(cfg, timer).fit(module, datamodule=datamodule)
            return timer.steps(warmup)

        def bare_round() -> dict[str, list[float]]:
            return timed_steps(step, steps, warmup, device)

        rounds_out = alternate({"lightning": lightning_round, "bare": bare_round}, rounds)

    # per round: the median step; the ratio pairs each Lightning round with the bare round right after it
    per_round = {k: {c: [median(r[c]) for r in v] for c in ("wall", "cpu")} for k, v in rounds_out.items()}
    lightning_s, bare_s = median(per_round["lightning"]["wall"]), median(per_round["bare"]["wall"])
    result = {
        "throughput_ratio": paired_ratio(per_round["bare"]["wall"], per_round["lightning"]["wall"]),
        "throughput_ratio_cpu_time": paired_ratio(per_round["bare"]["cpu"], per_round["lightning"]["cpu"]),
        "steps_per_s": {"lightning": 1 / lightning_s, "bare": 1 / bare_s},
        "samples_per_s": {"lightning": batch / lightning_s, "bare": batch / bare_s},
        "median_step_s": {"lightning": lightning_s, "bare": bare_s},
        "overhead_ms_per_step": 1000 * (lightning_s - bare_s),
        "settings": {"strategy": "fine_tuning (all)", "batch_size": batch, "image_size": int(cfg.data.image_size),
                     "steps_per_round": steps, "warmup_steps": warmup, "rounds": rounds, "device": str(device),
                     "ratio": "median over rounds of (bare step / Lightning step), each round's median step"},
        "round_median_step_s": {k: [round(t, 4) for t in v["wall"]] for k, v in per_round.items()},
    }  # fmt: skip
    result["targets"] = {k: target(result[k], *TARGETS[k]) for k in TARGETS}
    table(
        f"framework_overhead: fine-tuning steps, batch {batch} at {cfg.data.image_size}px on {device} "
        f"({rounds} alternating rounds x {steps} steps after {warmup} warm-up)",
        ["contender", "median step (ms)", "steps/s", "samples/s", "CPU s/step"],
        [
            [
                "Lightning + transferlab module",
                1000 * lightning_s,
                1 / lightning_s,
                batch / lightning_s,
                median(per_round["lightning"]["cpu"]),
            ],
            ["bare PyTorch loop", 1000 * bare_s, 1 / bare_s, batch / bare_s, median(per_round["bare"]["cpu"])],
        ],  # fmt: skip
        caption=f"throughput_ratio {result['throughput_ratio']:.3f} (target >= 0.95; by CPU time "
        f"{result['throughput_ratio_cpu_time']:.3f}); overhead {result['overhead_ms_per_step']:.1f} ms/step",
    )
    return result
