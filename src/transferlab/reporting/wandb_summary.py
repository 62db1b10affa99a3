"""Log a sweep's report to W&B: the per-job results and the ranking (intervals, p-values, tie group) as
``wandb.Table``s and the plots as images, in the same group as the sweep's jobs."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def log_report_to_wandb(config: DictConfig, sweep_dir: Path, report: Path) -> None:
    """One extra W&B run (job_type ``report``) holding the comparison; failures only warn."""
    try:
        import pandas as pd
        import wandb

        from transferlab.utils.tracking import sweep_group, wandb_settings

        wb = OmegaConf.to_container(config.logger.wandb, resolve=True)
        results = pd.read_csv(sweep_dir / "results.csv")
        run = wandb.init(project=wb.get("project"), entity=wb.get("entity"), group=sweep_group(config, sweep_dir),
                         job_type="report", name=f"report-{sweep_dir.name}", dir=wb.get("save_dir"),
                         **wandb_settings())  # fmt: skip
        run.log({"comparison": wandb.Table(dataframe=results.fillna(""))})
        if (sweep_dir / "ranking.csv").is_file():  # per arm: 95% interval, Holm-adjusted p vs the best, tie group
            ranking = pd.read_csv(sweep_dir / "ranking.csv")
            run.log({"ranking": wandb.Table(dataframe=ranking.astype(object).where(ranking.notna(), ""))})
        for png in sorted((sweep_dir / "plots").glob("*.png")):
            run.log({f"plots/{png.stem}": wandb.Image(str(png))})
        run.summary["report_md"] = report.read_text()
        run.finish()
    except Exception as e:  # noqa: BLE001 - the report is on disk either way
        log.warning("Could not log the report to W&B (%s); it is in %s.", e, sweep_dir)
