"""Synchronised BatchNorm for DDP on CPU (gloo), as a Lightning ``LayerSync`` plugin.

``torch.nn.SyncBatchNorm`` (what ``Trainer(sync_batchnorm=True)`` uses) runs only on GPUs: its kernels
(``batch_norm_stats`` and friends) have no CPU implementation. Without synchronisation each process
normalises with the statistics of its own share of the batch, so a 2-process CPU run of fine-tuning
drifts from the single-process run it should reproduce. This plugin computes the statistics of the
whole global batch with one differentiable all-reduce per layer, which is all gloo needs.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes, differentiable: every process's output depends on every input, so the
    gradient of an input is the sum of the output gradients (torch.distributed.nn's version is deprecated)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sync_batch_norm(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm of ``x`` with mean and variance over every process's batch.

    Updates ``bn``'s running statistics as ``nn.BatchNorm`` would for the global batch.
    """
    dims = [0, *range(2, x.ndim)]
    channels = x.shape[1]
    shape = (1, channels) + (1,) * (x.ndim - 2)
    count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
    stats = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))  # one differentiable sum
    n = stats[-1]
    mean = stats[:channels] / n
    var = (stats[channels : 2 * channels] / n - mean * mean).clamp_min(0.0)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked += 1
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.lerp_(mean.detach(), momentum)
            bn.running_var.lerp_(var.detach() * n / max(n.item() - 1, 1.0), momentum)  # unbiased, as BatchNorm
    y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y


class _SyncedBatchNorm:
    """Mixin put in front of a BatchNorm class (timm's BatchNormAct2d included) while training under DDP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        y = sync_batch_norm(self, x)
        # timm's BatchNormAct2d applies dropout and its activation after the norm
        if hasattr(self, "act"):
            y = self.act(self.drop(y) if hasattr(self, "drop") else y)
        return y


@functools.cache
def _synced_class(cls: type) -> type:
    return type(f"Synced{cls.__name__}", (_SyncedBatchNorm, cls), {"_unsynced": cls})


class CPUSyncBatchNorm(LayerSync):
    """Swap every BatchNorm layer to the synchronised forward for the fit, and back afterwards.

    Only the class changes: parameters, buffers and so checkpoints stay exactly as they were.
    On GPUs use ``sync_batchnorm: true`` (``torch.nn.SyncBatchNorm``) instead.
    """

    def apply(self, model: nn.Module) -> nn.Module:
        """Make ``model``'s BatchNorm layers normalise over the global batch."""
        for module in model.modules():
            if isinstance(module, _BatchNorm) and not isinstance(module, _SyncedBatchNorm):
                module.__class__ = _synced_class(type(module))
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        """Give the BatchNorm layers their own classes back."""
        for module in model.modules():
            if isinstance(module, _SyncedBatchNorm):
                module.__class__ = module._unsynced
        return model
