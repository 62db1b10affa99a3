"""Compose a run's config in-process, as the command line would, with every output routed into one folder.

For the benchmarks, the notebook and the tests: they build runs through ``transferlab.build`` without a Hydra app.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from transferlab.config.setup import CONFIG_DIR, setup_environment


def compose_config(out_dir: Path, overrides: list[str] = (), config_name: str = "train") -> DictConfig:
    """Compose ``config_name`` with ``overrides``, route every output into ``out_dir`` and register it with Hydra."""
    setup_environment()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    out_dir = Path(out_dir)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir / "run")
        cfg.paths.log_dir = str(out_dir / "logs")
        cfg.paths.cache_dir = str(out_dir / "cache")
        cfg.hydra.runtime.output_dir = str(out_dir / "run")
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "0"
    HydraConfig().set_config(cfg)
    return cfg
