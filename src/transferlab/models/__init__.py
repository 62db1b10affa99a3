"""Models: the timm backbone factory, weight sources and per-family facts."""

from transferlab.models.backbone import build_network, classifier_name

__all__ = ["build_network", "classifier_name"]
