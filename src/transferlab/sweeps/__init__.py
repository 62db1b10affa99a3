"""Sweeps that survive a kill: skip finished jobs, resume interrupted ones, and stop cleanly on SIGTERM/SIGINT."""

from transferlab.sweeps.job import resumable

__all__ = ["resumable"]
