"""``python -m benchmarks [NAME ...] [--full] [--threads N]``: run benchmarks, print tables, write results/latest.json.

Quick mode (the default) uses small subsets so that they all finish in minutes on two idle cores;
``--full`` uses more images, steps and rounds, and adds ``model.compile`` to speed_options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmarks import NAMES, load
from benchmarks.common import console, machine, table
from transferlab.utils.io import atomic_write_json

RESULTS = Path(__file__).parent / "results" / "latest.json"


def _targets(name: str, section: dict) -> list[list]:
    return [[f"{name}.{key}", t["value"], t["target"], t["met"]] for key, t in section.get("targets", {}).items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(NAMES)}"
    )
    parser.add_argument("--full", action="store_true", help="bigger subsets, more rounds, compile included")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default: {RESULTS})")
    parser.add_argument("--skip", nargs="+", default=(), metavar="CONTENDER",
                        help="feature_cache only: contenders to leave out (in_loop, cold_fp32)")  # fmt: skip
    args = parser.parse_args(argv)
    names = args.names or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    if args.skip and names != ["feature_cache"]:
        parser.error("--skip applies to feature_cache alone: run it as `python -m benchmarks feature_cache --skip ...`")
    if args.threads:
        torch.set_num_threads(args.threads)

    info = machine()
    mode = "full" if args.full else "quick"
    console.rule(f"transferlab benchmarks ({mode})")
    console.print(f"machine: {info['line']}")
    # Results of benchmarks not run now are kept: `python -m benchmarks data_pipeline` updates one section.
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    started = time.perf_counter()
    for name in names:
        console.rule(name)
        t0 = time.perf_counter()
        section = load(name).run(full=args.full, **({"skip": tuple(args.skip)} if args.skip else {}))
        section["meta"] = {
            "mode": mode,
            "wall_s": round(time.perf_counter() - t0, 1),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": info["line"],
        }
        results[name] = section
        results["machine"] = info
        atomic_write_json(args.out, results)  # after every benchmark: a later failure keeps the earlier results
    results["machine"] = {**info, "load_avg_1m_at_end": os.getloadavg()[0]}
    atomic_write_json(args.out, results)

    console.rule("targets")
    rows = [row for name in NAMES if name in results for row in _targets(name, results[name])]
    table("targets (this file's latest result for each benchmark)", ["key", "value", "target", "met"], rows)
    speed = results.get("speed_options")
    if speed:
        for line in speed.get("summary", []):
            console.print(f"speed_options: {line}")
    console.print(f"wrote {args.out} ({time.perf_counter() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
