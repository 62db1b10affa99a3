"""One batch shape per pass: pad a short last batch up to the pass's batch size, so kernels chosen for one
shape (cuDNN's autotuner, oneDNN's primitives, compiled graphs) serve every batch."""

from __future__ import annotations

import torch


def padded_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` with zero rows appended up to ``rows`` along the batch dimension (``x`` itself if it has enough).

    Only for passes whose rows do not interact (eval mode: BatchNorm uses its running statistics); the caller
    drops the padded rows' outputs with ``[: len(x)]``.
    """
    missing = rows - len(x)
    if missing <= 0:
        return x
    return torch.cat([x, x.new_zeros((missing, *x.shape[1:]))])
