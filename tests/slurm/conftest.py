"""The one-node SLURM cluster the `slurm` tests share (one start per test session), and the tiny sweep they run.

Skipped, with the reason, where SLURM's daemons are not installed or the tests do not run as root; CI installs them
(.ci/run). Each session starts the cluster in a fresh state folder and stops its daemons by PID at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

CLUSTER_SCRIPT = Path(__file__).with_name("cluster.sh")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> dict[str, str]:
    """Start the cluster; yield the environment variables its clients need (``SLURM_CONF``); stop it after."""
    missing = [c for c in ("slurmctld", "slurmd", "munged", "sbatch") if shutil.which(c) is None]
    if missing:
        pytest.skip(
            f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurmctld slurmd slurm-client munge"
        )
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs its daemons as root")
    base = tmp_path_factory.mktemp("slurm")  # fresh state: job ids restart at 1 with nothing left from earlier runs
    env = {**os.environ, "SLURM_BASE": str(base)}
    start = subprocess.run(["bash", str(CLUSTER_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert start.returncode == 0, start.stdout[-3000:] + start.stderr[-3000:]
        yield {"SLURM_CONF": str(base / "etc" / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop"], env=env, capture_output=True, timeout=120, cwd=ROOT)
