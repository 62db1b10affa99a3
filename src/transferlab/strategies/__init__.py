"""Strategies: one LightningModule per transfer-learning technique, sharing the loop in ``base``."""

from transferlab.strategies.base import TransferModule
from transferlab.strategies.feature_extraction import FeatureExtraction
from transferlab.strategies.fine_tuning import FineTuning
from transferlab.strategies.lora import LoRA

__all__ = ["TransferModule", "FeatureExtraction", "FineTuning", "LoRA"]
