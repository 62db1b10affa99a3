"""One exception type for bad input, so entry points can print a single clear line instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TransferlabError(Exception):
    """Bad input (config, data, checkpoint, weights). The message names the problem and the fix."""


def suggest(name: str, candidates: Iterable[str], n: int = 5) -> str:
    """Return ' Did you mean: a, b?' for the closest candidates, or '' when none is close."""
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""
