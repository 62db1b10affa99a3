"""Side-by-side benchmarks of transferlab's own code paths: ``python -m benchmarks [NAME ...] [--full]``.

Each benchmark module has ``NAME`` and ``run(full=False, ..., overrides=()) -> dict`` (its JSON section);
``run`` composes the real configs, builds the real product objects, alternates its contenders in one
process and prints a rich table. ``python -m benchmarks`` runs them all and writes
``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import importlib

NAMES = (
    "feature_cache",
    "framework_overhead",
    "data_pipeline",
    "strategy_costs",
    "speed_options",
    "host_syncs",
    "image_folder",
)


def load(name: str):
    """The benchmark module called ``name``."""
    if name not in NAMES:
        raise KeyError(f"unknown benchmark {name!r}; choose from {', '.join(NAMES)}")
    return importlib.import_module(f"benchmarks.{name}")
