"""Per-example test predictions (``predictions.npz`` next to metrics.json): what paired tests between arms need.

Each file holds the predicted class, the true label and the predicted class's probability for every test
example, in the test set's own order, plus the name of the test set. Small integer and half-precision
dtypes keep a 10,000-image test set at about 40 kB compressed. Each shifted test set (``data.test_shifts``) has its
own file beside it, ``predictions_<shift label>.npz``, in the same example order, so it pairs with the clean one.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np

from transferlab.utils.io import atomic_write

log = logging.getLogger(__name__)

FILENAME = "predictions.npz"


def predictions_filename(shift: str | None = None) -> str:
    """``predictions.npz`` for the clean test set; ``predictions_<shift>.npz`` for a shifted one (its label)."""
    return FILENAME if shift is None else f"predictions_{shift}.npz"


def save_predictions(folder: str | Path, predictions: dict, test_set: str, shift: str | None = None) -> Path:
    """Write ``predictions`` (``pred``, ``target``, ``prob`` arrays) and the ``test_set`` name atomically
    (``shift``: the label of the shifted test set they were made on; None for the clean one)."""
    n_classes = int(max(predictions["pred"].max(initial=0), predictions["target"].max(initial=0))) + 1
    label_dtype = np.int16 if n_classes < np.iinfo(np.int16).max else np.int32
    arrays = {
        "pred": predictions["pred"].astype(label_dtype),
        "target": predictions["target"].astype(label_dtype),
        "prob": predictions["prob"].astype(np.float16),
        "test_set": np.array(test_set),
    }

    def write(tmp: Path) -> None:
        buffer = io.BytesIO()  # np.savez_compressed appends .npz to a bare path; a buffer keeps the temp name
        np.savez_compressed(buffer, **arrays)
        tmp.write_bytes(buffer.getvalue())

    return atomic_write(Path(folder) / predictions_filename(shift), write)


def load_predictions(folder: str | Path, shift: str | None = None) -> dict | None:
    """The predictions of the run in ``folder`` (on the shifted test set ``shift``, or the clean one); None when it
    has none (older runs) or the file is unreadable."""
    path = Path(folder) / predictions_filename(shift)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in ("pred", "target", "prob", "test_set")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("%s is unreadable (%s): this job's paired tests are skipped.", path, e)
        return None
    out["test_set"] = str(out["test_set"])
    return out
