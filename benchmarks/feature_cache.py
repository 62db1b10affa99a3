"""feature_cache: the feature-extraction run with its feature cache (cold, then warm) vs the backbone in the loop.

Contenders, all ``strategy=feature_extraction`` runs built exactly as ``transferlab.train`` builds them, timed
from ``trainer.fit`` call to return (Lightning setup, caching or cache loading, every epoch with validation
and checkpoints):

- ``cold``: ``cache_features=true`` with an empty cache: extract features once (``extract_precision=auto``,
  the default), then train the head.
- ``cold_fp32``: the same with ``extract_precision=32``: what ``auto`` saves where it picks bf16.
- ``warm``: the same run again: features come from the cache files.
- ``in_loop``: ``cache_features=false``: the frozen backbone runs on every batch of every epoch.
- ``bare``: the physical limit of extraction: one frozen forward pass over the same images, already in
  memory, same batch size and preprocessing (one untimed batch of each shape first), ``torch.inference_mode``,
  channels_last as configured, in fp32 and (where the device computes bf16 natively) in bf16 autocast; the
  limit is the faster of the two.

The runs are fits (train + val splits); a later ``trainer.test`` costs every contender the same one pass
over the test split and is left out. Ratios: ``warm_speedup_vs_in_loop`` = in_loop / warm (target >= 20),
``cold_vs_forward_limit`` = cold / (fastest bare + head training), head training being the cold fit minus
its extraction time (target <= 1.15), and ``auto_speedup_vs_fp32`` = cold_fp32 / cold (target >= 1.5 where
``auto`` picks bf16; where it keeps fp32 the two runs are the same and there is no target).
"""

from __future__ import annotations

import gc
import shutil
import time

import torch

from benchmarks.common import (
    compose_config,
    console,
    device_of,
    make_trainer,
    median,
    quiet,
    sync,
    table,
    target,
    workdir,
)
from transferlab.build import build_datamodule, build_module, build_run
from transferlab.callbacks import RunStats
from transferlab.utils import precision

NAME = "feature_cache"
TARGETS = {"warm_speedup_vs_in_loop": (">=", 20.0), "cold_vs_forward_limit": ("<=", 1.15),
           "auto_speedup_vs_fp32": (">=", 1.5)}  # fmt: skip


def _fit(cfg) -> dict:
    """One run as train.py does it (fit only): returns wall seconds of ``trainer.fit`` and its parts."""
    shutil.rmtree(cfg.paths.output_dir, ignore_errors=True)  # fresh checkpoints/ each time; the cache stays
    run = build_run(cfg, trainer=False)  # num_classes loads the image source (outside the timer)
    module, data = run.module, run.datamodule
    images = data.image_data  # the image datamodule, also behind the feature cache
    trainer = make_trainer(cfg)
    sync()
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    sync()
    total = time.perf_counter() - start
    stats = next((cb.stats for cb in trainer.callbacks if isinstance(cb, RunStats)), {})
    extract = data.fit_setup_seconds  # the cold cache's extraction of train and val; 0 when warm or in the loop
    return {
        "fit_s": total,
        "extract_s": extract,
        "head_s": total - extract,
        "extracted_images": len(images.train_set) + len(images.val_set) if extract else 0,
        "train_images": len(images.train_set),
        "val_images": len(images.val_set),
        "epochs": trainer.current_epoch,
        "val_acc": float(trainer.callback_metrics.get("val/acc", float("nan"))),
        "train_throughput": stats.get("throughput/train_samples_per_s", float("nan")),
    }


def _bare_forward(
    cfg, splits=("train", "val"), limit_batches: int | None = None, pass_precision: str = "32"
) -> tuple[float, int]:
    """Seconds for one frozen forward pass over ``splits`` (images already in memory) in ``pass_precision``
    ("32" or "bf16"), and the image count."""
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.num_classes)
    device = device_of(module)  # the device the product's extraction runs on (the trainer's)
    net = module.net.eval().to(device)
    batch = datamodule.eval_batch_size
    channels_last = module.channels_last
    chunks = []
    for split in splits:
        dataset = {"train": datamodule.train_set, "val": datamodule.val_set, "test": datamodule.test_set}[split]
        images, _ = dataset.__getitems__(list(range(len(dataset))))
        chunks += list(images.split(batch))
    chunks = [c.to(device) for c in (chunks[:limit_batches] if limit_batches else chunks)]  # already on the device

    def forward(images: torch.Tensor) -> None:
        x = datamodule.preprocess(images, augment=False)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        net.forward_head(net.forward_features(x), pre_logits=True)

    with torch.inference_mode(), precision.autocast(pass_precision, device):
        for images in {len(c): c for c in chunks}.values():  # one untimed batch per shape: kernels picked
            forward(images)
        sync()
        start = time.perf_counter()
        for images in chunks:
            forward(images)
        sync()
    return time.perf_counter() - start, sum(len(c) for c in chunks)


def run(full: bool = False, train_size: int | None = None, epochs: int = 10, overrides=(), skip=()) -> dict:
    """Run the contenders interleaved; print a table; return the JSON section.

    The issue's CPU budget is ``run(train_size=6000, epochs=3, overrides=["data.image_size=64"])``.
    ``skip=("in_loop", "cold_fp32")`` leaves out the slow contenders (and their ratios) when only
    ``cold_vs_forward_limit`` is in question (on a busy 2-core machine, ``--full`` otherwise takes most of an hour).
    """
    quiet()
    train_size = train_size or (10_000 if full else 1_000)
    schedule = ["cold", "cold_fp32", "in_loop", "bare", "warm", "in_loop", "bare", "warm"] if full else [
        "cold", "cold_fp32", "in_loop", "bare", "warm", "bare", "warm"]  # fmt: skip
    schedule = [name for name in schedule if name not in skip]
    settings = [f"data.train_size={train_size}", f"trainer.max_epochs={epochs}", "strategy=feature_extraction"]
    with workdir(NAME) as tmp:
        configs = {
            "cached": compose_config(tmp / "cached", [*settings, *overrides]),
            "cold_fp32": compose_config(tmp / "cold_fp32", [*settings, *overrides, "strategy.extract_precision=32"]),
            "in_loop": compose_config(tmp / "in_loop", [*settings, "strategy.cache_features=false", *overrides]),
        }
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        auto = precision.resolve(configs["cached"].strategy.extract_precision, device)
        bare_precisions = ["32", "bf16"] if precision.native_bf16(device) else ["32"]
        runs, bare, n_bare = _measure(schedule, configs, bare_precisions)
    result = _summarize(runs, bare, n_bare, auto, epochs)
    needs = {"warm_speedup_vs_in_loop": "in_loop", "auto_speedup_vs_fp32": "cold_fp32"}  # the contender a ratio reads
    targets = {k: v for k, v in TARGETS.items() if needs.get(k) not in skip}
    if auto != "bf16":  # auto keeps fp32 here: cold and cold_fp32 are the same run, nothing to beat
        targets.pop("auto_speedup_vs_fp32", None)
    result["targets"] = {k: target(result[k], *targets[k]) for k in targets}
    _print_contenders(result, auto, n_bare)
    _print_targets(result)
    return result


def _measure(schedule: list[str], configs: dict, bare_precisions: list[str]):
    """Run ``schedule`` in order: each fit's record per contender, each bare pass's seconds per precision, and the
    bare pass's image count."""
    for p in bare_precisions:  # warm-up: kernels, allocator, imports (not recorded)
        _bare_forward(configs["cached"], limit_batches=2, pass_precision=p)
    runs: dict[str, list[dict]] = {"cold": [], "cold_fp32": [], "warm": [], "in_loop": []}
    bare: dict[str, list[float]] = {p: [] for p in bare_precisions}
    n_bare = 0
    for i, name in enumerate(schedule):
        console.print(f"  [{i + 1}/{len(schedule)}] {name} ...", end="")
        gc.collect()  # as between sweep jobs (utils/task.py): no run pays for the previous one's garbage
        if name == "bare":
            times = []
            for p in bare_precisions:
                seconds, n_bare = _bare_forward(configs["cached"], pass_precision=p)
                bare[p].append(seconds)
                times.append(f"{p} {seconds:.2f}s")
            console.print(" " + ", ".join(times))
            continue
        result = _fit(configs.get(name, configs["cached"]))
        runs[name].append(result)
        console.print(f" {result['fit_s']:.2f}s")
    return runs, bare, n_bare


def _summarize(runs: dict, bare: dict, n_bare: int, auto: str, epochs: int) -> dict:
    """The JSON section from the measured runs: ratios, seconds, image counts, throughputs, accuracies."""
    skipped = {"fit_s": float("nan"), "extract_s": float("nan"), "extracted_images": 0}
    cold, cold_fp32 = runs["cold"][0], (runs["cold_fp32"] or [skipped])[0]
    warm_s, in_loop_s = median([r["fit_s"] for r in runs["warm"]]), median([r["fit_s"] for r in runs["in_loop"]])
    runs = {k: v for k, v in runs.items() if v}
    bare_s = {p: median(v) for p, v in bare.items()}
    fastest = min(bare_s, key=bare_s.get)
    limit = bare_s[fastest] + cold["head_s"]

    def per_s(images: int, seconds: float) -> float | None:
        return images / seconds if seconds else None

    return {
        "warm_speedup_vs_in_loop": in_loop_s / warm_s,
        "cold_vs_forward_limit": cold["fit_s"] / limit,
        "auto_speedup_vs_fp32": cold_fp32["fit_s"] / cold["fit_s"],
        "extract_precision": {"auto_resolves_to": auto, "fastest_bare_pass": fastest},
        "seconds": {
            "cold_fit": cold["fit_s"],
            "cold_extraction": cold["extract_s"],
            "cold_head_training": cold["head_s"],
            "cold_fp32_fit": cold_fp32["fit_s"],
            "cold_fp32_extraction": cold_fp32["extract_s"],
            "warm_fit": warm_s,
            "in_loop_fit": in_loop_s,
            **{f"bare_forward_{p}": v for p, v in bare_s.items()},
            "forward_limit": limit,
        },
        "images": {
            "train": cold["train_images"],
            "val": cold["val_images"],
            "extracted_by_cold_fit": cold["extracted_images"],
            "bare_forward": n_bare,
        },
        "throughput_img_per_s": {
            "cold_extraction": per_s(cold["extracted_images"], cold["extract_s"]),
            "cold_fp32_extraction": per_s(cold_fp32["extracted_images"], cold_fp32["extract_s"]),
            **{f"bare_forward_{p}": n_bare / v for p, v in bare_s.items()},
        },
        "epochs": epochs,
        "val_acc": {k: runs[k][0]["val_acc"] for k in runs},
        "runs": {k: [round(r["fit_s"], 3) for r in v] for k, v in runs.items()}
        | {f"bare_{p}": [round(b, 3) for b in v] for p, v in bare.items()},
    }


def _print_contenders(result: dict, auto: str, n_bare: int) -> None:
    s, images = result["seconds"], result["images"]
    warm_s, in_loop_s = s["warm_fit"], s["in_loop_fit"]
    fastest = result["extract_precision"]["fastest_bare_pass"]
    bare = {k.removeprefix("bare_forward_"): v for k, v in s.items() if k.startswith("bare_forward_")}
    rows = [
        [f"cold cache (extract + head), auto = {auto}", s["cold_fit"], s["cold_fit"] / warm_s,
         f"extraction {s['cold_extraction']:.2f}s over {images['extracted_by_cold_fit']} images"],
        ["cold cache, extract_precision=32", s["cold_fp32_fit"], s["cold_fp32_fit"] / warm_s,
         f"extraction {s['cold_fp32_extraction']:.2f}s"],
        ["warm cache (head only)", warm_s, 1.0, "features read from the cache"],
        ["backbone in the loop", in_loop_s, in_loop_s / warm_s, "cache_features=false"],
        *[[f"bare forward {p} (limit)" if p == fastest else f"bare forward {p}", v, v / warm_s,
           f"{n_bare} images in memory, inference_mode"] for p, v in bare.items()],
    ]  # fmt: skip
    table(
        f"feature_cache: feature extraction, {images['train']} train + {images['val']} val images, {result['epochs']} epochs",
        ["contender", "seconds", "vs warm", "notes"],
        [row for row in rows if row[1] == row[1]],  # skipped contenders (NaN seconds) leave no row
    )


def _print_targets(result: dict) -> None:
    table(
        "feature_cache targets",
        ["ratio", "value", "target", "met"],
        [[k, v["value"], v["target"], v["met"]] for k, v in result["targets"].items()],
    )
