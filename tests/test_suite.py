"""Benchmark suites: the VTAB-1k layout read exactly (800 / 200 / 1,000 and the test list), its bad input in one
line, the across-task statistics against scipy on a known table, and the suite report on a made-up suite sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats as sps

from tests.helpers import TINY, compose_config
from transferlab.build import build_datamodule
from transferlab.predictions import save_predictions
from transferlab.report import build_report
from transferlab.reporting.suite_stats import average_ranks, friedman, nemenyi_cd, pairwise_wilcoxon
from transferlab.utils.errors import TransferlabError


def _write_task(root: Path, name: str, n: dict[str, int], classes: int = 3) -> Path:
    """A task folder in the VTAB-1k layout: tiny PNGs and the four lists (train800val200 = train800 + val200)."""
    folder = root / name
    (folder / "img").mkdir(parents=True)
    lists = {}
    for split, count in n.items():
        lines = []
        for i in range(count):
            label = i % classes
            Image.fromarray(np.full((8, 8), 40 * label + i % 7, dtype=np.uint8)).save(folder / f"img/{split}{i}.png")
            lines.append(f"img/{split}{i}.png {label}")
        lists[split] = lines
    for split, filename in {"train": "train800.txt", "val": "val200.txt", "test": "test.txt"}.items():
        (folder / filename).write_text("\n".join(lists[split]) + "\n")
    (folder / "train800val200.txt").write_text("\n".join(lists["train"] + lists["val"]) + "\n")
    return folder


def _datamodule(tmp_path: Path, root: Path, *overrides: str):
    base = [o for o in TINY if not o.startswith(("data=", "data.train_size", "data.val_size"))]
    cfg = compose_config(tmp_path, [*base, "data=vtab1k", f"data.root={root}", *overrides])
    dm = build_datamodule(cfg)
    dm.setup()
    return dm


def test_the_layout_is_read_exactly_tune_and_final_splits(tmp_path):
    root = tmp_path / "suite"
    _write_task(root, "mytask", {"train": 24, "val": 6, "test": 9})
    tune = _datamodule(tmp_path, root, "data.task=mytask", "data.decode_cache_dir=null")  # files: checkable by name
    assert (len(tune.train_set), len(tune.val_set), len(tune.test_set)) == (24, 6, 9)
    assert tune.num_classes == 3 and tune.dataset_id == "vtab1k/mytask"
    assert tune.run_metrics()["data/group"] == "other"  # not one of the 19
    val_files = [Path(tune.train_set.dataset.files[i]).name for i in tune.val_set.indices]
    assert val_files == [f"val{i}.png" for i in range(6)]  # val200 is the fixed validation split, in list order
    final = _datamodule(tmp_path, root, "data.task=mytask", "data.fit_on=train+val")  # decoded once into the cache
    assert len(final.train_set) == 30 and len(final.test_set) == 9  # train800val200: the final protocol's 1,000


@pytest.mark.parametrize(
    ("setup", "overrides", "message"),
    [
        ("none", ["data.task=dtdd"], r"data.task=dtdd is not a task folder .* Did you mean: dtd\? The 19: cifar, "),
        ("none", ["data.task=dtd"], r"VTAB-1k task folder .*dtd does not exist\. Set data.root"),
        ("bad_label", ["data.task=dtd"], r"train800.txt line 2: label 47 is out of range for 47 classes \(0\.\.46\)"),
        ("no_image", ["data.task=mytask"], r"val200.txt line 1: image .*gone.png does not exist"),
        ("no_list", ["data.task=mytask"], r"VTAB-1k list .*test.txt is missing"),
        ("ok", ["data.task=mytask", "data.train_size=10"], r"data.train_size=10: vtab1k/mytask has a fixed train/val"),
    ],
)
def test_bad_suite_input_gets_one_line(tmp_path, setup, overrides, message):
    root = tmp_path / "suite"
    root.mkdir()
    if setup == "bad_label":
        folder = _write_task(root, "dtd", {"train": 3, "val": 1, "test": 1})
        (folder / "train800.txt").write_text("img/train0.png 0\nimg/train1.png 47\n")
    elif setup in ("no_image", "no_list", "ok"):
        folder = _write_task(root, "mytask", {"train": 6, "val": 3, "test": 3})
        if setup == "no_image":
            (folder / "val200.txt").write_text("img/gone.png 0\n")
        if setup == "no_list":
            (folder / "test.txt").unlink()
    with pytest.raises(TransferlabError, match=message) as info:
        _datamodule(tmp_path, root, *overrides)
    assert "\n" not in str(info.value)


def test_across_task_tests_match_scipy_on_a_known_table():
    # Demšar (2006), Table 6's shape: arms in columns, data sets in rows; here 6 tasks x 3 arms.
    scores = pd.DataFrame(
        {
            "a": [0.9, 0.8, 0.7, 0.85, 0.6, 0.75],
            "b": [0.85, 0.82, 0.65, 0.8, 0.55, 0.7],
            "c": [0.7, 0.6, 0.6, 0.7, 0.5, 0.6],
        }
    )
    f = friedman(scores)
    reference = sps.friedmanchisquare(scores.a, scores.b, scores.c)
    assert f["statistic"] == pytest.approx(reference.statistic) and f["p"] == pytest.approx(reference.pvalue)
    pairs = pairwise_wilcoxon(scores).set_index(["arm_a", "arm_b"])
    assert pairs.loc[("a", "c"), "p"] == pytest.approx(sps.wilcoxon(scores.a, scores.c).pvalue)
    raw = pairs["p"].to_numpy()
    order = np.argsort(raw)  # Holm by hand: k-th smallest times (m - k), running max, capped at 1
    expected = np.minimum(1, np.maximum.accumulate(raw[order] * np.arange(len(raw), 0, -1)))
    assert pairs["p_holm"].to_numpy()[order] == pytest.approx(expected)
    assert list(average_ranks(scores).index) == ["a", "b", "c"]
    assert nemenyi_cd(3, 8) == pytest.approx(1.1716, abs=1e-3)  # Demšar's q_0.05 = 2.343 for 3 classifiers


def _suite_job(sweep: Path, i: int, task: str, group: str, label: str, acc: float, seed: int) -> None:
    job = sweep / str(i)
    (job / ".hydra").mkdir(parents=True)
    config = {
        "seed": seed,
        "strategy": {"name": label},
        "data": {"task": task, "train_size": None},
        "model": {"name": "m"},
    }
    (job / ".hydra" / "config.yaml").write_text(json.dumps(config))
    (job / ".hydra" / "overrides.yaml").write_text(f"- data.task={task}\n- seed={seed}\n")
    target = np.arange(400) % 4
    wrong = np.random.default_rng(i).permutation(400)[: round((1 - acc) * 400)]
    pred = target.copy()
    pred[wrong] = (target[wrong] + 1) % 4
    metrics = {"status": "ok", "label": label, "family": "other", "test/acc": float((pred == target).mean()),
               "data/task": task, "data/group": group}  # fmt: skip
    (job / "metrics.json").write_text(json.dumps(metrics))
    save_predictions(job, {"pred": pred, "target": target, "prob": np.full(400, 0.9)}, test_set=task)


def test_suite_report_has_the_task_table_means_friedman_and_cd_diagram(tmp_path):
    sweep, i = tmp_path / "sweep", 0
    tasks = {"t1": "Natural", "t2": "Natural", "t3": "Structured", "t4": "Structured"}
    accs = {"lora": 0.9, "ft": 0.85, "fe": 0.7}
    for t, (task, group) in enumerate(tasks.items()):
        for label, acc in accs.items():
            for seed in (0, 1):
                _suite_job(sweep, i, task, group, label, acc - 0.02 * t + 0.01 * seed, seed)
                i += 1
    for label in ("lora", "ft"):  # a fifth task on which one arm failed: reported missing, left out of the tests
        _suite_job(sweep, i, "t5", "Natural", label, 0.8, 0)
        i += 1
    (sweep / str(i) / ".hydra").mkdir(parents=True)
    (sweep / str(i) / ".hydra" / "config.yaml").write_text(json.dumps({"seed": 0, "strategy": {"name": "fe"},
                                                                     "data": {"task": "t5"}}))  # fmt: skip
    (sweep / str(i) / "metrics.json").write_text(json.dumps({"status": "failed", "error": "out of memory"}))
    report = build_report(sweep).read_text()
    assert "## Suite: 5 tasks x 3 arms" in report and "| t5 | Natural | 80.0" in report
    assert "Missing (an arm failed or has not run): t5. The means and the tests below use the 4 complete" in report
    assert "| t1 | Natural |" in report and "**Natural mean**" in report and "**mean of group means**" in report
    assert "**Friedman test** over 4 tasks and 3 arms" in report and "not run here" in report
    assert (sweep / "plots" / "critical_difference.png").is_file()
    tex = (sweep / "report.tex").read_text()
    assert r"\label{tab:suite}" in tex and r"\multicolumn{2}{c}{Natural}" in tex
    ranking = pd.read_csv(sweep / "ranking.csv")
    assert set(ranking["task"]) == {*tasks, "t5"} and len(ranking) == 14  # arms ranked within each task
    assert ranking.groupby("task")["rank"].min().eq(1).all()
