"""The comparison report of a sweep: results.csv, ranking.csv, report.md, report.tex and plots/, rebuilt from each
job's metrics.json and predictions.npz.

Runs automatically at the end of every multirun (a Hydra callback), and by hand on any sweep dir,
finished or partial: ``python -m transferlab.report logs/multiruns/<sweep>``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from transferlab.reporting.build import build_report
from transferlab.sweeps.report_callback import ReportCallback  # where configs written before it moved find it

__all__ = ["ReportCallback", "build_report", "main"]
log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """``python -m transferlab.report SWEEP_DIR``: rebuild the report of a (possibly partial) sweep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from transferlab.utils.console import print_error
    from transferlab.utils.errors import TransferlabError

    try:
        print(build_report(args.sweep_dir))
    except TransferlabError as e:
        print_error(str(e))
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
