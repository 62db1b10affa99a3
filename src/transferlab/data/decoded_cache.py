"""Image files decoded and resized once, into a uint8 file on disk that later epochs, runs and sweep jobs memory-map.

Decoding and resizing JPEG/PNG files in every epoch keeps loader workers busy and, on a GPU, makes them the
bottleneck. The cache file is keyed by the file list (paths, sizes, modification times) and the image size,
written to a temp file and renamed, and committed by a small JSON record written after it; a stale, partial or
foreign file is never read. Reading it decodes nothing: the pages come from the OS page cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from transferlab.data.image_files import decode_resized
from transferlab.utils.io import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

FORMAT = 1  # bump when decoding or resizing changes: older cache files are then rebuilt


def cache_key(files: Sequence[str], size: int) -> dict:
    """What determines the decoded images: every file's path, size and modification time, and the image size."""
    stats = [(f, st.st_size, st.st_mtime_ns) for f in files for st in (os.stat(f),)]
    listing = hashlib.sha256(json.dumps(stats).encode()).hexdigest()
    return {"format": FORMAT, "image_size": size, "n_files": len(files), "files": listing}


class _Decodes(Dataset):
    """(index, image or None) per file: a file that does not decode is reported, not raised."""

    def __init__(self, files: Sequence[str], size: int):
        self.files, self.size = list(files), size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return i, decode_resized(self.files[i], self.size)
        except Exception:  # any decoder failure means the same thing: a bad file, handled by on_bad_image
            return i, None


def _listing_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


class DecodeCache:
    """Decoded images of file lists under ``cache_dir/images/``, filled with ``workers`` loader processes."""

    def __init__(self, cache_dir: str | Path, workers: int = 0):
        self.folder = Path(cache_dir) / "images"
        self.workers = workers

    def images(self, files: Sequence[str], size: int) -> tuple[torch.Tensor, list[int]]:
        """uint8 images (n_good, 3, size, size), memory-mapped, in file order; and the indices of files that
        did not decode (left out of the images)."""
        key = cache_key(files, size)
        stem = self.folder / _listing_digest(key)
        data, record = stem.with_suffix(".u8"), stem.with_suffix(".json")
        loaded = self._load(data, record, key)
        if loaded is not None:
            return loaded
        start = time.perf_counter()
        bad = self._fill(data, files, size)
        atomic_write_json(record, {"key": key, "n": len(files) - len(bad), "bad": bad})  # commits the data file
        log.info("Decoded %d image files once into %s (%.1fs)", len(files), data, time.perf_counter() - start)
        return self._load(data, record, key)

    def _load(self, data: Path, record: Path, key: dict) -> tuple[torch.Tensor, list[int]] | None:
        try:
            stored = json.loads(record.read_text())
            n, size = stored["n"], key["image_size"]
            if stored["key"] != key or data.stat().st_size != n * 3 * size * size:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if n == 0:
            return torch.empty((0, 3, key["image_size"], key["image_size"]), dtype=torch.uint8), stored["bad"]
        # copy-on-write map: pages are read on first touch and shared by every process that maps the file
        array = np.memmap(data, dtype=np.uint8, mode="c", shape=(n, 3, size, size))
        return torch.from_numpy(array), stored["bad"]

    def _fill(self, data: Path, files: Sequence[str], size: int) -> list[int]:
        bad: list[int] = []

        def write(tmp: Path) -> None:
            # raw bytes, no header: the JSON record holds the count (rows of undecodable files are cut off)
            out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(max(len(files), 1), 3, size, size))
            loader = DataLoader(_Decodes(files, size), batch_size=None, num_workers=self.workers)
            row = 0
            for i, image in loader:  # in file order; good images packed to the front
                if image is None:
                    bad.append(int(i))
                    continue
                out[row] = image.numpy()
                row += 1
            out.flush()
            del out
            os.truncate(tmp, row * 3 * size * size)

        atomic_write(data, write)
        return bad
