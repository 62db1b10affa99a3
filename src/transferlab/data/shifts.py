"""Shifted test sets: corruptions of the official test split, made once, offline and deterministically.

``data.test_shifts`` names them: ``gaussian_noise`` (the default severity, 3), ``gaussian_noise@5``, or a mapping
``{gaussian_noise: 5}``. Each image is corrupted on the CPU with a ``torch.Generator`` seeded from
``data.test_shift_seed``, the shift's name and its severity, so every machine builds the very same shifted set, and
every job of a sweep is scored on the same images (a fixed benchmark, as MNIST-C is), whatever its training seed.

Definitions and severities (1 to 5) follow the common-corruptions suite of Hendrycks & Dietterich, "Benchmarking
Neural Network Robustness to Common Corruptions and Perturbations" (ICLR 2019), with the parameter tables of its
small-image variant CIFAR-10-C (``make_cifar_c.py``), which Fashion-MNIST-C (Weiss & Tonella, ISSTA 2022) also
builds on. ``rotate``, ``translate`` and ``invert`` come from MNIST-C's list (Mu & Gilmer 2019), which uses one
fixed level each; their five-level ladders here are ours, in the same spirit (level 3 about MNIST-C's strength).
Transforms come from ``torchvision.transforms.v2.functional`` where it has them; the random noises are written
here because torchvision's ``gaussian_noise`` takes no generator (so it cannot be made deterministic).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from transferlab.utils.errors import TransferlabError, suggest

DEFAULT_SEVERITY = 3  # ImageNet-C's middle level; shifts with fewer levels use their highest


def _noise_gaussian(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    return _from_unit(_unit(x) + c * torch.randn(x.shape, generator=g))


def _noise_shot(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    return _from_unit(torch.poisson(_unit(x) * c, generator=g) / c)


def _noise_impulse(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    # salt-and-pepper as skimage's random_noise(mode="s&p", amount=c): a share c of the pixels, half white, half black
    hit = torch.rand(x.shape, generator=g) < c
    salt = torch.rand(x.shape, generator=g) < 0.5
    return torch.where(hit, torch.where(salt, 255, 0).to(torch.uint8), x)


def _gaussian_blur(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    radius = _blur_radius(sigma)
    return TF.gaussian_blur(x, [2 * radius + 1] * 2, [sigma, sigma])


def _blur_radius(sigma: float) -> int:
    return math.ceil(4 * sigma)  # skimage.filters.gaussian's truncate=4, which the suite used


def _contrast(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    return TF.adjust_contrast(x, c)  # (x - mean) * c + mean, the suite's definition


def _brightness(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    # The suite adds c to the HSV value channel; torchvision's adjust_brightness multiplies instead. Adding to V with
    # hue and saturation kept scales a pixel's channels by (V + c) / V; a black pixel (no hue) becomes gray c.
    u = _unit(x)
    value = u.amax(dim=1, keepdim=True)
    brighter = (value + c).clamp(max=1.0)
    return _from_unit(torch.where(value > 0, u * brighter / value.clamp(min=1e-12), brighter))


def _jpeg(x: torch.Tensor, quality: float, g: torch.Generator) -> torch.Tensor:
    return TF.jpeg(x, int(quality))


def _pixelate(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = TF.resize(x, [max(1, int(h * c)), max(1, int(w * c))], interpolation=InterpolationMode.BILINEAR)
    return TF.resize(small, [h, w], interpolation=InterpolationMode.NEAREST)


def _rotate(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    clockwise = torch.rand(len(x), generator=g) < 0.5  # each image turns one way or the other
    out = TF.rotate(x, degrees, interpolation=InterpolationMode.BILINEAR)
    out[clockwise] = TF.rotate(x[clockwise], -degrees, interpolation=InterpolationMode.BILINEAR)
    return out


def _translate(x: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    signs = torch.randint(0, 2, (len(x), 2), generator=g) * 2 - 1  # one of the four diagonal directions per image
    out = torch.empty_like(x)
    for sx, sy in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        rows = (signs[:, 0] == sx) & (signs[:, 1] == sy)
        shift = [sx * round(fraction * w), sy * round(fraction * h)]
        out[rows] = TF.affine(x[rows], angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0])
    return out


def _invert(x: torch.Tensor, level: float, g: torch.Generator) -> torch.Tensor:
    return TF.invert(x)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0


def _from_unit(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


@dataclass(frozen=True)
class Corruption:
    """One corruption: ``apply(images, level, generator)`` and its parameter at each severity (1-based)."""

    apply: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]
    levels: tuple[float, ...]


# Parameter per severity 1..5: CIFAR-10-C's tables (make_cifar_c.py) for the suite's corruptions.
CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": Corruption(_noise_gaussian, (0.04, 0.06, 0.08, 0.09, 0.10)),  # std in [0, 1] units
    "shot_noise": Corruption(_noise_shot, (500, 250, 100, 75, 50)),  # Poisson photons at full white
    "impulse_noise": Corruption(_noise_impulse, (0.01, 0.02, 0.03, 0.05, 0.07)),  # share of pixels hit
    "gaussian_blur": Corruption(_gaussian_blur, (0.4, 0.6, 0.7, 0.8, 1.0)),  # sigma in pixels
    "contrast": Corruption(_contrast, (0.75, 0.5, 0.4, 0.3, 0.15)),  # contrast factor
    "brightness": Corruption(_brightness, (0.05, 0.1, 0.15, 0.2, 0.3)),  # added to the HSV value
    "jpeg": Corruption(_jpeg, (80, 65, 58, 50, 40)),  # JPEG quality
    "pixelate": Corruption(_pixelate, (0.95, 0.9, 0.85, 0.75, 0.65)),  # down-sampling factor
    "rotate": Corruption(_rotate, (10, 20, 30, 45, 60)),  # degrees, either way (MNIST-C's corruption, our levels)
    "translate": Corruption(_translate, (0.05, 0.1, 0.15, 0.2, 0.25)),  # share of the side, diagonally
    "invert": Corruption(_invert, (1,)),  # one level
}


@dataclass(frozen=True)
class Shift:
    """A corruption at a severity. ``label`` names it in metrics and files: the name alone at the default severity,
    ``name@severity`` otherwise."""

    name: str
    severity: int

    @property
    def label(self) -> str:
        """``gaussian_noise`` or ``gaussian_noise@5``."""
        return self.name if self.severity == default_severity(self.name) else f"{self.name}@{self.severity}"

    def apply(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """The corrupted copy of uint8 ``images`` (N, C, H, W): the same for the same seed, on any machine."""
        corruption = CORRUPTIONS[self.name]
        if self.name == "gaussian_blur" and _blur_radius(corruption.levels[self.severity - 1]) >= min(
            images.shape[-2:]
        ):
            raise TransferlabError(
                f"data.test_shifts: gaussian_blur@{self.severity} needs images larger than "
                f"{_blur_radius(corruption.levels[self.severity - 1])} px; these are {tuple(images.shape[-2:])}. "
                "Pick a lower severity or another shift."
            )
        # zlib.crc32, not hash(): Python salts str hashes per process, and the draw must not change between runs
        generator = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + zlib.crc32(self.label.encode()))
        return corruption.apply(images.cpu(), corruption.levels[self.severity - 1], generator).contiguous()


def default_severity(name: str) -> int:
    """The severity a bare name means: 3, or the highest a shift with fewer levels has."""
    return min(DEFAULT_SEVERITY, len(CORRUPTIONS[name].levels))


def _one_shift(name, severity=None) -> Shift:
    name = str(name).strip()
    if name not in CORRUPTIONS:
        raise TransferlabError(
            f"data.test_shifts: unknown shift '{name}'.{suggest(name, CORRUPTIONS)} Known: {', '.join(CORRUPTIONS)}."
        )
    top = len(CORRUPTIONS[name].levels)
    if severity is None:
        return Shift(name, default_severity(name))
    if isinstance(severity, bool) or not str(severity).strip().isdigit() or not 1 <= int(severity) <= top:
        raise TransferlabError(
            f"data.test_shifts: severity {severity} of {name} is out of range; use 1 to {top} (e.g. {name}@{top})."
        )
    return Shift(name, int(severity))


def parse_shifts(spec: Iterable | Mapping | str | None) -> list[Shift]:
    """The shifts ``data.test_shifts`` names: a list of ``name`` / ``name@severity`` strings, or a mapping
    ``{name: severity}``; None or empty means none. One line (``TransferlabError``) for a bad name or severity."""
    if not spec:
        return []
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, Mapping):
        shifts = [_one_shift(name, severity) for name, severity in spec.items()]
    else:
        shifts = []
        for item in spec:
            if isinstance(item, Mapping):
                shifts += [_one_shift(name, severity) for name, severity in item.items()]
            else:
                name, _, severity = str(item).partition("@")
                shifts.append(_one_shift(name, severity or None))
    labels = [s.label for s in shifts]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise TransferlabError(f"data.test_shifts names {', '.join(repeated)} twice. List each shift once.")
    return shifts
