"""Image files on disk: scanning class folders, checking files up front, decoding to fixed-size uint8 tensors."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from transferlab.utils.errors import TransferlabError

log = logging.getLogger(__name__)


def _is_readable_image(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()  # reads the structure without a full decode: cheap enough to run over a folder
        return True
    except Exception:
        return False


def scan_image_folder(
    root: Path, on_bad_image: str = "error", verify: bool = True
) -> tuple[list[str], list[int], list[str]]:
    """List (files, labels, classes) of a class-subfolder tree, checking each file is a readable image.

    ``on_bad_image='skip'`` drops unreadable files with one warning naming them; ``'error'`` stops.
    ``verify=False`` checks only the file extension: for callers that decode every file anyway and pass the
    failures to :func:`drop_bad_files` (the decode cache).
    """
    if on_bad_image not in ("skip", "error"):
        raise TransferlabError(f"data.on_bad_image={on_bad_image!r} is not valid. Use 'skip' or 'error'.")
    if not root.is_dir():
        raise TransferlabError(
            f"Image folder {root} does not exist. Set data.root to a folder with one subfolder per class."
        )
    try:
        classes, class_to_idx = find_classes(str(root))
    except FileNotFoundError as e:
        raise TransferlabError(
            f"Image folder {root} has no class subfolders. Put each class's images in root/<class>/."
        ) from e
    if len(classes) < 2:
        raise TransferlabError(
            f"Image folder {root} has only one class ({classes[0]}). Classification needs at least two class folders."
        )
    files, labels, bad = [], [], []
    for cls in classes:
        for path in sorted(p for p in (root / cls).rglob("*") if p.is_file()):
            if path.suffix.lower() in IMG_EXTENSIONS and (not verify or _is_readable_image(path)):
                files.append(str(path))
                labels.append(class_to_idx[cls])
            else:
                bad.append(str(path))
    return drop_bad_files(files, labels, classes, bad, root, on_bad_image)


def drop_bad_files(
    files: list[str], labels: list[int], classes: list[str], bad: list[str], root: Path, on_bad_image: str
) -> tuple[list[str], list[int], list[str]]:
    """``files`` and ``labels`` without the ``bad`` files (which stop the run with ``on_bad_image='error'``),
    checked for a class left without images."""
    bad_set = set(bad)
    kept = [(f, y) for f, y in zip(files, labels, strict=True) if f not in bad_set]
    files, labels = [f for f, _ in kept], [y for _, y in kept]
    if bad and on_bad_image == "error":
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise TransferlabError(
            f"{len(bad)} unreadable or non-image file(s) in {root}: {shown}. Remove them or set data.on_bad_image=skip."
        )
    if bad:
        log.warning("Skipping %d unreadable or non-image file(s) in %s: %s", len(bad), root, ", ".join(bad))
    if not files:
        raise TransferlabError(
            f"Image folder {root} holds no readable images. Add .jpg/.png files under root/<class>/."
        )
    present = set(labels)
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise TransferlabError(
            f"Class folder(s) {empty} in {root} hold no readable images. Add images or remove the folders."
        )
    return files, labels, classes


def decode_resized(path: str, size: int) -> torch.Tensor:
    """Decode one image file to a uint8 RGB tensor resized to ``size`` x ``size``."""
    data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
    image = decode_image(data, mode=ImageReadMode.RGB)
    return TF.resize(image, [size, size], antialias=True)


def make_decoder(size: int):
    """A picklable decoder for loader workers."""
    return partial(decode_resized, size=size)
