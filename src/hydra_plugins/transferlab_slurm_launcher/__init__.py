"""transferlab's Hydra launcher plugin: SLURM sweeps (submitit) that survive preemption, requeues and cancelled jobs.

Hydra only instantiates launchers that live under the ``hydra_plugins`` namespace package, hence this folder.
"""
