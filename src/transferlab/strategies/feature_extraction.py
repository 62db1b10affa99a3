"""Feature extraction: a frozen pretrained backbone (kept in eval mode) and a new head that alone trains."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch
from torch import nn

from transferlab.data.feature_cache import FeatureCacheDataModule, FeatureEncoder
from transferlab.models.backbone import BackboneFacts
from transferlab.strategies.base import TransferModule
from transferlab.utils import precision
from transferlab.utils.errors import TransferlabError


class Standardize(nn.Module):
    """Fixed per-feature standardisation, fitted once on the cached training features.

    Raw pooled features differ in scale by orders of magnitude, which slows a short linear probe;
    standardising them is the usual probe recipe (MAE uses a non-affine BatchNorm for the same end).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> None:
        """Set mean and std from training features (N, dim)."""
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def make_head(kind: str, in_features: int, num_classes: int, hidden: int = 512, dropout: float = 0.1) -> nn.Module:
    """A ``linear`` head or a small ``mlp`` (Linear-GELU-Dropout-Linear), behind a ``Standardize`` step."""
    if kind == "linear":
        return nn.Sequential(Standardize(in_features), nn.Linear(in_features, num_classes))
    if kind == "mlp":
        return nn.Sequential(
            Standardize(in_features),
            nn.Linear(in_features, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
    raise TransferlabError(f"strategy.head={kind!r} is unknown. Use linear or mlp.")


class FeatureExtraction(TransferModule):
    """Train only the head. With ``cache_features`` the backbone runs once per split, not once per epoch.

    The head standardises its input with statistics of the cached training features; without the
    cache it stays an identity there.
    """

    needs_pretrained_backbone = True  # the frozen features are all the head gets

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        facts: BackboneFacts | None = None,
        head: str = "linear",
        cache_features: bool = True,
        cache_dir: str = ".cache",
        extract_precision: str = "auto",
        **kwargs,
    ):
        facts = facts or BackboneFacts.of(net)
        net.set_submodule(facts.head_name, make_head(head, facts.feature_dim, num_classes))
        super().__init__(net, num_classes, facts=facts, **kwargs)
        self.cache_features = cache_features
        self.cache_dir = Path(cache_dir)
        self.extract_precision = precision.check_choice(extract_precision)  # resolved per device by the cache
        self.slim_checkpoints = True  # the head is all that trained
        self.strict_loading = False

    def setup_trainable(self) -> None:
        """Freeze everything but the head."""
        for name, p in self.net.named_parameters():
            p.requires_grad = self.is_head_param(name)

    def train(self, mode: bool = True):
        """The frozen backbone always stays in eval mode (BatchNorm stats and dropout untouched); the head follows ``mode``."""
        super().train(mode)
        self.net.eval()
        self.head.train(mode)
        return self

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (timm's pre-logits), the head's input."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net.forward_head(self.net.forward_features(images), pre_logits=True)

    def batch_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits from the batches the datamodule serves: cached features (B, D) with ``cache_features``, else images."""
        return self.head(inputs) if self.cache_features else self(inputs)

    def on_features_cached(self, train_features: torch.Tensor) -> None:
        """Fit the head's standardisation on the cached training features."""
        self.head[0].fit(train_features)

    @contextlib.contextmanager
    def _frozen_on(self, device: torch.device):
        """The network on ``device`` in eval mode for one extraction pass; its mode and device restored after."""
        was_training, old_device = self.net.training, next(self.net.parameters()).device
        self.net.eval().to(device)
        try:
            yield
        finally:
            self.net.train(was_training).to(old_device)

    def feature_encoder(self) -> FeatureEncoder:
        """What the feature cache needs from this module: the frozen pass, its precision and the weights' id."""
        return FeatureEncoder(self.encode, self._frozen_on, self.facts.weights_id, self.facts.architecture,
                              self.extract_precision)  # fmt: skip

    def wrap_datamodule(self, datamodule):
        """Serve cached features instead of images when ``cache_features`` is on."""
        if not self.cache_features:
            return datamodule
        return FeatureCacheDataModule(datamodule, self.feature_encoder(), self.cache_dir, self.on_features_cached)

    def plain_network(self) -> nn.Module:
        """The network with a plain ``nn.Linear`` head: the standardisation is folded into the linear layer.

        An ``mlp`` head stays as it is (its Standardize step is the only non-timm module then).
        """
        net = copy.deepcopy(self.net)
        head = net.get_submodule(self.head_name)
        if len(head) == 2 and isinstance(head[1], nn.Linear):
            std, mean, linear = head[0].std, head[0].mean, head[1]
            folded = nn.Linear(linear.in_features, linear.out_features)
            with torch.no_grad():  # W (x - m) / s + b  ==  (W / s) x + (b - (W / s) m)
                folded.weight.copy_(linear.weight / std)
                folded.bias.copy_(linear.bias - folded.weight @ mean)
            net.set_submodule(self.head_name, folded)
        return net

    @classmethod
    def report_family(cls, strategy_cfg: dict) -> str:
        """Frozen-backbone arms share one hue in plots."""
        return "frozen"
