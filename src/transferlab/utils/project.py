"""Where the project's checkout is: relative paths, ``.env`` and the run's git commit are read from here."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]
