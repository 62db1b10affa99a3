"""speed_options: do ``trainer.precision=bf16-mixed``, ``model.channels_last`` and ``model.compile`` pay off here?

For every device present (CPU always, the GPU too when there is one) it builds the fine-tuning run with the
device's defaults and with each flag flipped, then measures, alternating the contenders round by round:

- training throughput: a real ``trainer.fit`` (the configured precision plugin, default callbacks, loggers
  off), median steady-state step after warm-up;
- inference throughput: the module's forward in eval mode under ``torch.inference_mode`` and the trainer's
  own precision context (what Lightning wraps validation and test in), eval batch size.

Each flag gets a verdict (helps / hurts / neutral within 5%) and a check of the device default: a flag that
makes training slower must not be on by default for that device.

Inference defaults are judged too, on feature extraction's frozen pass (the bundled backbone's pooled
features in eval mode, ``torch.inference_mode``): fp32 against bf16 autocast, alternating. A precision that
makes the pass >= 1.3x faster at parity (pooled features within 10% relative norm) must be what
``strategy.extract_precision=auto`` picks on that device, and ``auto`` must not pick a slower one. ``model.compile`` is measured only with
``--full`` (compiling takes minutes on CPU); quick mode reports it as skipped.
"""

from __future__ import annotations

import time

import torch
from omegaconf import OmegaConf

from benchmarks.common import (
    StepTimer,
    alternate,
    compose_config,
    console,
    make_trainer,
    median,
    quiet,
    sync,
    table,
    workdir,
)
from transferlab.build import build_datamodule, build_module, build_run
from transferlab.utils import precision

NAME = "speed_options"
NEUTRAL = 0.05  # within +-5%: neither helps nor hurts
EXTRACT_SPEEDUP = 1.3  # a frozen-pass precision this much faster (at parity) must be auto's choice
EXTRACT_PARITY = 0.10  # parity: pooled features within 10% relative norm of fp32's


def _devices() -> list[tuple[str, str]]:
    """(device name, trainer config) for every device present; the trainer config carries that device's defaults."""
    return [("cpu", "cpu")] + ([("cuda", "gpu")] if torch.cuda.is_available() else [])


def _flags(full: bool) -> dict[str, tuple[str, object, object]]:
    """flag -> (config key, value when on, value when off)."""
    flags = {
        "channels_last": ("model.channels_last", True, False),
        "bf16-mixed": ("trainer.precision", "bf16-mixed", "32-true"),
        "compile": ("model.compile", True, False),
    }
    return flags if full else {k: v for k, v in flags.items() if k != "compile"}


class _Contender:
    """One configuration: a module and datamodule built once, measured round after round."""

    def __init__(self, cfg, device: str, steps: int, warmup: int, infer_batches: int):
        self.cfg, self.device, self.steps, self.warmup, self.infer_batches = cfg, device, steps, warmup, infer_batches
        run = build_run(cfg, trainer=False)
        self.datamodule, self.module = run.datamodule, run.module
        self.train_step_s: list[float] = []
        self.infer_batch_s: list[float] = []
        self.first_step_s: float | None = None

    def train_round(self) -> float:
        timer = StepTimer()
        make_trainer(self.cfg, timer).fit(self.module, datamodule=self.datamodule)
        steps = timer.step_times(0)
        if self.first_step_s is None:
            self.first_step_s = steps[0]  # includes compilation when model.compile=true
        self.train_step_s += steps[self.warmup :]
        return median(steps[self.warmup :])

    def infer_round(self) -> float:
        trainer = make_trainer(self.cfg)
        module, dm = self.module, self.datamodule
        device = torch.device(self.device)
        module.to(device).eval()
        batch = dm.eval_batch_size
        images = dm.val_set.__getitems__([i % len(dm.val_set) for i in range(batch)])[0].to(device)
        x = dm.preprocess(images, augment=False)
        times = []
        with torch.inference_mode(), trainer.precision_plugin.forward_context():
            for i in range(self.warmup + self.infer_batches):
                sync(device)
                start = time.perf_counter()
                module(x)
                sync(device)
                if i >= self.warmup:
                    times.append(time.perf_counter() - start)
        module.train()
        self.infer_batch_s += times
        return median(times)


class _FrozenPass:
    """Feature extraction's frozen pass: the same images through the eval-mode backbone in fp32 and in bf16."""

    def __init__(self, cfg, device: str, batches: int):
        self.device, self.batches = torch.device(device), batches
        datamodule = build_datamodule(cfg)
        self.module = build_module(cfg, datamodule.num_classes).to(self.device).eval()
        batch = datamodule.eval_batch_size
        images = datamodule.val_set.__getitems__([i % len(datamodule.val_set) for i in range(batch)])[0]
        self.x = datamodule.preprocess(images.to(self.device), augment=False)
        self.times: dict[str, list[float]] = {"32": [], "bf16": []}
        self.batch = batch

    def features(self, pass_precision: str) -> torch.Tensor:
        """Pooled features of the batch, as the cache would store them (fp32)."""
        with precision.autocast(pass_precision, self.device):
            return self.module.encode(self.x).float()

    def round(self, pass_precision: str) -> float:
        """One timed round of ``batches`` passes; returns its median batch time."""
        times = []
        for _ in range(self.batches + 1):  # the first pass warms up and is dropped
            sync(self.device)
            start = time.perf_counter()
            self.features(pass_precision)
            sync(self.device)
            times.append(time.perf_counter() - start)
        self.times[pass_precision] += times[1:]
        return median(times[1:])

    def verdict(self) -> dict:
        """Speed-up of bf16 over fp32, feature parity, and whether ``auto`` picks the right one here."""
        fp32, bf16 = median(self.times["32"]), median(self.times["bf16"])
        reference = self.features("32")
        rel = float((self.features("bf16") - reference).norm() / reference.norm())
        speedup = fp32 / bf16
        should_pick = "bf16" if speedup >= EXTRACT_SPEEDUP and rel <= EXTRACT_PARITY else "32"
        auto = precision.resolve("auto", self.device)
        # Wrong: auto leaves a >= 1.3x faster pass unused, or picks bf16 where it is slower than fp32.
        default_ok = auto == should_pick or (auto == "bf16" and speedup >= 1 + NEUTRAL and rel <= EXTRACT_PARITY)
        return {
            "config_key": "strategy.extract_precision",
            "fp32_img_per_s": self.batch / fp32,
            "bf16_img_per_s": self.batch / bf16,
            "bf16_speedup": speedup,
            "feature_rel_diff": rel,
            "auto_resolves_to": auto,
            "native_bf16": precision.native_bf16(self.device),
            "default_ok": default_ok,
            "verdict": f"bf16 frozen pass {speedup:.2f}x fp32 at {100 * rel:.1f}% feature difference; auto -> {auto}",
        }


def run(
    full: bool = False,
    steps: int | None = None,
    rounds: int | None = None,
    warmup: int = 1,
    infer_batches: int | None = None,
    only: tuple[str, ...] | None = None,
    overrides=(),
) -> dict:
    """Measure each flag on and off per device; print tables and verdicts; return the JSON section.

    ``only`` restricts the flags measured, e.g. ``only=("compile",)`` with ``full=True``.
    """
    quiet()
    steps = steps or (10 if full else 2)
    rounds = rounds or (3 if full else 2)
    infer_batches = infer_batches or (5 if full else 2)
    result: dict = {"devices": {}}
    with workdir(NAME) as tmp:
        for device, trainer_cfg in _devices():
            base = [f"trainer={trainer_cfg}", "strategy=fine_tuning", *overrides]
            probe = compose_config(tmp, base)
            batch = int(probe.data.batch_size)
            settings = [*base, f"data.train_size={batch * (warmup + steps + 1)}", "data.val_size=10",
                        "trainer.max_epochs=1", f"+trainer.max_steps={warmup + steps}"]  # fmt: skip
            defaults = compose_config(tmp, settings)
            flags = {k: v for k, v in _flags(full).items() if only is None or k in only}
            contenders = {"defaults": _Contender(defaults, device, steps, warmup, infer_batches)}
            for flag, (key, on, off) in flags.items():
                default_value = OmegaConf.select(defaults, key)
                flipped = off if default_value == on else on
                contenders[f"{flag} {'off' if flipped == off else 'on'}"] = _Contender(
                    compose_config(tmp, [*settings, f"{key}={flipped}"]), device, steps, warmup, infer_batches
                )
            console.print(f"  {device}: {', '.join(contenders)} ({rounds} alternating rounds)")
            jobs = {}
            for name, c in contenders.items():
                jobs[f"{name}/train"] = c.train_round
                jobs[f"{name}/infer"] = c.infer_round
            frozen = None
            if only is None or "extract_precision" in only:
                fe_cfg = compose_config(tmp, [*settings, "strategy=feature_extraction"])
                frozen = _FrozenPass(fe_cfg, device, infer_batches)
                jobs["frozen pass fp32"] = lambda f=frozen: f.round("32")
                jobs["frozen pass bf16"] = lambda f=frozen: f.round("bf16")
            alternate(jobs, rounds)
            result["devices"][device] = _summarise(device, defaults, flags, contenders, batch)
            if frozen is not None:
                entry = frozen.verdict()
                result["devices"][device]["flags"]["extract_precision"] = entry
                status = "[green]default OK[/]" if entry["default_ok"] else "[red]default WRONG[/]"
                console.print(
                    f"  extract_precision: auto -> {entry['auto_resolves_to']} -> {status}; {entry['verdict']}"
                )
    verdicts = [
        f"{d}: {f} default {'OK' if v['default_ok'] else 'WRONG'} ({v['verdict']})"
        for d, dev in result["devices"].items()
        for f, v in dev["flags"].items()
    ]
    result["defaults_ok"] = all(v["default_ok"] for dev in result["devices"].values() for v in dev["flags"].values())
    result["summary"] = verdicts
    if not full and (only is None or "compile" in only):
        for dev in result["devices"].values():
            dev["flags"]["compile"] = {"skipped": "quick mode (run `python -m benchmarks speed_options --full`)"}
        console.print("  compile: skipped in quick mode (compiling takes minutes on CPU); use --full")
    return result


def _summarise(device: str, defaults_cfg, flags: dict, contenders: dict, batch: int) -> dict:
    base = contenders["defaults"]
    eval_batch = base.datamodule.eval_batch_size
    base_train, base_infer = median(base.train_step_s), median(base.infer_batch_s)
    rows = [["defaults", batch / base_train, eval_batch / base_infer, 1.0, 1.0, "-"]]
    out = {"train_samples_per_s": {"defaults": batch / base_train},
           "infer_samples_per_s": {"defaults": eval_batch / base_infer}, "flags": {}}  # fmt: skip
    for flag, (key, on, _off) in flags.items():
        name = next(n for n in contenders if n.startswith(flag + " "))
        c = contenders[name]
        train_s, infer_s = median(c.train_step_s), median(c.infer_batch_s)
        out["train_samples_per_s"][name] = batch / train_s
        out["infer_samples_per_s"][name] = eval_batch / infer_s
        default_on = OmegaConf.select(defaults_cfg, key) == on
        # speedup of turning the flag ON, whichever side the default is
        train_up = base_train / train_s if not default_on else train_s / base_train
        infer_up = base_infer / infer_s if not default_on else infer_s / base_infer

        def word(x: float) -> str:
            return "helps" if x > 1 + NEUTRAL else "hurts" if x < 1 - NEUTRAL else "neutral"

        verdict = f"training {word(train_up)} ({train_up:.2f}x), inference {word(infer_up)} ({infer_up:.2f}x)"
        default_ok = not (default_on and train_up < 1 - NEUTRAL)
        entry = {
            "config_key": key,
            "default": OmegaConf.select(defaults_cfg, key),
            "default_on": default_on,
            "train_speedup_when_on": train_up,
            "infer_speedup_when_on": infer_up,
            "verdict": verdict,
            "default_ok": default_ok,
        }
        if flag == "compile":
            entry["first_step_s_when_on"] = (c if not default_on else base).first_step_s
        if not default_on and train_up > 1 + NEUTRAL and flag != "compile":
            entry["note"] = "faster when on but off by default: consider making it this device's default"
        out["flags"][flag] = entry
        rows.append([name, batch / train_s, eval_batch / infer_s, base_train / train_s, base_infer / infer_s,
                     f"on vs off: {verdict}"])  # fmt: skip
    table(
        f"speed_options on {device}: fine-tuning, train batch {batch}, inference batch {eval_batch}",
        ["configuration", "train samples/s", "infer samples/s", "train vs defaults", "infer vs defaults", "flag"],
        rows,
    )
    lines = []
    for flag, e in out["flags"].items():
        status = "[green]default OK[/]" if e["default_ok"] else "[red]default WRONG[/]"
        lines.append(f"  {flag}: default {e['default']} -> {status}; turning it on: {e['verdict']}")
    console.print("\n".join(lines))
    return out
