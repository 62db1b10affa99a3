"""Image folders decoded once: later set-ups and epochs read the memory-mapped cache and decode nothing."""

from __future__ import annotations

import os

import pytest
import torch

from transferlab.data import decoded_cache
from transferlab.data.datamodule import ImageDataModule
from transferlab.utils.errors import TransferlabError


@pytest.fixture
def decodes(monkeypatch):
    """Counts image decodes in this process (the cache fills with workers=0 here)."""
    calls = []
    real = decoded_cache.decode_resized

    def counted(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(decoded_cache, "decode_resized", counted)
    return calls


def _module(root, cache, **kw) -> ImageDataModule:
    kw = {"image_size": 16, "batch_size": 4, "val_size": 3, "num_workers": 0, **kw}
    dm = ImageDataModule("imagefolder", root=str(root), decode_cache_dir=str(cache) if cache else None, **kw)
    dm.setup()
    return dm


def test_second_setup_and_every_epoch_decode_nothing(image_folder, tmp_path, decodes):
    first = _module(image_folder, tmp_path / "cache")
    assert len(decodes) == 18 and len(list((tmp_path / "cache" / "images").glob("*.u8"))) == 1
    second = _module(image_folder, tmp_path / "cache")
    for _ in range(2):  # two epochs
        batches = list(second.train_dataloader())
    assert len(decodes) == 18 and batches  # nothing decoded after the first set-up
    on_demand = _module(image_folder, None)  # the files decoded in the epoch, as without a cache
    for a, b, c in ((first.test_set, second.test_set, on_demand.test_set),):
        x = a.__getitems__(list(range(len(a))))[0]
        assert torch.equal(x, b.__getitems__(list(range(len(b))))[0])
        assert torch.equal(x, c.__getitems__(list(range(len(c))))[0])
    assert first.setup_seconds > 0 and [len(first.train_set), len(first.test_set)] == [len(on_demand.train_set), 4]


def test_a_changed_file_rebuilds_the_cache(image_folder, tmp_path, decodes):
    _module(image_folder, tmp_path / "cache")
    changed = next(image_folder.glob("class_1/*.png"))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    _module(image_folder, tmp_path / "cache")
    assert len(decodes) == 36  # a new key: every file decoded again into a new cache file
    assert len(list((tmp_path / "cache" / "images").glob("*.json"))) == 2


def test_a_file_that_does_not_decode_stops_or_is_skipped(image_folder, tmp_path, caplog):
    (image_folder / "class_0" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(TransferlabError, match="broken.png.*on_bad_image=skip"):
        _module(image_folder, tmp_path / "cache")
    dm = _module(image_folder, tmp_path / "cache", on_bad_image="skip")
    assert "broken.png" in caplog.text
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 18
