"""Write a small suite in the VTAB-1k layout from the offline datasets, so suites run (and are tested) offline.

    python -m transferlab.data.make_suite DIR [--test-size 1000] [--seed 0]

Three tasks, each a folder with PNG images and ``train800.txt``, ``val200.txt``, ``train800val200.txt`` and
``test.txt``: ``fashion_mnist`` (Debian's dataset-fashion-mnist), ``digits`` (scikit-learn's) and
``fashion_mnist_inverted`` (Fashion-MNIST with inverted grey levels: a shifted domain). 800 / 200 training images
are a seeded stratified draw from the official training split, the test images one from its test split (digits,
which has none, from the 30% the digits source holds out). The same seed writes the same files.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from transferlab.data.sources import DEBIAN_FASHION_MNIST, SourceData, digits, fashion_mnist
from transferlab.data.vtab import LISTS
from transferlab.utils.io import atomic_write_text

TRAIN, VAL = 800, 200


def _draw(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices, stratified by ``labels`` (all of them when there are no more)."""
    if n >= len(labels):
        return np.arange(len(labels))
    picked, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    return np.sort(picked)


def _write_task(folder: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
    """PNG files under ``folder/images/`` and the four lists (train800val200 = train800 then val200)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        lines[split] = []
        for i, (image, label) in enumerate(zip(images[split], labels[split], strict=True)):
            name = f"images/{split}_{i:05d}.png"
            Image.fromarray(image).save(folder / name)
            lines[split].append(f"{name} {int(label)}")
    lines["trainval"] = lines["train"] + lines["val"]
    for split, filename in LISTS.items():
        atomic_write_text(folder / filename, "\n".join(lines[split]) + "\n")


def _task(train_images, train_labels, test_images, test_labels, test_size: int, seed: int):
    """The 800 / 200 / test draw of one dataset, as uint8 (N, H, W) arrays and labels."""
    train_images, train_labels = np.asarray(train_images), np.asarray(train_labels)
    both = _draw(train_labels, TRAIN + VAL, seed)
    train_idx, val_idx = train_test_split(both, train_size=TRAIN, stratify=train_labels[both], random_state=seed)
    test_idx = _draw(np.asarray(test_labels), test_size, seed)
    images = {"train": train_images[np.sort(train_idx)], "val": train_images[np.sort(val_idx)],
              "test": np.asarray(test_images)[test_idx]}  # fmt: skip
    labels = {"train": train_labels[np.sort(train_idx)], "val": train_labels[np.sort(val_idx)],
              "test": np.asarray(test_labels)[test_idx]}  # fmt: skip
    return images, labels


def _gray(dataset) -> tuple[np.ndarray, np.ndarray]:
    return dataset.inputs[:, 0].numpy(), dataset.targets.numpy()


TASKS: dict[str, Callable[[], SourceData]] = {
    "fashion_mnist": lambda: fashion_mnist(root=DEBIAN_FASHION_MNIST, download=False),
    "digits": lambda: digits(seed=0),
    "fashion_mnist_inverted": lambda: fashion_mnist(root=DEBIAN_FASHION_MNIST, download=False),
}


def make_suite(out: str | Path, test_size: int = 1000, seed: int = 0, tasks=tuple(TASKS)) -> Path:
    """Write the offline suite into ``out`` (one folder per task); return ``out``."""
    out = Path(out)
    for name in tasks:
        data = TASKS[name]()
        (tr_x, tr_y), (te_x, te_y) = _gray(data.train), _gray(data.test)
        if name.endswith("_inverted"):
            tr_x, te_x = 255 - tr_x, 255 - te_x
        images, labels = _task(tr_x, tr_y, te_x, te_y, test_size, seed)
        _write_task(out / name, images, labels)
    return out


def main(argv: list[str] | None = None) -> None:
    """The command line: ``python -m transferlab.data.make_suite DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write the suite into (one folder per task)")
    parser.add_argument("--test-size", type=int, default=1000, help="test images per task (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = make_suite(args.out, args.test_size, args.seed)
    print(f"Wrote {', '.join(TASKS)} to {out} (800 / 200 / {args.test_size} images each).")


if __name__ == "__main__":
    main()
