"""Real DDP on CPU: 2 processes over gloo, one output dir, metrics written once by rank 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, TINY, compose_config, read_metrics, subprocess_env


def _run(tmp_path: Path, name: str, *overrides: str) -> Path:
    run_dir = tmp_path / name
    env = {
        **os.environ,
        "TRANSFERLAB_LOG_DIR": str(tmp_path / "logs"),
        "TRANSFERLAB_CACHE_DIR": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "transferlab.train", *TINY, "model.name=tf_efficientnet_lite0", "model.weights=bundled",
         f"hydra.run.dir={run_dir}", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def _weights(run_dir: Path) -> dict:
    import torch

    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


# Same global batch: 2 processes x 16 = 1 process x 32. 96 images: one epoch is 3 steps in both runs, so the
# epoch ends with validation, checkpointing and testing, each sharded over the two ranks.
DDP, SINGLE = ("trainer=ddp_cpu", "data.batch_size=16"), ("data.batch_size=32",)
ONE_EPOCH_OF_3_STEPS = ("data.train_size=96", "trainer.max_epochs=1")


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy",
    [
        # SGD: Adam divides by the gradient's magnitude, so float-rounding noise in near-zero gradients
        # becomes full-size steps and hides what this test checks.
        ("strategy=fine_tuning", "strategy.optimizer._target_=torch.optim.SGD", "strategy.lr=0.05"),
        ("strategy=lora",),
    ],
    ids=["fine_tuning", "lora"],
)
def test_ddp_cpu_takes_the_single_process_steps_into_one_run_dir(tmp_path, strategy):
    # Our sampler and augmentation give global step k the same samples and draws as the single process,
    # and CPUSyncBatchNorm normalises over the global batch: after 3 steps both runs must have made the
    # same updates up to float rounding. Measured for fine-tuning: 0.4% of the update apart (100% with
    # per-process BatchNorm), BatchNorm statistics 4e-5 apart (2e-2 with per-process BatchNorm).
    import lightning as L

    from transferlab.build import build_module

    ddp_dir = _run(tmp_path, "ddp", *strategy, *ONE_EPOCH_OF_3_STEPS, *DDP)
    single_dir = _run(tmp_path, "single", *strategy, *ONE_EPOCH_OF_3_STEPS, *SINGLE)
    ddp, single = _weights(ddp_dir), _weights(single_dir)
    cfg = compose_config(
        tmp_path / "init", [*TINY, "model.name=tf_efficientnet_lite0", "model.weights=bundled", *strategy]
    )
    L.seed_everything(cfg.seed, verbose=False)  # as train() does before building the module
    start = {f"net.{k}": v for k, v in build_module(cfg, num_classes=10).net.state_dict().items()}
    assert ddp.keys() == single.keys()

    def relative_gap(keys, baseline):
        gap = sum(((ddp[k] - single[k]).float() ** 2).sum() for k in keys)
        size = sum(((single[k] - baseline(k)).float() ** 2).sum() for k in keys)
        return (gap / size).sqrt().item()

    params = [k for k, v in single.items() if v.is_floating_point() and "running_" not in k]
    stats = [k for k in single if "running_" in k]
    assert relative_gap(params, lambda k: start[k]) < 2e-2  # of the update each run made
    if stats:
        assert relative_gap(stats, lambda k: 0.0) < 1e-3

    # One run dir, written by rank 0: metrics.json once, best + last checkpoints, no run dir of rank 1's own.
    ddp_metrics, single_metrics = read_metrics(ddp_dir), read_metrics(single_dir)
    assert ddp_metrics["status"] == "ok" and ddp_metrics["epochs"] == single_metrics["epochs"]
    assert ddp_metrics["params/trainable"] == single_metrics["params/trainable"]
    assert not list((tmp_path / "logs").glob("runs/*"))
    assert len(list((ddp_dir / "checkpoints").glob("*.ckpt"))) == 2
    # The same weights up to rounding, tested on the two ranks' halves of the test split and gathered:
    # the same accuracy (540 digits, so one example is 0.002).
    assert abs(ddp_metrics["test/acc"] - single_metrics["test/acc"]) <= 0.005, (ddp_metrics, single_metrics)


def _synced_bn_rank(rank: int, port: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    from timm.layers import BatchNormAct2d

    from transferlab.lightning.sync_batchnorm import CPUSyncBatchNorm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    x, w = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    ref = BatchNormAct2d(3)
    ref.weight.data.uniform_()
    x_ref = x.clone().requires_grad_()
    y_ref = ref(x_ref)
    (y_ref * w).sum().backward()
    bn = BatchNormAct2d(3)
    bn.load_state_dict(ref.state_dict() | {"running_mean": torch.zeros(3), "running_var": torch.ones(3),
                                            "num_batches_tracked": torch.tensor(0)})  # fmt: skip
    CPUSyncBatchNorm().apply(bn)
    part = slice(4 * rank, 4 * rank + 4)
    x_local = x[part].clone().requires_grad_()
    y = bn(x_local)
    (y * w[part]).sum().backward()
    weight_grad = bn.weight.grad.clone()
    dist.all_reduce(weight_grad)  # what DDP does with parameter gradients
    torch.save(
        {
            "out": (y - y_ref[part]).abs().max().detach(),
            "input_grad": (x_local.grad - x_ref.grad[part]).abs().max(),
            "weight_grad": (weight_grad - ref.weight.grad).abs().max(),
            "running_var": (bn.running_var - ref.running_var).abs().max(),
            "reverted": type(CPUSyncBatchNorm().revert(bn)) is BatchNormAct2d,
        },
        Path(out_dir) / f"{rank}.pt",
    )
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_equals_batchnorm_over_the_global_batch(tmp_path):
    import multiprocessing
    import socket

    import torch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_synced_bn_rank, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    for rank in range(2):
        diffs = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert diffs.pop("reverted")
        assert all(v < 1e-5 for v in diffs.values()), diffs


# --- DDP inside sweeps: the extra rank follows the job the sweep launched ------------------------------------------
SWEEP_DDP = (*TINY, "trainer=ddp_cpu", "data.batch_size=16", "trainer.threads=1")


def _sweep(tmp_path: Path, sweep: Path, *overrides: str) -> subprocess.Popen:
    env = {
        **subprocess_env(),
        "TRANSFERLAB_LOG_DIR": str(tmp_path / "logs"),
        "TRANSFERLAB_CACHE_DIR": str(tmp_path / "cache"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "transferlab.train", "-m", *SWEEP_DDP, f"hydra.sweep.dir={sweep}", *overrides],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _ranks_left(sweep: Path) -> list[str]:
    """Processes still running anything of this sweep (rank 0's command line or a follower's record path)."""
    out = subprocess.run(["pgrep", "-af", str(sweep)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


@pytest.mark.slow
def test_ddp_sweep_stops_on_sigterm_then_resumes_and_runs_each_job_once(tmp_path):
    # Before the fix rank 1 re-ran the whole sweep: it moved rank 0's outputs to replaced-*, job 0 failed, job 1
    # hung, and SIGTERM ended nothing.
    import signal
    import time

    sweep = tmp_path / "sweep"
    args = ("data.train_size=300", "trainer.max_epochs=6", "strategy=fine_tuning", "strategy.lr=0.005,0.01")
    proc = _sweep(tmp_path, sweep, *args)
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.is_file(), proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143 and time.monotonic() - stopped < 60, output[-3000:]
    assert "interrupted: SIGTERM stopped job 0" in output
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "interrupted"
    assert _ranks_left(sweep) == []  # no rank left behind

    rerun = _sweep(tmp_path, sweep, *args)
    output = rerun.communicate(timeout=900)[0]
    assert rerun.returncode == 0, output[-3000:]
    assert "Job 0 resumes from" in output
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["world_size"] == 2 and metrics["epochs"] == 6
        assert not list((sweep / job).glob("replaced-*"))  # no rank moved another's outputs aside
    # rank 0 alone writes results: one "Wrote .../metrics.json" per job across both runs' logs
    assert output.count("Wrote ") == 2 and _ranks_left(sweep) == []


@pytest.mark.slow
def test_optuna_with_ddp_samples_each_trial_once_and_both_ranks_train_it(tmp_path):
    import optuna

    sweep = tmp_path / "sweep"
    proc = _sweep(tmp_path, sweep, "data.train_size=100", "hparams_search=lora_optuna", "hydra.sweeper.n_trials=2")
    output = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, output[-3000:]
    study = optuna.load_study(study_name="lora_optuna", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        job = sweep / str(trial.number)
        followed = json.loads((job / ".ddp_job.json").read_text())["config"]  # what rank 1 trained
        assert followed["strategy"]["r"] == trial.params["strategy.r"]
        assert followed["strategy"]["lr"] == pytest.approx(trial.params["strategy.lr"])
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["world_size"] == 2
        assert metrics["val/acc"] == pytest.approx(trial.value)  # reported once, by rank 0


_STUCK_JOB = """
import os, sys, time
from datetime import timedelta
import torch.distributed as dist
from transferlab.sweeps import interrupt
from transferlab.utils import lifecycle

interrupt.install()
lifecycle.on_force_stop(lambda: open(sys.argv[1], "w").write("forced"))
with interrupt.armed():
    print("waiting", flush=True)
    # rank 0 of 2, and rank 1 never comes: blocked in C++ (the rendezvous), where no Python handler can run
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%s" % sys.argv[2], rank=0, world_size=2,
                            timeout=timedelta(seconds=600))
"""


def test_a_job_stuck_in_a_collective_still_ends_on_sigterm(tmp_path):
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    marker = tmp_path / "forced"
    proc = subprocess.Popen(
        [sys.executable, "-c", _STUCK_JOB, str(marker), str(port)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env=subprocess_env(TRANSFERLAB_STOP_GRACE_S="2"),
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "waiting"
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 143  # the watchdog ended it with the signal's status
    assert marker.read_text() == "forced"  # after first stopping what the job waited for


def test_cluster_started_ranks_follow_rank_zero_decision(tmp_path, monkeypatch):
    # srun starts every rank of a DDP job: ranks > 0 wait for rank 0's record from this launch, never for an old one
    from transferlab.sweeps.job import _publish_skip, _wait_for_leader
    from transferlab.utils.errors import TransferlabError
    from transferlab.utils.ranks import externally_launched, follower_rank

    for key, value in {
        "SLURM_JOB_ID": "7",
        "SLURM_STEP_ID": "0",
        "SLURM_RESTART_COUNT": "1",
        "SLURM_NTASKS": "2",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert follower_rank() == 1 and externally_launched()
    job = tmp_path / "3"
    job.mkdir()
    (job / ".ddp_job.json").write_text(json.dumps({"token": "7.0.0", "config": {"seed": 1}}))  # the previous attempt
    with pytest.raises(TransferlabError, match="waited 1 s for rank 0 to prepare job 3"):
        _wait_for_leader(job, timeout_s=1)
    (job / ".ddp_job.json").write_text(json.dumps({"token": "7.0.1", "config": {"seed": 5}}))
    assert _wait_for_leader(job, timeout_s=1)["config"] == {"seed": 5}
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert follower_rank() == 0
    _publish_skip(job, {"status": "ok", "val/acc": 0.5})  # rank 0 skipped a finished job: the others return too
    assert _wait_for_leader(job, timeout_s=1) == {
        "token": "7.0.1",
        "skip": True,
        "metrics": {"status": "ok", "val/acc": 0.5},
    }
