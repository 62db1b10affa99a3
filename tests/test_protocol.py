"""protocol=tuned: each arm tuned on validation over its own search space, the best trial selected, refit over seeds
on train+val and tested; tune jobs never test. One killed-and-resumed sweep (basic launcher, then the parallel one)
carries the end-to-end assertions."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import ROOT, TINY, compose_config, read_metrics, subprocess_env
from tests.test_sweep_resume import PAUSE_FILE, PAUSE_JOB
from transferlab.sweeps.protocol import Trial, read_score, same_point, select_best, write_selection

STRATEGIES = sorted(p.stem for p in (ROOT / "configs" / "strategy").glob("*.yaml"))


def _job(folder: Path, metrics: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


# --- selection ------------------------------------------------------------------------------------------------
def test_selection_is_the_argmax_of_validation_ties_to_the_first_trial_failures_skipped(tmp_path):
    scores = [0.70, 0.82, None, 0.82]  # trial 2 failed; trials 1 and 3 tie
    trials = []
    for number, score in enumerate(scores):
        metrics = {"status": "ok", "val/acc": score, "test/acc": 0.99 - number} if score is not None else {}
        folder = _job(tmp_path / str(number), metrics or {"status": "failed", "error": "boom"})
        trial = Trial("arm", number, number, {"strategy.lr": f"{10**-number:g}"})
        trial.score = read_score(folder, "val/acc")
        trials.append(trial)
    best = select_best(trials)
    assert best.number == 1  # the highest val/acc, the first of the tie; test/acc (best at trial 0) plays no part
    assert [t.chosen for t in trials] == [False, True, False, False]
    assert trials[2].score is None

    write_selection(tmp_path, trials)
    with open(tmp_path / "selection.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["arm", "trial", "strategy.lr", "score", "chosen", "preset", "job"]
    assert [r["chosen"] for r in rows] == ["false", "true", "false", "false"]
    assert rows[2]["score"] == ""  # the failed trial is recorded, scoreless


def test_an_arm_whose_trials_all_failed_selects_nothing(tmp_path):
    trials = [Trial("arm", 0, 0, {}), Trial("arm", 1, 1, {})]
    for t in trials:
        t.score = read_score(_job(tmp_path / str(t.job), {"status": "failed"}), "val/acc")
    assert select_best(trials) is None
    assert read_score(tmp_path / "missing", "val/acc") is None


def test_report_lists_a_failed_arm_and_ranks_nothing_from_tune_jobs(tmp_path):
    from transferlab.reporting.collect import collect_results
    from transferlab.reporting.protocol_summary import protocol_section, read_selection

    strategy = {"_target_": "transferlab.strategies.FineTuning", "name": "fine_tuning", "unfreeze": "all",
                "lr": 0.003, "search": {"lr": "choice(1e-3, 1e-2)"}}  # fmt: skip
    trials = []
    for job, (arm, lr, metrics) in enumerate([
        ("a", "0.001", {"status": "failed", "error": "boom"}),
        ("b", "0.001", {"status": "ok", "val/acc": 0.5, "time/fit_s": 2.0, "stage": "tune", "arm": "b"}),
        ("a", "0.01", {"status": "failed", "error": "boom"}),
        ("b", "0.01", {"status": "ok", "val/acc": 0.7, "time/fit_s": 3.0, "stage": "tune", "arm": "b"}),
    ]):  # fmt: skip
        folder = _job(tmp_path / str(job), metrics)
        (folder / ".hydra").mkdir()
        cfg = {"seed": 0, "strategy": {**strategy, "lr": float(lr)}, "protocol": {"stage": "tune", "arm": arm}}
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
        trials.append(Trial(arm, job // 2, job, {"strategy.lr": lr}, score=read_score(folder, "val/acc")))
    for arm in "ab":
        select_best([t for t in trials if t.arm == arm])
    write_selection(tmp_path, trials)

    results = collect_results(tmp_path)
    assert list(results["stage"]) == ["tune"] * 4  # failed jobs too, from their configs
    section = protocol_section(tmp_path, results, read_selection(tmp_path))
    line_a, line_b = (next(ln for ln in section.splitlines() if ln.startswith(f"| {arm} |")) for arm in "ab")
    assert "**failed**" in line_a and "lr=0.001: failed; lr=0.01: failed" in line_a
    assert "| lr=0.01 | 0.7000 |" in line_b and line_b.endswith("| 5 |")  # chosen, its score, summed fit time


def test_a_choice_at_the_edge_of_its_grid_is_flagged_and_a_tpe_space_never():
    import pandas as pd

    from transferlab.reporting.protocol_summary import grid_edges

    trials = pd.DataFrame({"strategy.lr": ["1e-4", "3e-4", "1e-3"], "strategy.r": ["", "", ""]})
    grid = {"lr": "choice(1e-4, 3e-4, 1e-3)"}
    top, inside, bottom = (trials.iloc[i] for i in (2, 1, 0))
    keys = ["strategy.lr", "strategy.r"]
    assert grid_edges(trials, top, keys, grid) == ["lr: top of the grid"]
    assert grid_edges(trials, bottom, keys, grid) == ["lr: bottom of the grid"]
    assert grid_edges(trials, inside, keys, grid) == []
    assert grid_edges(trials, top, keys, {"lr": "tag(log, interval(1e-4, 1e-2))"}) == []  # TPE: bounds untried
    assert grid_edges(trials.iloc[1:], top, keys, grid) == []  # two points have no inside


def test_preset_point_compares_numbers_as_numbers():
    assert same_point({"strategy.lr": "3e-3"}, {"strategy.lr": "0.003"})
    assert not same_point({"strategy.lr": "1e-2"}, {"strategy.lr": "0.003"})


# --- configs --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_preset_searches_its_own_keys_and_its_grid_holds_the_preset(tmp_path, strategy):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose_config(tmp_path, [f"strategy={strategy}"])
    search = {k: v for k, v in cfg.strategy.search.items() if v is not None}
    assert search, strategy
    for key, text in search.items():
        assert key in cfg.strategy and key != "search", (strategy, key)
        values = list(OverridesParser.create().parse_override(f"strategy.{key}={text}").sweep_string_iterator())
        assert len(values) <= 3  # trials_per_arm=3 runs the whole grid at the CPU budget
        assert any(same_point({key: v}, {key: str(cfg.strategy[key])}) for v in values), (strategy, key)


@pytest.mark.parametrize("experiment", ["compare_peft_methods", "compare_strategies", "strategy_vs_data_size"])
def test_tuned_protocol_keeps_the_experiments_arms(tmp_path, experiment):
    cfg = compose_config(tmp_path, [f"experiment={experiment}", "protocol=tuned"])
    assert cfg.hydra.sweeper._target_.endswith("ProtocolSweeper")
    assert cfg.hydra.sweeper.params  # the experiment's sweep still defines the arms
    assert cfg.protocol.refit_on == "train+val" and list(cfg.protocol.refit_seeds) == [0, 1, 2]
    assert compose_config(tmp_path, []).protocol.name == "preset"


def test_train_val_refit_set_is_the_tune_stages_train_and_val_images():
    from transferlab.data import ImageDataModule

    def split(fit_on):
        dm = ImageDataModule("digits", train_size=300, val_size=50, image_size=32, seed=3, fit_on=fit_on)
        dm.setup()
        return set(dm.train_set.indices), set(dm.val_set.indices)

    train, val = split("train")
    refit, _ = split("train+val")
    assert not train & val and refit == train | val


# --- bad input ------------------------------------------------------------------------------------------------
def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = subprocess_env(TRANSFERLAB_LOG_DIR=str(tmp_path / "logs"), TRANSFERLAB_CACHE_DIR=str(tmp_path / "cache"))
    flags, overrides = [a for a in args if a == "-m"], [a for a in args if a != "-m"]  # ours after TINY's: they win
    cmd = [
        sys.executable,
        "-m",
        "transferlab.train",
        *flags,
        *TINY,
        *overrides,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["protocol=tuned"], "add -m"),
        (["-m", "protocol=tuned", "strategy=lora", "+strategy.search.rank='choice(4,8)'"],
         "arm 'default' searches strategy.rank, which strategy=lora does not have. Did you mean strategy.r?"),
        (["-m", "protocol=tuned", "seed=0,1"], "'protocol.refit_seeds=[0,1,2]'"),
        (["-m", "protocol=tuned", "hparams_search=lora_optuna"], "Drop hparams_search, or use protocol=preset"),
        # strategy_vs_data_size: an arm is a strategy x a training-set size, each tuned on its own
        (["-m", "experiment=strategy_vs_data_size", "protocol=tuned", "data.train_size=100,200",
          "++strategy.search.rank='choice(4,8)'"], "arm 'variant=fe data.train_size=100' searches strategy.rank"),
    ],
)  # fmt: skip
def test_bad_protocol_input_gets_one_line(tmp_path, args, says):
    proc = _cli(*args, tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], proc.stderr[-2000:]
    assert not list((tmp_path / "sweep").glob("[0-9]*"))  # stopped before any job


# --- end to end -----------------------------------------------------------------------------------------------
SWEEP = [
    "-m", *TINY, "protocol=tuned", "+variant=ft_all,lora_r8", "trainer.max_epochs=2", "trainer.threads=1",
    "protocol.trials_per_arm=2", "protocol.refit_seeds=[0,1]",
    "++strategy.search.lr='choice(1e-3,1e-2)'",  # lora: a grid of 2; fine-tuning: 3 x 2 points, so TPE
    "+callbacks.pause._target_=tests.test_sweep_resume.PauseForKill",
]  # fmt: skip
ARMS, TRIALS, SEEDS = 2, 2, 2  # jobs 0-3: tune, trial-major (job = trial * ARMS + arm); jobs 4-7: refit


@pytest.fixture(scope="module")
def tuned_sweep(tmp_path_factory):
    """The sweep killed (SIGTERM) in tune job 2, then resumed under hydra/launcher=parallel: (folder, first run's
    stderr, second run's log, the metrics.json bytes and mtimes of the tune jobs finished before the kill)."""
    tmp = tmp_path_factory.mktemp("tuned")
    sweep, paused = tmp / "sweep", tmp / "paused"
    base = subprocess_env(TRANSFERLAB_LOG_DIR=str(tmp / "logs"), TRANSFERLAB_CACHE_DIR=str(tmp / "cache"))
    cmd = [sys.executable, "-m", "transferlab.train", *SWEEP, f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=base | {PAUSE_JOB: "2", PAUSE_FILE: str(paused)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    from tests.test_sweep_resume import _wait_for

    _wait_for(paused, proc)
    proc.send_signal(signal.SIGTERM)
    _, killed_err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, killed_err[-3000:]
    before = {j: ((sweep / j / "metrics.json").read_bytes(), (sweep / j / "metrics.json").stat().st_mtime_ns)
              for j in ("0", "1")}  # fmt: skip
    rerun = subprocess.run([*cmd, "hydra/launcher=parallel"], cwd=ROOT, env=base, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return sweep, killed_err, rerun.stdout + rerun.stderr, before


def _config(job: Path) -> dict:
    return yaml.safe_load((job / ".hydra" / "config.yaml").read_text())


def _selection(sweep: Path) -> list[dict]:
    with open(sweep / "selection.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_kill_in_the_tune_stage_resumes_without_rerunning_finished_trials(tuned_sweep):
    sweep, killed_err, _, before = tuned_sweep
    # TPE proposed job 2's values again from the same scores, so the killed trial resumed instead of starting over
    assert "Job 2 resumes from" in (sweep / "2" / "train.log").read_text()
    lines = [ln for ln in killed_err.splitlines() if ln.startswith("interrupted:")]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and f"hydra.sweep.dir={sweep}" in lines[0]
    for job, (content, mtime) in before.items():  # finished before the kill: skipped, the very same file
        assert (sweep / job / "metrics.json").read_bytes() == content
        assert (sweep / job / "metrics.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_parallel_launcher_runs_both_stages_and_refits_the_best_trial(tuned_sweep):
    sweep, *_ = tuned_sweep
    rows = _selection(sweep)
    assert len(rows) == ARMS * TRIALS
    for arm in {r["arm"] for r in rows}:
        trials = [r for r in rows if r["arm"] == arm]
        scores = [read_metrics(sweep / r["job"])["val/acc"] for r in trials]  # the files, independently
        best = trials[int(np.argmax(scores))]
        assert [r["chosen"] for r in trials].count("true") == 1 and best["chosen"] == "true"
        keys = [k for k in best if k.startswith("strategy.") and best[k]]
        refits = [
            j for j in range(ARMS * TRIALS, ARMS * TRIALS + ARMS * SEEDS) if read_metrics(sweep / str(j))["arm"] == arm
        ]
        assert len(refits) == SEEDS
        for job in refits:  # the chosen values, on every refit seed, trained on train+val and tested
            cfg, metrics = _config(sweep / str(job)), read_metrics(sweep / str(job))
            for key in keys:
                assert same_point({key: str(cfg["strategy"][key.removeprefix("strategy.")])}, {key: best[key]})
            assert cfg["protocol"]["stage"] == "refit" and cfg["data"]["fit_on"] == "train+val"
            assert metrics["status"] == "ok" and "test/acc" in metrics and "val/acc" not in metrics
        assert sorted(_config(sweep / str(j))["seed"] for j in refits) == [0, 1]


@pytest.mark.slow
def test_no_tune_job_computes_a_test_metric(tuned_sweep):
    sweep, *_ = tuned_sweep
    for job in range(ARMS * TRIALS):
        metrics = read_metrics(sweep / str(job))
        assert metrics["status"] == "ok" and metrics["stage"] == "tune" and "val/acc" in metrics
        assert not [k for k in metrics if k.startswith("test/")], job
        assert not (sweep / str(job) / "predictions.npz").exists()
        assert _config(sweep / str(job))["test"] is False


@pytest.mark.slow
def test_report_ranks_refit_jobs_and_has_the_protocol_section(tuned_sweep):
    import pandas as pd

    sweep, *_ = tuned_sweep
    ranking = pd.read_csv(sweep / "ranking.csv")
    assert len(ranking) == ARMS and set(ranking["seeds"]) == {SEEDS}  # tune trials are not arms
    report = (sweep / "report.md").read_text()
    assert "## Protocol" in report and "tuning_curves.png" in report
    assert (sweep / "plots" / "tuning_curves.png").is_file()
    assert "Hyperparameters chosen on validation" in (sweep / "report.tex").read_text()
