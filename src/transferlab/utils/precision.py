"""Which precision a frozen forward pass runs in: ``auto``, ``32`` or ``bf16``.

Used for feature extraction's cache fill (``strategy.extract_precision``, default ``auto``) and, on request,
for validation and test passes (``strategy.eval_precision``, default ``32``).

``auto`` picks bf16 where the device has native bf16 arithmetic, decided by a capability check
rather than a timed probe: the check is instant, deterministic and testable, and native bf16 is exactly
what oneDNN (CPU) and cuDNN (GPU) dispatch their fast bf16 kernels on. Without it, bf16 is emulated
and slower than fp32. ``benchmarks/speed_options`` measures both passes and flags an ``auto`` that
picks the slower one.
"""

from __future__ import annotations

import contextlib

import torch

from transferlab.utils.errors import TransferlabError

CHOICES = ("auto", "32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: CUDA with bf16 units (Ampere+), or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        # torch's own CPU feature probes (also used by inductor); absent in older torch builds.
        probes = (
            getattr(torch.cpu, "_is_avx512_bf16_supported", None),
            getattr(torch.cpu, "_is_amx_tile_supported", None),
        )
        return any(probe() for probe in probes if probe is not None)
    return False


def check_choice(setting, key: str = "strategy.extract_precision") -> str:
    """``setting`` as one of ``CHOICES`` (YAML turns ``32`` into an int), or a one-line error naming ``key``."""
    value = str(setting)
    if value not in CHOICES:
        raise TransferlabError(f"{key}={setting!r} is unknown. Use auto, 32 or bf16.")
    return value


def resolve(setting, device: torch.device) -> str:
    """The precision a frozen pass on ``device`` runs in for ``setting``: ``"32"`` or ``"bf16"``."""
    value = check_choice(setting)
    if value == "auto":
        return "bf16" if native_bf16(device) else "32"
    return value


def autocast(precision: str, device: torch.device):
    """The context a frozen pass runs under: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
