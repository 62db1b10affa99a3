"""Strategies: one LightningModule per kind of transfer learning, sharing the loop in ``base``.

Presets (configs/strategy/*.yaml) pick one of these and its settings: BitFit and norm tuning are
``FineTuning`` presets, LoRA, DoRA, LoHa, IA3 and the rest are ``PEFT`` presets.
"""

from transferlab.strategies.adapters import PEFT
from transferlab.strategies.base import TransferModule
from transferlab.strategies.feature_extraction import FeatureExtraction
from transferlab.strategies.fine_tuning import FineTuning
from transferlab.strategies.lora import LoRA

__all__ = ["TransferModule", "FeatureExtraction", "FineTuning", "PEFT", "LoRA"]
