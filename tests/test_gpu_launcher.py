"""One job per GPU (``hydra/launcher=gpus``): concurrent jobs get distinct GPUs, and a claim ends with its job."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from tests.helpers import ROOT, TINY, subprocess_env
from transferlab.sweeps.devices import DeviceClaims, cores_for

FAKE_GPUS = ["0", "1", "2"]


def _hold_one(lock_dir: str, barrier, out) -> None:
    claims = DeviceClaims(FAKE_GPUS, lock_dir, poll_s=0.05)
    with claims.held() as claim:
        out.put((claim.gpu, os.environ["CUDA_VISIBLE_DEVICES"], tuple(sorted(os.sched_getaffinity(0)))))
        barrier.wait(timeout=30)  # all three hold their GPU at the same time


def test_concurrent_jobs_get_distinct_gpus(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(len(FAKE_GPUS)), ctx.Queue()
    jobs = [ctx.Process(target=_hold_one, args=(str(tmp_path), barrier, out)) for _ in FAKE_GPUS]
    for job in jobs:
        job.start()
    got = [out.get(timeout=30) for _ in jobs]
    for job in jobs:
        job.join(timeout=30)
        assert job.exitcode == 0
    assert sorted(gpu for gpu, _, _ in got) == FAKE_GPUS
    assert all(gpu == visible for gpu, visible, _ in got)  # the job's CUDA sees its GPU only


def test_a_claim_is_released_when_the_job_raises(tmp_path):
    claims = DeviceClaims(["0"], tmp_path)
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    with pytest.raises(ValueError), claims.held():
        assert claims.try_claim("0") is None  # held: nobody else gets it
        raise ValueError("the job failed")
    again = claims.try_claim("0")
    assert again is not None and os.environ.get("CUDA_VISIBLE_DEVICES") == before
    claims.release(again)


def test_a_killed_job_releases_its_gpu(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()

    def hold_forever():
        DeviceClaims(["0"], tmp_path).claim()
        ready.set()
        ctx.Event().wait()

    job = ctx.Process(target=hold_forever)
    job.start()
    assert ready.wait(timeout=30) and DeviceClaims(["0"], tmp_path).try_claim("0") is None
    job.kill()
    job.join(timeout=30)
    assert DeviceClaims(["0"], tmp_path).try_claim("0") is not None  # the OS dropped the dead job's lock


def test_each_gpu_slot_gets_its_own_cores():
    assert [cores_for(s, 4, range(16)) for s in range(4)] == [
        (0, 1, 2, 3),
        (4, 5, 6, 7),
        (8, 9, 10, 11),
        (12, 13, 14, 15),
    ]
    assert cores_for(1, 4, [0, 1]) == (1,)  # fewer cores than GPUs: one each, shared


@pytest.mark.slow
def test_gpus_launcher_runs_jobs_on_distinct_fake_gpus_and_says_so_without_one(tmp_path):
    import subprocess
    import sys

    def sweep(name: str, visible: str | None):
        env = subprocess_env(TRANSFERLAB_LOCK_DIR=str(tmp_path / "locks"))
        env.pop("CUDA_VISIBLE_DEVICES", None)
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        args = [*TINY, "debug=fdr", "seed=0,1", "hydra/launcher=gpus", f"hydra.sweep.dir={tmp_path / name}",
                "trainer.threads=1"]  # fmt: skip
        return subprocess.run([sys.executable, "-m", "transferlab.train", "-m", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    faked = sweep("faked", "7,9")  # two "GPUs": the jobs run at once, one on each (their CUDA finds none: CPU)
    assert faked.returncode == 0, faked.stderr[-2000:]
    logs = "".join(p.read_text() for p in (tmp_path / "faked").glob("*/*.log"))
    assert sorted(line.split("Job on GPU ")[1][0] for line in logs.splitlines() if "Job on GPU" in line) == ["7", "9"]
    none = sweep("none", "")
    assert none.returncode == 0, none.stderr[-2000:]
    assert "no GPU visible; running the 2 job(s) one after another on the CPU" in none.stdout + none.stderr
