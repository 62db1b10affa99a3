"""A DataModule that serves pooled backbone features, computed once and cached on disk.

The key covers everything that changes the features: model and weights identity, image size,
mean and std, dataset and split, and the exact subset indices. Files are safetensors written
atomically; a corrupt or stale file is detected, reported and rebuilt. What the cache needs from a
model is one small record, ``FeatureEncoder``: it never sees the strategy module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning import LightningDataModule
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from transferlab.data.datamodule import ImageDataModule
from transferlab.data.datasets import TensorPairs
from transferlab.data.samplers import make_loader
from transferlab.utils import precision
from transferlab.utils.io import atomic_write
from transferlab.utils.shapes import padded_rows

log = logging.getLogger(__name__)


class FeatureSet(TensorPairs):
    """Feature vectors (N, D) and labels held in memory."""

    @property
    def features(self) -> torch.Tensor:
        """The feature matrix."""
        return self.inputs


@dataclass(frozen=True)
class FeatureEncoder:
    """What the feature cache needs from a model.

    ``encode`` maps preprocessed images on the device to feature vectors (B, D); ``on_device`` is a context
    manager that puts the encoder on a device, frozen (eval mode), for one extraction pass and puts it back
    after. ``precision`` (auto, 32 or bf16) is resolved for the run's device; ``weights_id`` and
    ``architecture`` name the model in the cache key.
    """

    encode: Callable[[torch.Tensor], torch.Tensor]
    on_device: Callable[[torch.device], contextlib.AbstractContextManager]
    weights_id: str
    architecture: str
    precision: str = "auto"


_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


class FeatureCacheDataModule(LightningDataModule):
    """Wraps an ``ImageDataModule``: same splits and batch size, but batches are (features, labels).

    ``on_train_features`` is called with the training features once they are loaded (a probe fits its input
    standardisation on them).
    """

    def __init__(
        self,
        images: ImageDataModule,
        encoder: FeatureEncoder,
        cache_dir: str | Path,
        on_train_features: Callable[[torch.Tensor], None] | None = None,
    ):
        super().__init__()
        self.images = images
        self.encoder = encoder
        self.cache_dir = Path(cache_dir)
        self.on_train_features = on_train_features
        self.sets: dict[str, FeatureSet] = {}
        self.extract_seconds_by_split: dict[str, float] = {}
        self.precision: str | None = None  # "32" or "bf16": encoder.precision resolved for the run's device

    @property
    def extract_seconds(self) -> float:
        """Seconds spent extracting the fit's splits (train, val): part of the strategy's training cost.

        The test split's extraction is left out, as every strategy's test pass is left out of its fit time.
        """
        return sum(t for split, t in self.extract_seconds_by_split.items() if split != "test")

    @property
    def fit_setup_seconds(self) -> float:
        """Fit work done in set-up, before Lightning's fit timer starts: the extraction of train and val."""
        return self.extract_seconds

    @property
    def image_data(self) -> ImageDataModule:
        """The image datamodule the features come from."""
        return self.images

    def run_metrics(self) -> dict:
        """What metrics.json records about the data: the images' set-up, and the extraction time and precision."""
        metrics = self.images.run_metrics()
        if self.extract_seconds:
            metrics["time/feature_extraction_s"] = self.extract_seconds
        if self.extract_seconds_by_split.get("test"):  # the test split's pass, like every test pass, is not fit time
            metrics["time/test_feature_extraction_s"] = self.extract_seconds_by_split["test"]
        if self.precision:
            metrics["extract_precision"] = self.precision  # what the cached features were computed in
        return metrics

    @property
    def num_classes(self) -> int:
        """Number of classes of the wrapped data."""
        return self.images.num_classes

    @property
    def num_train_images(self) -> int:
        """How many images training sees, from the wrapped data."""
        return self.images.num_train_images

    @property
    def test_shifts(self) -> list:
        """The shifted test sets of the wrapped data (``data.test_shifts``)."""
        return self.images.test_shifts

    def use_test_shift(self, shift) -> None:
        """Serve the features of the test split corrupted by ``shift`` (None: clean), extracted at the next test."""
        self.images.use_test_shift(shift)
        self.sets.pop("test", None)

    def cache_key(self, split: str) -> dict:
        """Everything that determines the features of ``split``."""
        dm = self.images
        indices = dm.split_indices(split)
        return {
            "model": self.encoder.architecture,
            "weights": self.encoder.weights_id,
            "image_size": dm.transform.image_size,
            "mean": dm.transform.mean.flatten().tolist(),
            "std": dm.transform.std.flatten().tolist(),
            "interpolation": dm.transform.interpolation,
            "dataset": dm.dataset_id,
            "root": str(dm.root.resolve()),
            "split": split if split == "test" else "train",  # val is a subset of the train split
            "indices": _digest(torch.as_tensor(indices).tolist()),
            "n": len(indices),
            "precision": self.precision,  # bf16 features never serve an fp32 request, nor the reverse
            **({"shift": dm.test_shift_id} if split == "test" and dm.test_shift_id else {}),  # a shifted test set
        }

    def path_for(self, key: dict) -> Path:
        """Cache file for a key."""
        dataset = key["dataset"].replace("/", "-")
        return self.cache_dir / "features" / f"{dataset}-{key['split']}-{_digest(key)}.safetensors"

    def setup(self, stage: str | None = None) -> None:
        """Load the features of the splits ``stage`` uses from the cache, extracting those that are missing, corrupt or stale.

        A fit extracts train and val only (the test split waits for ``trainer.test``); ``None`` means all three.
        """
        splits = [s for s in _STAGE_SPLITS.get(stage, ("train", "val", "test")) if s not in self.sets]
        if not splits:
            return
        self.images.setup(stage)
        self.precision = precision.resolve(self.encoder.precision, self._device())
        trainer = self.trainer
        rank0 = trainer is None or trainer.global_rank == 0
        for split in splits:
            key = self.cache_key(split)
            path = self.path_for(key)
            loaded = self._load(path, key) if rank0 else None
            if loaded is None and rank0:
                loaded = self._extract(split)
                self._save(path, key, *loaded)
            if trainer is not None and trainer.world_size > 1:
                trainer.strategy.barrier("feature_cache")
                if not rank0:
                    loaded = self._load(path, key)
            self.sets[split] = FeatureSet(*loaded)
        if "train" in splits and self.on_train_features is not None:
            self.on_train_features(self.sets["train"].features)

    @staticmethod
    def _save(path: Path, key: dict, features: torch.Tensor, labels: torch.Tensor) -> None:
        tensors = {"features": features.contiguous(), "labels": labels.contiguous()}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"key": json.dumps(key)}))

    def _load(self, path: Path, key: dict):
        if not path.exists():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                stored = json.loads((f.metadata() or {}).get("key", "{}"))
            tensors = load_file(str(path))
            features, labels = tensors["features"], tensors["labels"]
        except (SafetensorError, OSError, KeyError, ValueError, json.JSONDecodeError) as e:
            log.warning("Feature cache %s is corrupt (%s); rebuilding it.", path.name, e)
            return None
        if stored != key or len(features) != key["n"] or len(labels) != key["n"]:
            log.warning(
                "Feature cache %s is stale (written for another model, data or subset); rebuilding it.", path.name
            )
            return None
        log.info("Feature cache hit: %s", path.name)
        return features, labels

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _extract(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the frozen backbone once over ``split`` (no augmentation), with a progress bar in images/s.

        Every batch runs at one shape (the last is padded to ``eval_batch_size``, its padded rows dropped), so
        the kernels picked for the first batch serve them all; features stay on the device until the split is
        done and reach the host in one copy.
        """
        loader = self.images.eval_loader(split)
        rows = min(loader.batch_size, len(loader.dataset))  # a split smaller than one batch keeps its own size
        device = self._device()
        feats, labels, seen, start = [], [], 0, time.perf_counter()
        first_batch_s = 0.0
        columns = [TextColumn(f"[bold]Caching {split} features"), BarColumn(), TextColumn("{task.completed}/{task.total} images"),
                   TextColumn("{task.fields[speed]:.0f} img/s"), TimeRemainingColumn()]  # fmt: skip
        with (
            Progress(*columns, transient=True) as progress,
            self.encoder.on_device(device),
            precision.autocast(self.precision, device),
        ):
            task = progress.add_task("extract", total=len(loader.dataset), speed=0.0)
            for images, y in loader:
                x = self.images.preprocess(images.to(device, non_blocking=True), augment=False)
                feats.append(self.encoder.encode(padded_rows(x, rows))[: len(y)])
                labels.append(y)
                seen += len(y)
                now = time.perf_counter()
                if not first_batch_s:  # kernels are picked in the first batch: the speed shown leaves it out
                    first_batch_s, first_end = now - start, now
                speed = (seen - len(labels[0])) / (now - first_end) if now > first_end else 0.0
                progress.update(task, completed=seen, speed=speed)
            # Stored as fp32 whatever the pass ran in: the head, its standardisation and every cache file then
            # share one dtype (bf16 values convert to fp32 exactly).
            features = torch.cat(feats).float().cpu()
        elapsed = time.perf_counter() - start
        self.extract_seconds_by_split[split] = self.extract_seconds_by_split.get(split, 0.0) + elapsed
        log.info("Extracted %d %s features in %.1fs (first batch %.2fs, %s)", seen, split, elapsed, first_batch_s,
                 "bf16" if self.precision == "bf16" else "fp32")  # fmt: skip
        return features, torch.cat(labels)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batch = self.images.batch_size if split == "train" else self.images.eval_batch_size
        drop = shuffle and len(self.sets[split]) > batch
        return make_loader(self.sets[split], batch, shuffle, self.images.hparams.seed, self.trainer, drop_last=drop)

    def train_dataloader(self) -> DataLoader:
        """Shuffled cached training features."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Cached validation features."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Cached test features."""
        return self._loader("test", shuffle=False)
