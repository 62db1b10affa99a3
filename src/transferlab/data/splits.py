"""Seeded, stratified index splits: validation out of the train split, then a train subset."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from transferlab.utils.errors import TransferlabError


def _count(size: int | float | None, total: int, name: str) -> int | None:
    if size is None:
        return None
    if isinstance(size, float) and 0 < size < 1:
        return max(1, round(size * total))
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise TransferlabError(f"data.{name}={size} is not valid. Use a positive count, a fraction in (0, 1), or null.")
    return int(size)


def split_indices(
    labels: np.ndarray, train_size: int | None, val_size: int | float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, val) indices into ``labels``: both stratified, and reproducible from ``seed``.

    A fractional ``val_size`` is taken of the train subset's size (or of all data when
    ``train_size`` is null), so a 6,000-image run validates on 600 images, not 6,000.
    """
    labels = np.asarray(labels)
    n, n_classes = len(labels), len(np.unique(labels))
    n_train = _count(train_size, n, "train_size")
    n_val = _count(val_size, n_train or n, "val_size")
    if n_train is not None and n_train < n_classes:
        raise TransferlabError(
            f"data.train_size={n_train} is smaller than the number of classes ({n_classes}). Use at least {n_classes}, or null for all."
        )
    if n_val < n_classes:
        n_val = n_classes  # a stratified split needs one sample of every class
    available = n - n_val
    if n_train is not None and n_train > available:
        raise TransferlabError(
            f"data.train_size={n_train} is larger than the {available} training images left after {n_val} for validation. "
            f"Use at most {available}, or null for all."
        )
    rest, val = train_test_split(np.arange(n), test_size=n_val, stratify=labels, random_state=seed)
    if n_train is None or n_train == len(rest):
        return np.sort(rest), np.sort(val)
    train, _ = train_test_split(rest, train_size=n_train, stratify=labels[rest], random_state=seed)
    return np.sort(train), np.sort(val)
