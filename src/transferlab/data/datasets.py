"""Two dataset shapes that every source maps onto: images held in memory, or image files decoded on demand.

Both yield uint8 CHW tensors and int labels, so one batch transform (resize, augment, normalise)
serves every source and runs on whole batches, on the accelerator when there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset


class TensorPairs(Dataset):
    """Inputs and labels held in memory as two tensors, served a whole batch at a time."""

    decodes_on_demand = False  # loader workers would only add overhead

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor):
        self.inputs, self.labels = inputs, labels.long()

    @property
    def targets(self) -> torch.Tensor:
        """Labels of every sample, used for stratified splits."""
        return self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.inputs[i], self.labels[i]

    def __getitems__(self, indices: list[int]):
        # DataLoader calls this with a whole batch of indices: one tensor index instead of
        # batch_size Python calls plus a collate, which keeps loading far ahead of training.
        idx = torch.as_tensor(indices)
        return self.inputs[idx], self.labels[idx]


class TensorImages(TensorPairs):
    """Images already decoded into one uint8 tensor (N, C, H, W), with their labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        super().__init__(images, labels)
        self.classes = list(classes)

    @property
    def images(self) -> torch.Tensor:
        """The uint8 image tensor."""
        return self.inputs


class MappedImages(TensorImages):
    """Rows of a shared uint8 image array (a memory-mapped decode cache), with their labels: subsets copy nothing."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], rows: torch.Tensor | None = None
    ):
        super().__init__(images, labels, classes)
        self.rows = rows if rows is not None else torch.arange(len(labels))

    def subset(self, indices: Sequence[int]) -> MappedImages:
        """The samples at ``indices``, over the same array."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return MappedImages(self.inputs, self.labels[idx], self.classes, self.rows[idx])

    def __getitem__(self, i: int):
        return self.inputs[self.rows[i]], self.labels[i]

    def __getitems__(self, indices: list[int]):
        idx = torch.as_tensor(indices)
        return self.inputs[self.rows[idx]], self.labels[idx]


class FileImages(Dataset):
    """Image files decoded one by one (in loader workers) and resized to a fixed square size."""

    decodes_on_demand = True

    def __init__(self, files: Sequence[str], labels: Sequence[int], classes: Sequence[str], decode: Callable):
        self.files = list(files)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.classes = list(classes)
        self.decode = decode

    @property
    def targets(self) -> torch.Tensor:
        """Labels of every sample, used for stratified splits."""
        return self.labels

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: Sequence[int]) -> FileImages:
        """The files at ``indices``."""
        return FileImages([self.files[i] for i in indices], self.labels[list(indices)], self.classes, self.decode)

    def __getitem__(self, i: int):
        return self.decode(self.files[i]), self.labels[i]

    def __getitems__(self, indices: list[int]):
        return collate_pairs([self[i] for i in indices])


def collate_pairs(samples):
    """Stack a list of (image, label) pairs; a batch that is already stacked passes through."""
    if isinstance(samples, tuple):
        return samples
    images, labels = zip(*samples, strict=True)
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.long)
