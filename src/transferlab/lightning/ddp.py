"""DDP whose extra ranks follow the job that the sweep launched, instead of re-running the sweep.

Lightning's own DDP launcher starts rank k as a new process with the same command line. Under a Hydra sweep that is
the whole sweep again (``-m`` and all its overrides): rank 1 prepares, moves and skips job folders, samples its own
Optuna trial and runs every job, while rank 0 waits for it. Lightning also leaves ``LOCAL_RANK`` and the process
group behind after the first job, and kills the sweep process (SIGKILL) when a rank exits with an error.

Here rank 0 writes the job's resolved config to ``<run dir>/.ddp_job.json`` and starts each extra rank as
``python -m transferlab.lightning.follow <that file>``, which calls the same task function with exactly that config:
same trial, same seed, same resume checkpoint, no Hydra, no sweep. When the job ends (``utils.task.on_job_end``) the
ranks are stopped, the process group closed and the environment restored, so the next job of the sweep starts clean.
A rank that dies makes the job fail (the others are stopped so no collective waits forever), not the sweep.

Under a cluster launcher (``srun`` with one task per device) SLURM starts every rank: rank 0 writes the same file,
with its launch token, and the other ranks wait for it (``sweeps/job.py``) before they train.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector
from omegaconf import OmegaConf

from transferlab.utils import lifecycle
from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import atomic_write_json
from transferlab.utils.ranks import LEADER_PID, OUR_RANK, externally_launched, launch_token

log = logging.getLogger(__name__)

RECORD = ".ddp_job.json"
# Variables our launcher sets in rank 0's own environment for its ranks; removed again when the job ends, or the
# next job of a sweep would believe a cluster started its processes (Lightning reads LOCAL_RANK that way).
_ENV_KEYS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_SIGNAL_EXITS = (130, 143, -2, -15)  # a rank that stopped on SIGINT/SIGTERM (its handler's exit, or the signal's)
_RANKS_EXIT_S = 60.0  # how long a finished job waits for its ranks to end by themselves


def record_path(run_dir: str | Path) -> Path:
    """Where rank 0 of a DDP job leaves the config its other ranks run."""
    return Path(run_dir) / RECORD


def write_record(run_dir: str | Path) -> Path:
    """Write the running task and its resolved config (the job as rank 0 prepared it) for the other ranks."""
    task = lifecycle.current_task()
    if task is None:
        raise TransferlabError(
            "DDP needs a transferlab entry point (transferlab.train) to start its other ranks. Run it from there, "
            "or use a single device."
        )
    config = OmegaConf.to_container(task.cfg, resolve=True)
    record = {"task": task.name, "token": launch_token(), "config": config, "pid": os.getpid()}
    return atomic_write_json(record_path(run_dir), record)


def _config_digest(module) -> str:
    config = module.run_config or {}  # TransferModule's resolved run config (None for a module built by hand)
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _RankWatcher(threading.Thread):
    """Lightning's observer SIGKILLs the main process (a whole sweep) when a rank fails. This one stops the
    other ranks instead, so rank 0's collectives end with an error, and its job fails like any other."""

    def __init__(self, procs: list[subprocess.Popen]):
        super().__init__(daemon=True, name="transferlab-ddp-ranks")
        self.procs = procs
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            failed = [(i + 1, p.returncode) for i, p in enumerate(self.procs) if p.poll() not in (None, 0)]
            if failed:
                rank, code = failed[0]
                if code not in _SIGNAL_EXITS:  # a signal: rank 0 got it too and says so
                    log.error("DDP rank %d exited with code %s: this job fails; stopping its other ranks.", rank, code)
                _kill(self.procs)
                return


def _kill(procs: list[subprocess.Popen]) -> None:
    """End every live rank with SIGKILL: they hold nothing to save (rank 0 writes checkpoints and results), one
    stuck in a collective could not run a SIGTERM handler, and a SIGTERM would be passed back to rank 0 as a stop
    of the whole sweep (``sweeps/interrupt.py``)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


class FollowerLauncher(_SubprocessScriptLauncher):
    """Starts ranks 1..N-1 of this node as followers of the current job (``transferlab.lightning.follow``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._saved_env: dict[str, str | None] = {}
        self._watcher: _RankWatcher | None = None

    def launch(self, function, *args, trainer=None, **kwargs):
        """Start the followers once per job (fit and test of one job share them), then run ``function``."""
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._start_followers(trainer)
        return function(*args, **kwargs)

    def _start_followers(self, trainer) -> None:
        self._check_can_spawn_children()
        self._saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
        os.environ["MASTER_ADDR"] = self.cluster_environment.main_address
        os.environ["MASTER_PORT"] = str(self.cluster_environment.main_port)
        os.environ["NODE_RANK"] = str(self.cluster_environment.node_rank())
        os.environ["LOCAL_RANK"] = str(self.cluster_environment.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        record = write_record(trainer.default_root_dir)
        for local_rank in range(1, self.num_processes):
            env = os.environ | {"LOCAL_RANK": str(local_rank), OUR_RANK: str(local_rank), LEADER_PID: str(os.getpid())}
            command = [sys.executable, "-m", "transferlab.lightning.follow", str(record)]
            self.procs.append(subprocess.Popen(command, env=env))
        self._watcher = _RankWatcher(self.procs)
        self._watcher.start()
        _ACTIVE.append(self)
        lifecycle.on_force_stop(self.stop_ranks)

    def stop_ranks(self) -> None:
        """Kill the followers now: the signal watchdog's last resort for a rank 0 stuck in a collective."""
        if self._watcher is not None:
            self._watcher.done.set()
        _kill(self.procs)

    def end_job(self, ok: bool) -> None:
        """After the job: let the ranks finish (``ok``) or stop them, then restore the environment."""
        if self._watcher is not None:
            self._watcher.done.set()
        if ok:
            deadline = time.monotonic() + _RANKS_EXIT_S
            for p in self.procs:
                try:
                    p.wait(timeout=max(deadline - time.monotonic(), 0.0))
                except subprocess.TimeoutExpired:
                    log.warning(
                        "DDP rank (pid %d) did not end %.0f s after its job; stopping it.", p.pid, _RANKS_EXIT_S
                    )
        _kill(self.procs)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        lifecycle.forget_force_stop(self.stop_ranks)


_ACTIVE: list[FollowerLauncher] = []


def end_job(ok: bool) -> None:
    """Job-end hook: stop or reap this process's DDP ranks, close the process group, restore the environment."""
    while _ACTIVE:
        _ACTIVE.pop().end_job(ok)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # not Lightning's _destroy_dist_connection: it resets SIGINT to the default handler, ours included
        torch.distributed.destroy_process_group()


lifecycle.on_job_end(end_job)


class _JobSignalsFirst(_SignalConnector):
    """Lightning's SIGTERM notifier broadcasts the signal to the other ranks from inside the handler: rank 0 then
    blocks there until every rank joins that broadcast, which ranks busy in a training step never do. The handler
    installed before the fit (the job's own: ``sweeps/interrupt.py``) runs first instead; it stops rank 0 at once,
    and the end of the job stops the other ranks."""

    def _sigterm_notifier_fn(self, signum, frame) -> None:
        job_handler = self._original_handlers.get(signal.SIGTERM)
        if callable(job_handler):
            job_handler(signum, frame)  # raises inside a job
        super()._sigterm_notifier_fn(signum, frame)


class DDPJobStrategy(DDPStrategy):
    """Lightning's DDP (``trainer.strategy``) for transferlab jobs: ranks > 0 follow the job rank 0 runs.

    Same arguments as ``lightning.pytorch.strategies.DDPStrategy``. Before training, every rank checks that it
    runs the same resolved config as rank 0 (one line if not, instead of a shape mismatch deep inside DDP).
    """

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = FollowerLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def setup(self, trainer) -> None:
        """Lightning's set-up, with the job's own SIGTERM handler first in line (see ``_JobSignalsFirst``)."""
        super().setup(trainer)
        # Trainer._run registers its signal handlers after this hook, through this (private) connector.
        trainer._signal_connector = _JobSignalsFirst(trainer)

    def setup_environment(self) -> None:
        """Publish the job for ranks a cluster launcher started, then join the process group as usual."""
        if externally_launched() and self.cluster_environment.global_rank() == 0 and self.lightning_module is not None:
            write_record(self.lightning_module.trainer.default_root_dir)
        super().setup_environment()
        self._check_same_config()

    def _check_same_config(self) -> None:
        digests = [None] * self.world_size
        torch.distributed.all_gather_object(digests, _config_digest(self.lightning_module))
        if len(set(digests)) > 1:
            raise TransferlabError(
                f"The DDP ranks run different configs (digests {digests}): each rank must run rank 0's job. "
                "Start DDP runs through transferlab.train (trainer=ddp, trainer=ddp_cpu)."
            )
