"""image_folder: an image folder of 4,000 PNGs, decoded once into the cache vs decoded in every epoch.

The folder is written once per run (outside every timer): Fashion-MNIST training images, tinted per class and
upscaled to 96 px RGB, as ``root/<class>/<i>.png``. Contenders, each the real ``data=imagefolder`` datamodule
(``transferlab.build.build_datamodule``, 64 px, ``num_workers=0`` so every decode happens in this process and is
counted):

- ``first``: ``decode_cache_dir`` set, cache empty: scan, decode every file once into the cache, split.
- ``second``: the same again, as a later run or sweep job: the cache is read (memory-mapped), nothing decoded.
- ``on_demand``: ``decode_cache_dir=null`` (the behaviour before the cache): scan and check every file, split;
  the files are then decoded in every epoch.

Each contender's set-up is timed, then ``epochs`` passes over its train loader (decodes counted per epoch).
``setup_speedup`` = first / second set-up (target >= 10); ``decodes_after_first_epoch`` = decodes in the
cached runs' epochs (target 0).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.common import compose_config, console, median, quiet, table, target, workdir
from transferlab.build import build_datamodule
from transferlab.data import image_files
from transferlab.data.sources import DEBIAN_FASHION_MNIST, fashion_mnist

NAME = "image_folder"
TARGETS = {"setup_speedup": (">=", 10.0), "decodes_after_first_epoch": ("<=", 0)}


def write_folder(root: Path, n: int, size: int = 96) -> None:
    """``n`` PNGs under ``root/<class>/``: Fashion-MNIST images, class-tinted, upscaled to ``size`` px RGB."""
    from PIL import Image

    train = fashion_mnist(root=DEBIAN_FASHION_MNIST, download=False).train
    images, labels = train.images[:n, 0].numpy(), train.labels[:n].numpy()
    tints = np.random.default_rng(0).uniform(0.4, 1.0, (10, 3))
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        rgb = (image[..., None] * tints[label]).astype(np.uint8)
        Image.fromarray(rgb).resize((size, size), Image.BILINEAR).save(folder / f"{i:05d}.png")


class _DecodeCounter:
    """Counts calls of the image decoder behind every file source (``image_files.decode_image``)."""

    def __init__(self):
        self.calls, self._real = 0, image_files.decode_image

    def __enter__(self):
        def counted(*args, **kwargs):
            self.calls += 1
            return self._real(*args, **kwargs)

        image_files.decode_image = counted
        return self

    def __exit__(self, *exc):
        image_files.decode_image = self._real


def _contender(cfg, epochs: int, counter: _DecodeCounter) -> dict:
    """Set up the datamodule (timed), then ``epochs`` passes over its train loader; decodes per phase."""
    datamodule = build_datamodule(cfg)
    before = counter.calls
    start = time.perf_counter()
    datamodule.setup()
    setup_s = time.perf_counter() - start
    setup_decodes = counter.calls - before
    epoch_s, epoch_decodes = [], []
    for _ in range(epochs):
        before, start = counter.calls, time.perf_counter()
        for _batch in datamodule.train_dataloader():
            pass
        epoch_s.append(time.perf_counter() - start)
        epoch_decodes.append(counter.calls - before)
    return {"setup_s": setup_s, "setup_decodes": setup_decodes, "epoch_s": epoch_s, "epoch_decodes": epoch_decodes,
            "reported_setup_s": datamodule.setup_seconds}  # fmt: skip


def run(
    full: bool = False, images: int = 4000, epochs: int | None = None, rounds: int | None = None, overrides=()
) -> dict:
    """Write the folder, run the contenders (second and on_demand alternated); print a table; return the section."""
    quiet()
    epochs = epochs or (3 if full else 2)
    rounds = rounds or (3 if full else 2)
    with workdir(NAME) as tmp:
        root = tmp / "images"
        start = time.perf_counter()
        write_folder(root, images)
        console.print(f"  wrote {images} PNGs in {time.perf_counter() - start:.1f}s")
        settings = ["data=imagefolder", f"data.root={root}", "data.num_workers=0", "data.image_size=64", *overrides]
        cached = compose_config(tmp / "cached", settings)
        on_demand = compose_config(tmp / "on_demand", [*settings, "data.decode_cache_dir=null"])
        shutil.rmtree(Path(cached.paths.cache_dir), ignore_errors=True)
        runs: dict[str, list[dict]] = {"first": [], "second": [], "on_demand": []}
        with _DecodeCounter() as counter:
            schedule = ["first"] + ["second", "on_demand"] * rounds
            for i, name in enumerate(schedule):
                console.print(f"  [{i + 1}/{len(schedule)}] {name} ...", end="")
                result = _contender(on_demand if name == "on_demand" else cached, epochs, counter)
                runs[name].append(result)
                console.print(
                    f" set-up {result['setup_s']:.2f}s, epochs {', '.join(f'{s:.2f}s' for s in result['epoch_s'])}"
                )

    first = runs["first"][0]
    second_setup = median([r["setup_s"] for r in runs["second"]])
    on_demand_setup = median([r["setup_s"] for r in runs["on_demand"]])
    epoch = {name: median([s for r in rs for s in r["epoch_s"]]) for name, rs in runs.items()}
    cached_decodes = sum(d for name in ("first", "second") for r in runs[name] for d in r["epoch_decodes"])
    result = {
        "setup_speedup": first["setup_s"] / second_setup,
        "decodes_after_first_epoch": cached_decodes,
        "images": images,
        "epochs": epochs,
        "seconds": {
            "first_setup": first["setup_s"],
            "second_setup": second_setup,
            "on_demand_setup": on_demand_setup,
            **{f"{name}_epoch": s for name, s in epoch.items()},
        },  # fmt: skip
        "decodes": {
            name: {"setup": rs[0]["setup_decodes"], "per_epoch": rs[0]["epoch_decodes"]} for name, rs in runs.items()
        },
        "runs": runs,
    }
    result["targets"] = {k: target(result[k], *v) for k, v in TARGETS.items()}
    d = result["decodes"]
    table(
        f"image_folder: {images} PNGs (96 px) at 64 px, {epochs} epochs over the train split per contender",
        ["contender", "set-up s", "decodes in set-up", "epoch s (median)", "decodes per epoch"],
        [
            [
                "first run (cache filled)",
                first["setup_s"],
                d["first"]["setup"],
                epoch["first"],
                d["first"]["per_epoch"],
            ],
            ["second run (cache read)", second_setup, d["second"]["setup"], epoch["second"], d["second"]["per_epoch"]],
            [
                "no cache (decode every epoch)",
                on_demand_setup,
                d["on_demand"]["setup"],
                epoch["on_demand"],
                d["on_demand"]["per_epoch"],
            ],
        ],  # fmt: skip
    )
    table(
        "image_folder targets",
        ["ratio", "value", "target", "met"],
        [[k, v["value"], v["target"], v["met"]] for k, v in result["targets"].items()],
    )
    return result
