"""An extra rank of a DDP job: ``python -m transferlab.lightning.follow <run dir>/.ddp_job.json``.

Started by ``transferlab.lightning.ddp`` (never by hand). It runs the task function rank 0 runs, with the config
rank 0 prepared (trial values, seed, resume checkpoint included), and no Hydra: so it never sweeps, samples a
trial or touches a job folder. It prints only errors that rank 0 cannot see, and passes a signal it alone got on to
rank 0, so a signal to any rank stops the whole job.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

from omegaconf import OmegaConf

from transferlab.utils.ranks import LEADER_PID


def _forward_to_leader(signum: int, frame) -> None:
    """Our own stop on this rank (the job's handler, installed later, replaces this), and rank 0 told too."""
    leader = os.environ.get(LEADER_PID)
    if leader:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(leader), signum)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Load the job record and run its task as this rank."""
    argv = sys.argv[1:] if argv is None else argv
    record = json.loads(Path(argv[0]).read_text())
    # Rank 0 prints the config, progress and results; the same lines from every rank are noise.
    logging.basicConfig(level=logging.ERROR)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _forward_to_leader)
    module_name, _, function = record["task"].partition(":")
    task = getattr(importlib.import_module(module_name), function)
    task(OmegaConf.create(record["config"]))


if __name__ == "__main__":
    main()
