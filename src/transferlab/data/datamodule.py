"""The one image-classification DataModule: a named source, seeded stratified splits, batch preprocessing."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Subset

from transferlab.data.datasets import TensorImages
from transferlab.data.decoded_cache import DecodeCache
from transferlab.data.registry import SOURCES
from transferlab.data.samplers import make_loader, process_shard
from transferlab.data.seeds import augment_seed
from transferlab.data.shifts import Shift, parse_shifts
from transferlab.data.splits import split_indices
from transferlab.data.transforms import BatchTransform
from transferlab.utils.errors import TransferlabError, suggest

log = logging.getLogger(__name__)

# What training sees: the train subset, or the train subset and the validation images together (the VTAB rule for
# refitting a configuration chosen on validation). The split itself is the same, so for one seed "train+val" is
# exactly the tune stage's train and validation images.
FIT_ON = ("train", "train+val")


class ImageDataModule(LightningDataModule):
    """Real images from ``name`` (see ``SOURCES``), preprocessed the way the model expects.

    The model's data config supplies ``image_size``, ``mean`` and ``std``; ``image_size`` set
    here overrides the size. Batches leave the loader as uint8 and are resized, augmented
    (train only) and normalised as whole batches in ``on_after_batch_transfer``. Image-file sources are
    decoded once into ``decode_cache_dir`` (``None``: decoded in every epoch).
    """

    def __init__(
        self,
        name: str,
        root: str = "data",
        task: str | None = None,
        download: bool = False,
        num_classes: int | None = None,
        train_size: int | None = None,
        val_size: int | float = 0.1,
        fit_on: str = "train",
        image_size: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        augment: bool = True,
        min_crop_scale: float = 0.8,
        hflip: bool = True,
        on_bad_image: str = "error",
        decode_cache_dir: str | None = None,
        seed: int = 0,
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
        interpolation: str = "bilinear",
        test_shifts: list | dict | None = None,
        test_shift_seed: int = 0,
    ):
        super().__init__()
        if name not in SOURCES:
            raise TransferlabError(
                f"Unknown data source '{name}'.{suggest(name, SOURCES)} Known: {', '.join(SOURCES)}."
            )
        if image_size is None:
            raise TransferlabError("data.image_size is unset and no model filled it in. Set data.image_size=<pixels>.")
        if fit_on not in FIT_ON:
            raise TransferlabError(f"data.fit_on={fit_on} is not one of {', '.join(FIT_ON)}. Use data.fit_on=train.")
        if batch_size < 1:
            raise TransferlabError(f"data.batch_size={batch_size} must be at least 1.")
        self.save_hyperparameters(logger=False)
        self.name = name
        self.root = Path(root).expanduser()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.transform = BatchTransform(image_size, mean, std, interpolation, min_crop_scale=min_crop_scale, flip=hflip)
        self.augment = augment
        self.train_set = self.val_set = self.test_set = None
        self.classes: list[str] = []
        self.setup_seconds = 0.0  # loading, decoding and splitting the data (metrics.json: time/data_setup_s)
        self._loader_workers = self.num_workers
        self.test_shifts: list[Shift] = parse_shifts(test_shifts)  # a bad name or severity fails here, before training
        self.test_shift: Shift | None = None  # the shift test_dataloader serves now; None = the clean test split
        self._clean_test = None
        self.task_group: str | None = None  # a suite task's group, from its source

    # --- data -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load the source once and cut the seeded, stratified train/val subsets."""
        if self.train_set is not None:
            return
        started = time.perf_counter()
        hp = self.hparams
        workers = self.num_workers if self.num_workers >= 0 else min(8, os.cpu_count() or 1)
        cache = DecodeCache(hp.decode_cache_dir, workers) if hp.decode_cache_dir else None
        source = SOURCES[self.name](
            root=self.root, download=hp.download, image_size=hp.image_size, on_bad_image=hp.on_bad_image, seed=hp.seed,
            decode_cache=cache, task=hp.task,
        )  # fmt: skip
        train, test = source.train, source.test
        self.task_group = source.group
        self._loader_workers = self.num_workers if train.decodes_on_demand else 0  # in memory: workers only cost
        self.classes = list(train.classes)
        if hp.num_classes is not None and hp.num_classes != len(self.classes):
            raise TransferlabError(
                f"data.num_classes={hp.num_classes} but {self.name} has {len(self.classes)} classes. "
                f"Set data.num_classes={len(self.classes)} (or null to infer it)."
            )
        train_idx, val_idx = self._split(source, torch.as_tensor(train.targets).numpy())
        if hp.fit_on == "train+val":  # validation then scores images it trained on: refit jobs switch it off
            train_idx = np.sort(np.concatenate([train_idx, val_idx]))
        # plain int indices: torch's Subset forwards a batch of them to the source's batched __getitems__
        self.train_set, self.val_set = Subset(train, train_idx.tolist()), Subset(train, val_idx.tolist())
        if self.test_shifts and not isinstance(test, TensorImages):
            raise TransferlabError(
                f"data.test_shifts needs the test images in memory as uint8; {self.name} decodes its files in every "
                "epoch (data.decode_cache_dir=null). Set data.decode_cache_dir (decode once) or data.test_shifts=[]."
            )
        self.test_set = self._clean_test = test
        self.setup_seconds = time.perf_counter() - started
        log.info(
            "Data %s: %d train%s / %d val / %d test images, %d classes (%.1fs)", self.name, len(self.train_set),
            " (val included)" if hp.fit_on == "train+val" else "", len(self.val_set), len(self.test_set),
            self.num_classes, self.setup_seconds,
        )  # fmt: skip

    def _split(self, source, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The source's own train/val split where it has one (VTAB-1k's 800/200), else a seeded, stratified one."""
        hp = self.hparams
        if source.val_indices is None:
            return split_indices(labels, hp.train_size, hp.val_size, hp.seed)
        if hp.train_size is not None:
            raise TransferlabError(
                f"data.train_size={hp.train_size}: {self.dataset_id} has a fixed train/val split "
                f"({len(labels) - len(source.val_indices)}/{len(source.val_indices)}). Use data.train_size=null."
            )
        val_idx = np.asarray(source.val_indices)
        return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx

    @property
    def dataset_id(self) -> str:
        """The dataset's name, with its task for a suite (``vtab1k/dtd``): what feature caches and reports key on."""
        return f"{self.name}/{self.hparams.task}" if self.hparams.task else self.name

    @property
    def num_train_images(self) -> int:
        """How many images training sees (the train subset, plus validation with ``fit_on=train+val``)."""
        self.setup()
        return len(self.train_set)

    def use_test_shift(self, shift: Shift | None) -> None:
        """Serve the official test split corrupted by ``shift`` (built once, on the CPU) from now on; None: clean."""
        self.setup()
        self.test_shift = shift
        if shift is None:
            self.test_set = self._clean_test
            return
        clean = self._clean_test
        images = shift.apply(clean.images, self.hparams.test_shift_seed)
        self.test_set = TensorImages(images, clean.targets, clean.classes)

    @property
    def test_shift_id(self) -> str | None:
        """What identifies the test images served now beyond the split (the shift and its seed); None when clean."""
        return None if self.test_shift is None else f"{self.test_shift.label}:seed={self.hparams.test_shift_seed}"

    def split_indices(self, split: str) -> list[int]:
        """The source indices of ``split`` (train, val or test) as served now: part of a feature cache's key."""
        self.setup()
        if split == "test":
            return list(range(len(self.test_set)))
        return list((self.train_set if split == "train" else self.val_set).indices)

    # --- the contract run summaries and exports rely on (a feature cache keeps it too) ---------------
    @property
    def image_data(self) -> ImageDataModule:
        """The image datamodule behind this one: itself."""
        return self

    @property
    def fit_setup_seconds(self) -> float:
        """Fit work done in set-up, before Lightning's fit timer starts: none for images."""
        return 0.0

    def run_metrics(self) -> dict:
        """What metrics.json records about the data: the time spent loading, decoding and splitting it."""
        metrics = {"time/data_setup_s": self.setup_seconds}
        if self.hparams.task:  # a suite's task: the report's suite section groups and averages by these
            metrics.update({"data/task": self.hparams.task, "data/group": self.task_group or "other"})
        return metrics

    @property
    def num_classes(self) -> int:
        """Number of classes, loading the source if needed."""
        if not self.classes:
            self.setup()
        return len(self.classes)

    # --- loaders ----------------------------------------------------------------------------
    def _loader(self, dataset, shuffle: bool, batch_size: int, drop_last: bool = False) -> DataLoader:
        workers = self._loader_workers if self._loader_workers >= 0 else min(8, os.cpu_count() or 1)
        return make_loader(
            dataset, batch_size, shuffle, self.hparams.seed, self.trainer, drop_last=drop_last, num_workers=workers,
            persistent_workers=workers > 0,  # no worker start-up cost at every epoch
            pin_memory=self.hparams.pin_memory,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (uint8; preprocessed after transfer)."""
        # drop_last keeps batch statistics sane when a tiny last batch would reach BatchNorm.
        drop = len(self.train_set) > self.batch_size
        return self._loader(self.train_set, shuffle=True, batch_size=self.batch_size, drop_last=drop)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in a fixed order."""
        return self._loader(self.val_set, shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """The official test split, in a fixed order."""
        return self._loader(self.test_set, shuffle=False, batch_size=self.eval_batch_size)

    def eval_loader(self, split: str) -> DataLoader:
        """An un-augmented, unshuffled loader over ``split`` (train, val or test): used to extract features."""
        dataset = {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]
        return self._loader(dataset, shuffle=False, batch_size=self.eval_batch_size)

    def preprocess(
        self, images: torch.Tensor, augment: bool = False, seed: int | None = None, shard: tuple[int, int] = (0, 1)
    ) -> torch.Tensor:
        """Turn a uint8 batch into the model's normalised input (``seed`` fixes the augmentation draw,
        ``shard=(rank, world_size)`` says which samples of the global batch these are)."""
        return self.transform(images, augment=augment and self.augment, seed=seed, shard=shard)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Preprocess on the device the batch just moved to; augment only while training.

        The augmentation of each step is drawn from (seed, step) alone, so a resumed run augments
        exactly as the uninterrupted one would, and a DDP run as a single process with the same
        global batch would (each rank takes its samples' share of the global draw).
        """
        images, labels = batch
        trainer = self.trainer
        training = trainer is not None and trainer.training
        if not training:
            return self.preprocess(images), labels
        seed = augment_seed(self.hparams.seed, trainer.global_step)
        return self.preprocess(images, augment=True, seed=seed, shard=process_shard(trainer)), labels
