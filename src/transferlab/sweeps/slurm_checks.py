"""Ask the cluster, before anything is submitted, whether it can run the jobs a ``hydra/launcher=slurm`` sweep
requests: SLURM's commands are on PATH, the partition exists, and some node has the CPUs and memory asked for.

sbatch itself accepts a request no node can meet on many clusters (the job then pends forever with reason
``Resources``), and a missing partition or command otherwise surfaces as a submitit traceback.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from transferlab.utils.errors import TransferlabError, suggest


@dataclass(frozen=True)
class Node:
    """One node of one partition as ``sinfo`` reports it."""

    partition: str
    cpus: int
    memory_mb: int
    default: bool  # the partition sbatch uses without --partition


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or e.stdout or "").strip().splitlines()
        raise TransferlabError(
            f"`{' '.join(command)}` failed ({detail[-1] if detail else f'exit {e.returncode}'}). "
            "Check that the SLURM controller is reachable (sinfo), or use hydra/launcher=basic."
        ) from e
    except subprocess.TimeoutExpired as e:
        raise TransferlabError(f"`{' '.join(command)}` did not answer in 60 s: is the SLURM controller up?") from e


def cluster_nodes() -> list[Node]:
    """Every (partition, node) pair ``sinfo`` shows."""
    nodes = []
    for line in _run(["sinfo", "--noheader", "--Node", "--format=%P|%c|%m"]).splitlines():
        partition, cpus, memory = line.strip().split("|")
        nodes.append(
            Node(partition.rstrip("*"), int(cpus.rstrip("+")), int(memory.rstrip("+")), partition.endswith("*"))
        )
    return nodes


def require_slurm_commands() -> None:
    """One line if ``sbatch`` (and so SLURM's client tools) is not on PATH."""
    if shutil.which("sbatch") is None:
        raise TransferlabError(
            "hydra/launcher=slurm needs SLURM's sbatch, which is not on PATH. Run the sweep on the cluster's login "
            "node (or load its slurm module), or use hydra/launcher=basic or hydra/launcher=parallel here."
        )


def check_request(params: dict) -> None:
    """One line for a partition ``sinfo`` does not show, or for CPUs or memory per node above every node's."""
    require_slurm_commands()
    nodes = cluster_nodes()
    partitions = sorted({n.partition for n in nodes})
    partition = params.get("partition")
    if partition is not None and partition not in partitions:
        raise TransferlabError(
            f"hydra.launcher.partition={partition}: no such partition on this cluster; sinfo shows "
            f"{', '.join(partitions) or 'none'}.{suggest(str(partition), partitions)}"
        )
    candidates = [n for n in nodes if n.partition == partition or (partition is None and n.default)]
    where = f"partition {partition}" if partition is not None else "the default partition"
    per_task, tasks = params.get("cpus_per_task") or 1, params.get("tasks_per_node") or 1
    if candidates and per_task * tasks > max(n.cpus for n in candidates):
        raise TransferlabError(
            f"hydra.launcher.cpus_per_task={per_task} x tasks_per_node={tasks} = {per_task * tasks} CPUs per node, "
            f"but the largest node of {where} has {max(n.cpus for n in candidates)}. Lower hydra.launcher.cpus_per_task."
        )
    memory_gb = params.get("mem_gb")
    largest_gb = max((n.memory_mb for n in candidates), default=0) / 1024
    if candidates and memory_gb is not None and memory_gb > largest_gb:
        raise TransferlabError(
            f"hydra.launcher.mem_gb={memory_gb}, but the largest node of {where} has {largest_gb:.1f} GB. "
            f"Lower hydra.launcher.mem_gb (at most {int(largest_gb)})."
        )


def jobs_still_queued(submitit_folder: Path) -> list[str]:
    """SLURM jobs of an earlier launch of this sweep (folders under ``.submitit/``) that are still pending or
    running: a re-run beside them would make two processes write the same job folder."""
    earlier = {p.name for p in submitit_folder.iterdir() if p.is_dir()} if submitit_folder.is_dir() else set()
    if not earlier:
        return []
    queued = _run(["squeue", "--me", "--noheader", "--array", "--format=%i"]).split()
    return sorted(job for job in queued if job in earlier or job.split("_")[0] in earlier)
