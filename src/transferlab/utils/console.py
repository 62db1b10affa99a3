"""Terminal output with rich: the config tree, and single-line errors."""

from __future__ import annotations

from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

from transferlab.utils.io import atomic_write_text

_FIRST = ("data", "model", "strategy", "trainer", "callbacks", "logger", "paths")


def print_config_tree(cfg: DictConfig, save_dir: str | Path | None = None) -> None:
    """Print the resolved config as a rich tree (main groups first) and save it as ``config_tree.log``."""
    tree = rich.tree.Tree("CONFIG", style="bold", guide_style="dim")
    keys = [k for k in _FIRST if k in cfg] + [k for k in cfg if k not in _FIRST]
    for key in keys:
        branch = tree.add(str(key), style="bold cyan")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    rich.print(tree)
    if save_dir is not None:
        console = rich.console.Console(record=True, width=120, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(tree)
        atomic_write_text(Path(save_dir) / "config_tree.log", console.export_text())


def print_error(message: str) -> None:
    """One red line on stderr."""
    rich.console.Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {message}", highlight=False, markup=True
    )
