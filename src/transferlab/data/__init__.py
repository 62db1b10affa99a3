"""Data: real dataset sources, seeded stratified splits and batch-wise preprocessing."""

from transferlab.data.datamodule import ImageDataModule
from transferlab.data.registry import SOURCES

__all__ = ["ImageDataModule", "SOURCES"]
