"""Batch-wise preprocessing: uint8 images in, normalised float images at the model's size out.

Working on whole batches (on the accelerator when there is one) instead of per-sample PIL
transforms keeps data loading far ahead of training. Augmentation is deliberately light: a
horizontal flip and a mild random crop, drawn per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BatchTransform(nn.Module):
    """Resize, (optionally) augment and normalise a uint8 batch (B, C, H, W)."""

    def __init__(
        self,
        image_size: int,
        mean,
        std,
        interpolation: str = "bilinear",
        min_crop_scale: float = 0.8,
        flip: bool = True,
    ):
        super().__init__()
        self.image_size = int(image_size)
        self.interpolation = interpolation
        self.min_crop_scale = min_crop_scale
        self.flip = flip
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(
        self,
        images: torch.Tensor,
        augment: bool = False,
        seed: int | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> torch.Tensor:
        """Return float images of shape (B, 3, image_size, image_size), normalised with the model's mean and std.

        ``shard=(rank, world_size)``: this batch holds every ``world_size``-th sample of a global batch,
        starting at ``rank`` (how a distributed sampler deals them out). The augmentation is drawn for
        the global batch and sliced, so each sample gets the draw a single process would give it.
        """
        x = images.float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale to the 3 channels pretrained weights expect
        if augment:
            generator = torch.Generator(device=x.device).manual_seed(seed) if seed is not None else None
            x = self._random_crop_flip(x, generator, shard)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode=self.interpolation, antialias=True, align_corners=False
            )
            if self.interpolation == "bicubic":
                x = x.clamp_(0.0, 1.0)  # bicubic overshoots at edges
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x - mean) / std

    def _random_crop_flip(
        self, x: torch.Tensor, generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1)
    ) -> torch.Tensor:
        # One affine grid per sample: a random-resized crop and a flip in a single vectorised resample.
        b, dev = x.shape[0], x.device
        rank, world = shard
        n = b * world
        scale = torch.empty(n, device=dev).uniform_(self.min_crop_scale, 1.0, generator=generator).sqrt()
        shift = (1 - scale) * torch.empty(n, device=dev).uniform_(-1, 1, generator=generator)
        shift_y = (1 - scale) * torch.empty(n, device=dev).uniform_(-1, 1, generator=generator)
        flips = torch.rand(n, device=dev, generator=generator) < 0.5
        scale, shift, shift_y, flips = (t[rank::world] for t in (scale, shift, shift_y, flips))
        sign = torch.where(flips, -1.0, 1.0) if self.flip else torch.ones(b, device=dev)
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = scale * sign
        theta[:, 0, 2] = shift
        theta[:, 1, 1] = scale
        theta[:, 1, 2] = shift_y
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
