"""Dataset sources: each turns a name into real train and test datasets, or fails with the way to get the data.

A source returns a ``SourceData``: train and test datasets, and the validation part of train where the source
fixes it (VTAB-1k's val200 list). Sources without an official test split (digits, a flat image folder) hold one
out, seeded and stratified, and say so in their docstring.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from transferlab.data.datasets import FileImages, MappedImages, TensorImages
from transferlab.data.decoded_cache import DecodeCache
from transferlab.data.image_files import drop_bad_files, make_decoder, scan_image_folder
from transferlab.utils.errors import TransferlabError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceData:
    """What a source hands the datamodule. ``val_indices``: the rows of ``train`` that are the source's own
    validation split (the rest is its training split); None lets the datamodule draw a seeded, stratified one.
    ``group``: a suite task's group (VTAB-1k: Natural, Specialized, Structured), which metrics.json records."""

    train: object
    test: object
    val_indices: list[int] | None = None
    group: str | None = None


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): the MNIST family's format."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise TransferlabError(
            f"{path} is truncated ({arr.size} of {int(np.prod(shape))} values). Delete it and download it again."
        )
    return arr.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _fashion_mnist_folder(root: Path) -> Path | None:
    """The first folder holding all four IDX files: root, torchvision's layout under root, then Debian's."""
    for folder in (root, root / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST):
        if all(_find_idx(folder, s) for pair in _FASHION_FILES.values() for s in pair):
            return folder
    return None


def fashion_mnist(root: Path, download: bool, **_) -> SourceData:
    """Fashion-MNIST (60k/10k, 28x28 gray): data.root, then /usr/share/datasets/fashion-mnist, then a download."""
    folder = _fashion_mnist_folder(root)
    if folder is None and download:
        import torchvision

        try:
            torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(root), train=False, download=True)
        except Exception as e:  # any network failure means the same thing to the user
            log.warning("Fashion-MNIST download failed: %s", e)
        folder = _fashion_mnist_folder(root)
    if folder is None:
        raise TransferlabError(
            f"Fashion-MNIST not found in {root} or {DEBIAN_FASHION_MNIST}. "
            "Install it with `apt-get install dataset-fashion-mnist`, or go online and set data.download=true."
        )
    splits = []
    for split, (img_stem, lbl_stem) in _FASHION_FILES.items():
        images = torch.from_numpy(_read_idx(_find_idx(folder, img_stem)).copy()).unsqueeze(1)
        labels = torch.from_numpy(_read_idx(_find_idx(folder, lbl_stem)).astype(np.int64))
        if len(images) != len(labels):
            raise TransferlabError(
                f"Fashion-MNIST {split} files in {folder} disagree in length. Reinstall the dataset."
            )
        splits.append(TensorImages(images, labels, FASHION_MNIST_CLASSES))
    return SourceData(splits[0], splits[1])


def digits(seed: int = 0, test_fraction: float = 0.3, **_) -> SourceData:
    """scikit-learn's bundled digits (1,797 8x8 gray). It has no official test split: 30% is held out, stratified."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels.numpy(), random_state=seed
    )
    classes = [str(c) for c in bunch.target_names]
    return SourceData(
        TensorImages(images[train_idx], labels[train_idx], classes),
        TensorImages(images[test_idx], labels[test_idx], classes),
    )


def _cifar(cls_name: str, root: Path, download: bool) -> SourceData:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    out = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=download)
        except RuntimeError as e:
            raise TransferlabError(
                f"{cls_name} not found under {root} ({e}). Set data.root to the folder holding "
                f"'{cls.base_folder}', or go online and set data.download=true."
            ) from e
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out.append(TensorImages(images, torch.as_tensor(ds.targets), ds.classes))
    return SourceData(out[0], out[1])


def cifar10(root: Path, download: bool, **_) -> SourceData:
    """CIFAR-10 through torchvision (its own format, checksum and download)."""
    return _cifar("CIFAR10", root, download)


def cifar100(root: Path, download: bool, **_) -> SourceData:
    """CIFAR-100 through torchvision (its own format, checksum and download)."""
    return _cifar("CIFAR100", root, download)


def file_images(
    files: list[str], labels, classes: list[str], size: int, cache: DecodeCache | None, root: Path, on_bad_image: str
) -> FileImages | MappedImages:
    """Image files decoded once into ``cache`` (a memory-mapped array), or decoded on demand without one."""
    if cache is None:
        return FileImages(files, labels, classes, make_decoder(size))
    images, failed = cache.images(files, size)
    kept, kept_labels, _ = drop_bad_files(files, list(labels), classes, [files[i] for i in failed], root, on_bad_image)
    return MappedImages(images, torch.as_tensor(kept_labels), classes)


def _folder_images(folder: Path, size: int, on_bad_image: str, cache: DecodeCache | None):
    # With a cache every file is decoded anyway: a file that fails to decode is the bad one, no separate check.
    files, labels, classes = scan_image_folder(folder, on_bad_image, verify=cache is None)
    return file_images(files, labels, classes, size, cache, folder, on_bad_image)


def imagefolder(
    root: Path,
    image_size: int,
    on_bad_image: str = "error",
    seed: int = 0,
    test_fraction: float = 0.2,
    decode_cache: DecodeCache | None = None,
    **_,
) -> SourceData:
    """Class subfolders. ``root/train`` and ``root/test`` (or ``root/val``) when present; a flat root holds out 20%.

    With ``decode_cache`` the files are decoded once into it; otherwise they are decoded in every epoch.
    """
    if (root / "train").is_dir():
        test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
        if test_dir is None:
            raise TransferlabError(
                f"{root}/train exists but {root}/test does not. Add a test/ folder with the same class folders."
            )
        train = _folder_images(root / "train", image_size, on_bad_image, decode_cache)
        test = _folder_images(test_dir, image_size, on_bad_image, decode_cache)
        if test.classes != train.classes:
            raise TransferlabError(
                f"{test_dir} has classes {test.classes} but {root}/train has {train.classes}. Use the same class folders in both."
            )
        return SourceData(train, test)
    everything = _folder_images(root, image_size, on_bad_image, decode_cache)
    labels = everything.targets.numpy()
    counts = np.bincount(labels)
    if counts.min() < 2:
        raise TransferlabError(
            f"Class '{everything.classes[int(counts.argmin())]}' in {root} has one image; a held-out test split needs at least 2 per class."
        )
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
    )
    return SourceData(everything.subset(train_idx.tolist()), everything.subset(test_idx.tolist()))


def _torchvision_files(
    cls_name: str, splits: tuple[str, str], root: Path, download: bool, image_size: int, cache: DecodeCache | None
):
    """Torchvision datasets that keep image file lists (Flowers102, OxfordIIITPet)."""
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    out = []
    for split in splits:
        try:
            ds = cls(str(root), split=split, download=download)
        except RuntimeError as e:
            raise TransferlabError(
                f"{cls_name} not found under {root} ({e}). Set data.root to where it lives, or go online and set data.download=true."
            ) from e
        classes = list(getattr(ds, "classes", [str(i) for i in sorted(set(ds._labels))]))
        files = getattr(ds, "_image_files", None) or ds._images  # torchvision names the list per dataset
        out.append(file_images([str(f) for f in files], list(ds._labels), classes, image_size, cache, root, "error"))
    return SourceData(out[0], out[1])


def flowers102(root: Path, download: bool, image_size: int, decode_cache: DecodeCache | None = None, **_):
    """Oxford Flowers-102 through torchvision; train = its train split (val stays unused), test = its test split."""
    return _torchvision_files("Flowers102", ("train", "test"), root, download, image_size, decode_cache)


def pets(root: Path, download: bool, image_size: int, decode_cache: DecodeCache | None = None, **_):
    """Oxford-IIIT Pet through torchvision: trainval and test splits."""
    return _torchvision_files("OxfordIIITPet", ("trainval", "test"), root, download, image_size, decode_cache)
