"""Reading transferlab checkpoints safely and rebuilding the run that wrote them."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.build import build_run, constructor_keys
from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import refused_code


def _load(path: Path) -> dict:
    """``torch.load`` memory-mapped: checking a checkpoint that Lightning then loads again costs no second read of
    its tensors (they are paged in only when used). Files from before torch's zip format cannot be mapped."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "zipfile" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True`` (no pickled code runs), or fail with a clear message."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TransferlabError(f"ckpt_path={path} does not exist. Point it at a .ckpt in a run's checkpoints/ folder.")
    try:
        checkpoint = _load(path)
    except pickle.UnpicklingError as e:
        if not refused_code(e):  # garbage bytes, not a pickle that names a class to run
            raise TransferlabError(
                f"Checkpoint {path} is corrupt or not a checkpoint (unreadable pickle). Use another one, e.g. last.ckpt."
            ) from e
        raise TransferlabError(
            f"{path} needs arbitrary code to unpickle, which transferlab refuses. Use a checkpoint transferlab wrote."
        ) from e
    except Exception as e:
        raise TransferlabError(
            f"Checkpoint {path} is corrupt or truncated ({type(e).__name__}). Use another checkpoint, e.g. last.ckpt."
        ) from e
    if (
        not isinstance(checkpoint, dict)
        or "transferlab" not in checkpoint
        or not checkpoint["transferlab"].get("config")
    ):
        raise TransferlabError(
            f"{path} is not a transferlab checkpoint (no run config inside). Use one written by transferlab.train."
        )
    return checkpoint


def _declare_old_knobs(cfg: DictConfig) -> None:
    """A PEFT preset's config stored before presets declared their knobs (r, alpha, ... flat beside the strategy's
    arguments, already resolved into its peft_config): the keys its constructor does not take were its knobs."""
    strategy = cfg.get("strategy")
    if strategy is None or "knobs" in strategy or "peft_config" not in strategy:
        return
    from hydra.utils import get_class

    taken = constructor_keys(get_class(strategy._target_)) | {"_target_", "name", "search"}
    with open_dict(strategy):
        strategy.knobs = [str(k) for k in strategy if k not in taken]


def run_config(checkpoint: dict, data_root: str | None = None, output_dir: str | None = None) -> DictConfig:
    """The training run's resolved config, optionally pointed at new data and output folders."""
    cfg = OmegaConf.create(checkpoint["transferlab"]["config"])
    _declare_old_knobs(cfg)
    with open_dict(cfg):
        if data_root:
            cfg.data.root = data_root
        if output_dir:
            cfg.paths.output_dir = output_dir
    return cfg


def rebuild(checkpoint: dict, cfg: DictConfig, load_weights: bool = True):
    """Rebuild (module, datamodule) as trained; with ``load_weights`` the checkpoint's tensors are loaded too."""
    run = build_run(cfg, trainer=False)
    if load_weights:
        run.module.on_load_checkpoint(checkpoint)
        run.module.load_state_dict(checkpoint["state_dict"], strict=False)  # completeness checked just above
    return run.module, run.datamodule
