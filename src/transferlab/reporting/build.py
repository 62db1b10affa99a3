"""Build a sweep's report from its job folders: results.csv, ranking.csv, report.md, report.tex and plots/.

Called at the end of every multirun (``sweeps/report_callback.py``), when a sweep is interrupted
(``sweeps/job.py``), and by ``python -m transferlab.report DIR``.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def build_report(sweep_dir: str | Path) -> Path:
    """Write results.csv, ranking.csv, report.md, report.tex and plots/ for ``sweep_dir``; return the report path."""
    from transferlab.reporting.collect import collect_results
    from transferlab.reporting.comparison import compare_sweep
    from transferlab.reporting.data_size import data_size_section
    from transferlab.reporting.ladder import ladder_section, write_ladder_plot
    from transferlab.reporting.latex import write_latex_tables
    from transferlab.reporting.markdown import write_markdown
    from transferlab.reporting.optuna_summary import optuna_section
    from transferlab.reporting.plots import write_plots, write_tuning_curves
    from transferlab.reporting.protocol_summary import chosen_values, protocol_section, read_selection, tuned_keys
    from transferlab.reporting.shift_summary import shift_section
    from transferlab.reporting.suite import is_suite, suite_section
    from transferlab.utils.io import atomic_write, atomic_write_text

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
    suite = is_suite(table)
    plots = [] if suite else write_plots(compared, table, sweep_dir / "plots")  # per-arm cost plots mix tasks
    ladder_plot = write_ladder_plot(compared, sweep_dir / "plots")
    plots += [ladder_plot] if ladder_plot else []
    extra = ladder_section(compared) if ladder_plot else ""
    extra += data_size_section(compared, sweep_dir)  # '' unless the sweep ran 2+ training-set sizes
    shifts, shift_plots = shift_section(compared, sweep_dir, sweep_dir / "plots")  # '' without data.test_shifts
    extra, plots = extra + shifts, plots + shift_plots
    if selection is not None:
        extra += protocol_section(sweep_dir, results, selection)
        curves = write_tuning_curves(selection, tuned_keys(selection), sweep_dir / "plots" / "tuning_curves.png")
        plots += [curves] if curves else []
    extra += optuna_section(sweep_dir)  # '' unless the sweep ran an Optuna study
    if suite:  # a sweep over a suite's tasks: the across-task statistics, and the papers' Table 1 as report.tex
        section, suite_plots, latex = suite_section(table, compared, sweep_dir / "plots")
        extra, plots = section + extra, plots + suite_plots
        tables = (sweep_dir / "report.tex").read_text() if (sweep_dir / "report.tex").is_file() else ""
        atomic_write_text(sweep_dir / "report.tex", latex + "\n" + tables)
    report = write_markdown(results, sweep_dir / "report.md", plots, title=sweep_dir.name, table=table, extra=extra)
    log.info("Report: %s (%d jobs)", report, len(results))
    return report
