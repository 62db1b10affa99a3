"""The report's Optuna section: the best trial, its value and parameters, read back from the sweep's study.

The sweeper (``hydra_plugins.transferlab_optuna_sweeper``) writes ``optuna_study.json`` into the sweep folder:
where the study is stored and its name. No such file: the sweep did not use Optuna, and there is no section.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from transferlab.utils.io import sqlite_path

STUDY_FILE = "optuna_study.json"  # {"storage": URL, "study_name": NAME, "metric": optimized_metric}
JOB_ATTR = "transferlab:job"  # trial system attribute: the sweep job (folder) that ran the trial
OWNER_ATTR = "transferlab:owner"  # trial system attribute: host:pid of the sweep process running it
TOP_TRIALS = 10  # rows of the trial table


def _value(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


def _params(params: dict) -> str:
    return ", ".join(f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`" for k, v in params.items())


def _job(trial) -> str:
    return str(trial.system_attrs.get(JOB_ATTR, "–"))


def load_sweep_study(sweep_dir: str | Path):
    """The Optuna study a sweep used, or None when the sweep did not record one (not an Optuna sweep)."""
    pointer = Path(sweep_dir) / STUDY_FILE
    if not pointer.is_file():
        return None
    import optuna

    info = json.loads(pointer.read_text())
    storage = str(info["storage"])
    db = sqlite_path(storage)
    if db is not None and not db.is_file():
        raise FileNotFoundError(f"the study database {storage} is gone")  # opening it would create an empty one
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=info["study_name"], storage=info["storage"])


def optuna_section(sweep_dir: str | Path) -> str:
    """Markdown for report.md: the study's trial counts, its best trial (number, job, value, parameters) and the
    top trials; '' when the sweep did not use Optuna; one line when the study cannot be read."""
    sweep_dir = Path(sweep_dir)
    try:
        study = load_sweep_study(sweep_dir)
    except Exception as e:  # noqa: BLE001 - the rest of the report must still be written
        return f"## Optuna study\n\n_Could not read the study recorded in `{STUDY_FILE}`: {type(e).__name__}: {e}_\n"
    if study is None:
        return ""
    from optuna.trial import TrialState

    info = json.loads((sweep_dir / STUDY_FILE).read_text())
    metric = info.get("metric") or "objective"
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)}
    directions = ", ".join(d.name.lower() for d in study.directions)
    lines = [
        "## Optuna study\n",
        f"Study `{study.study_name}` ({directions} `{metric}`), stored in `{info['storage']}`: {len(trials)} trials, "
        f"{counts[TrialState.COMPLETE]} complete (a failed job completes with the worst value), "
        f"{counts[TrialState.FAIL]} failed, {counts[TrialState.RUNNING]} unfinished. Re-running the same command "
        "into this sweep folder continues the study up to `hydra.sweeper.n_trials` completed trials.\n",
    ]
    done = [t for t in trials if t.state == TrialState.COMPLETE and all(math.isfinite(v) for v in t.values)]
    if not done:
        return "\n".join([*lines, "_No trial finished with a value yet._\n"])
    if len(study.directions) > 1:
        lines.append("**Pareto-optimal trials:**\n")
        lines += [
            f"- trial {t.number} (job {_job(t)}): values {t.values}, {_params(t.params)}" for t in study.best_trials
        ]
        return "\n".join(lines) + "\n"
    best = study.best_trial
    lines.append(f"**Best trial: {best.number}** (job {_job(best)}), `{metric}` = {_value(best.value)}, "
                 f"parameters: {_params(best.params)}\n")  # fmt: skip
    maximize = study.direction.name == "MAXIMIZE"
    ranked = sorted(done, key=lambda t: t.value, reverse=maximize)[:TOP_TRIALS]
    names = list(dict.fromkeys(k for t in ranked for k in t.params))
    lines.append("| trial | job | " + f"{metric} | " + " | ".join(names) + " |")
    lines.append("|" + "---|" * (3 + len(names)))
    for t in ranked:
        cells = [str(t.number), _job(t), _value(t.value)]
        cells += [
            f"{t.params[k]:.4g}" if isinstance(t.params.get(k), float) else str(t.params.get(k, "–")) for k in names
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
