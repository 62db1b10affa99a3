"""transferlab: compare feature extraction, fine-tuning and LoRA on pretrained vision models."""

__version__ = "0.1.0"
