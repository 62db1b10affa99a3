"""Atomic writes: a reader (or a crash) sees either the old file or the complete new one, never half of it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transferlab.utils.errors import TransferlabError


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TransferlabError(
            f"Cannot create output folder {directory}: {e.strerror}. Point paths.log_dir/paths.cache_dir at a writable folder."
        ) from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path`` (same folder, so the rename is atomic)."""
    path = Path(path)
    _check_writable(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise TransferlabError(
            f"Could not write {path}: {e.strerror}. Choose a writable output folder; the previous file is untouched."
        ) from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give them the usual mode
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise TransferlabError(
            f"Could not write {path}: {e.strerror}. Free disk space or choose another output folder; the previous file is untouched."
        ) from e
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (NaN stays NaN so failed metrics stay visible)."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _usual_modes(directory: Path) -> None:
    # mkdtemp makes a 0700 folder (and some writers 0600 files); give the tree the modes of a plain mkdir/open.
    mask = _umask()
    os.chmod(directory, 0o777 & ~mask)
    for p in directory.rglob("*"):
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def atomic_write_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Fill a temp folder with ``write(tmp_dir)``, then swap it in place of ``path``.

    The old folder is moved aside first and removed only after the new one is in place.
    """
    path = Path(path)
    _check_writable(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        _usual_modes(tmp)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def sqlite_path(url: str | None) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (Optuna storages, MLflow stores); None for other URLs and
    in-memory SQLite."""
    if not url or not str(url).startswith("sqlite:///"):
        return None
    path = str(url)[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def refused_code(error: Exception) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused a pickle because it names code to run (an "unsupported
    global"), rather than failing on garbage bytes: the two get different advice. torch says so only in its text."""
    return "unsupported global" in str(error).lower()
