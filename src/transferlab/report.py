"""The comparison report of a sweep: results.csv, ranking.csv, report.md, report.tex and plots/, rebuilt from each
job's metrics.json and predictions.npz.

Runs automatically at the end of every multirun (a Hydra callback), and by hand on any sweep dir,
finished or partial: ``python -m transferlab.report logs/multiruns/<sweep>``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def build_report(sweep_dir: str | Path) -> Path:
    """Write results.csv, ranking.csv, report.md, report.tex and plots/ for ``sweep_dir``; return the report path."""
    from transferlab.reporting.collect import collect_results
    from transferlab.reporting.comparison import compare_sweep
    from transferlab.reporting.ladder import ladder_section, write_ladder_plot
    from transferlab.reporting.latex import write_latex_tables
    from transferlab.reporting.markdown import write_markdown
    from transferlab.reporting.optuna_summary import optuna_section
    from transferlab.reporting.plots import write_plots, write_tuning_curves
    from transferlab.reporting.protocol_summary import chosen_values, protocol_section, read_selection, tuned_keys
    from transferlab.utils.io import atomic_write

    sweep_dir = Path(sweep_dir)
    results = collect_results(sweep_dir)
    atomic_write(sweep_dir / "results.csv", lambda p: results.to_csv(p, index=False))
    # protocol=tuned: the comparison is over the refit jobs; tune trials (no test pass) only feed the Protocol section
    compared = results[results["stage"].ne("tune")] if "stage" in results else results
    selection = read_selection(sweep_dir)
    chosen = chosen_values(selection) if selection is not None else {}
    table = compare_sweep(compared, sweep_dir)
    if not table.empty:
        atomic_write(sweep_dir / "ranking.csv", lambda p: table.to_csv(p, index=False))
        shown = dict(zip(compared.get("arm", []), compared["label"], strict=False))  # the table's name for each arm
        note = "Hyperparameters chosen on validation: " + "; ".join(
            f"{shown.get(a, a)}: {v}" for a, v in chosen.items()
        )
        note += "."
        write_latex_tables(table, sweep_dir / "report.tex", note=note if chosen else "")
    plots = write_plots(compared, table, sweep_dir / "plots")
    ladder_plot = write_ladder_plot(compared, sweep_dir / "plots")
    plots += [ladder_plot] if ladder_plot else []
    extra = ladder_section(compared) if ladder_plot else ""
    if selection is not None:
        extra += protocol_section(sweep_dir, results, selection)
        curves = write_tuning_curves(selection, tuned_keys(selection), sweep_dir / "plots" / "tuning_curves.png")
        plots += [curves] if curves else []
    extra += optuna_section(sweep_dir)  # '' unless the sweep ran an Optuna study
    report = write_markdown(results, sweep_dir / "report.md", plots, title=sweep_dir.name, table=table, extra=extra)
    log.info("Report: %s (%d jobs)", report, len(results))
    return report


class ReportCallback(Callback):
    """Hydra callback: build the report when a multirun ends (failures included), then log it to W&B if in use."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from transferlab.sweeps.job import exit_if_interrupted

        sweep_dir = Path(config.hydra.sweep.dir)
        self._report(config, sweep_dir)
        exit_if_interrupted(sweep_dir)  # a SIGTERM after the last job started still ends the process non-zero

    @staticmethod
    def _report(config: DictConfig, sweep_dir: Path) -> None:
        try:
            report = build_report(sweep_dir)
        except Exception as e:  # noqa: BLE001 - the sweep's own results are already safe on disk
            log.error(
                "Could not build the report for %s: %s. Rebuild it with `python -m transferlab.report %s`.",
                sweep_dir,
                e,
                sweep_dir,
            )
            return
        if "wandb" in (config.get("logger") or {}):
            from transferlab.reporting.wandb_summary import log_report_to_wandb

            log_report_to_wandb(config, sweep_dir, report)


def main(argv: list[str] | None = None) -> None:
    """``python -m transferlab.report SWEEP_DIR``: rebuild the report of a (possibly partial) sweep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from transferlab.utils.console import print_error
    from transferlab.utils.errors import TransferlabError

    try:
        print(build_report(args.sweep_dir))
    except TransferlabError as e:
        print_error(str(e))
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
