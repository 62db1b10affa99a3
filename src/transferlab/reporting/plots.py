"""The report's plots (matplotlib, written atomically): accuracy against cost, and sweep-specific views.

Error bars are the 95% intervals of the report's table (t over seeds, or bootstrap over test examples).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure  # the OO API: no pyplot state, no backend switch for notebooks

from transferlab.utils.io import atomic_write

# One hue per strategy family (``TransferModule.report_family``); the arms of a family get its shades.
_FAMILY_COLORMAPS = {"frozen": "Blues", "fine-tuning": "Oranges", "selective": "Purples", "adapters": "Greens"}
_MARKERS = "osD^v<>pP*hX"


def arm_colors(rows: pd.DataFrame) -> dict[str, tuple]:
    """A colour per arm ``label``: the hue of its ``family`` (grey for unknown ones), a darker shade per arm."""
    colors = {}
    family = rows["family"] if "family" in rows else pd.Series("other", index=rows.index)
    for name, labels in rows.assign(family=family.fillna("other")).groupby("family", sort=False)["label"]:
        cmap = colormaps[_FAMILY_COLORMAPS.get(name, "Greys")]
        distinct = list(dict.fromkeys(labels))
        shades = np.linspace(0.9, 0.5, len(distinct)) if len(distinct) > 1 else [0.75]  # light ends are invisible
        colors.update({label: cmap(float(shade)) for label, shade in zip(distinct, shades, strict=True)})
    return colors


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=130, format="png"))
    return path


def _yerr(rows: pd.DataFrame) -> np.ndarray | None:
    """Asymmetric error bars (2, n) from the interval columns; zero where an arm has no interval."""
    if "low" not in rows:
        return None
    low = (rows["test/acc"] - rows["low"]).fillna(0.0).clip(lower=0.0)
    high = (rows["high"] - rows["test/acc"]).fillna(0.0).clip(lower=0.0)
    return np.vstack([low.to_numpy(float), high.to_numpy(float)])


def pareto_front(cost: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats on both lower cost and higher accuracy, by increasing cost."""
    order = np.lexsort((-acc, cost))
    front, best = [], -np.inf
    for i in order:
        if acc[i] > best:
            front.append(i)
            best = acc[i]
    return np.array(front, dtype=int)


def _scatter(
    summary: pd.DataFrame, x: str, xlabel: str, title: str, path: Path, logx: bool, front: bool, note: str = ""
) -> Path | None:
    if x not in summary or "test/acc" not in summary:
        return None
    data = summary.dropna(subset=[x, "test/acc"])
    if data.empty:
        return None
    fig = Figure(figsize=(8.5, 5.2))
    ax = fig.subplots()
    warm = data.get("feature_cache", pd.Series(index=data.index, dtype=object)) == "warm"
    colors = arm_colors(data)
    for i, (idx, row) in enumerate(data.iterrows()):
        hollow = x == "time/fit_s" and warm[idx]  # its fit time leaves out the extraction a first run pays
        color = colors[row["label"]]
        ax.errorbar(row[x], row["test/acc"], yerr=_yerr(data.loc[[idx]]), fmt=_MARKERS[i % len(_MARKERS)],
                    markersize=9, capsize=3, color=color, markerfacecolor="white" if hollow else color,
                    label=row["label"] + (" (warm cache)" if hollow else ""))  # fmt: skip
    if front and len(data) > 1:
        idx = pareto_front(data[x].to_numpy(float), data["test/acc"].to_numpy(float))
        pts = data.iloc[idx]
        ax.step(
            pts[x],
            pts["test/acc"],
            where="post",
            color="black",
            linestyle="--",
            linewidth=1,
            alpha=0.6,
            label="Pareto front",
        )
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (95% interval)")
    ax.set_title(title)
    if note:
        ax.text(0.01, 0.01, note, transform=ax.transAxes, fontsize=8, color="dimgray", va="bottom")
    ax.grid(True, which="both", alpha=0.3)
    # the legend sits outside the axes, so labels never overlap points or each other
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return _save(fig, path)


def _lora_grid(df: pd.DataFrame) -> pd.DataFrame:
    """The LoRA jobs with a rank and alpha (DoRA and other adapter presets are their own strategies)."""
    return df[(df["status"] == "ok") & (df["strategy"] == "lora")].dropna(subset=["r", "alpha", "test/acc"])


def _lora_heatmap(df: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy over the rank x alpha grid, drawn only when some rank was run with two or more alphas
    (with alpha tied to r, e.g. alpha = 2r, a grid would be mostly empty cells: see ``_lora_rank_plot``)."""
    lora = _lora_grid(df)
    if lora["r"].nunique() < 2 or lora.groupby("r")["alpha"].nunique().max() < 2:
        return None
    grid = lora.pivot_table(index="alpha", columns="r", values="test/acc", aggfunc="mean").sort_index(ascending=False)
    fig = Figure(figsize=(1.1 * grid.shape[1] + 3, 0.7 * grid.shape[0] + 2.5))
    ax = fig.subplots()
    im = ax.imshow(grid.to_numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(int(c)) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{a:g}" for a in grid.index])
    ax.set_xlabel("rank r")
    ax.set_ylabel("alpha")
    ax.set_title("LoRA test accuracy by rank and alpha")
    values = grid.to_numpy()
    mid = np.nanmean(values)
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8, color="white" if v < mid else "black")
    fig.colorbar(im, ax=ax, label="test accuracy")
    return _save(fig, path)


def _lora_rank_plot(df: pd.DataFrame, summary: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy against rank with intervals, one line per alpha rule, when the ranks were not crossed with alphas."""
    lora = _lora_grid(df)
    if lora["r"].nunique() < 2 or lora.groupby("r")["alpha"].nunique().max() >= 2:
        return None
    if summary["train_size"].nunique() > 1 or summary["model"].nunique() > 1:
        return None  # one line per alpha rule assumes one data size and one backbone
    rows = summary[summary["strategy"] == "lora"].dropna(subset=["r"]).sort_values("r")
    ratio = (rows["alpha"] / rows["r"]).round(3)
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    for k, group in rows.groupby(ratio, sort=True):
        rule = f"alpha = {k:g}r" if k != 1 else "alpha = r"
        ax.errorbar(group["r"], group["test/acc"], yerr=_yerr(group), marker="o", capsize=3, label=rule)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(rows["r"].unique()), [str(int(r)) for r in sorted(rows["r"].unique())])
    ax.set_xlabel("LoRA rank r (log scale)")
    ax.set_ylabel("test accuracy (95% interval)")
    ax.set_title("LoRA test accuracy by rank")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9, frameon=False)
    return _save(fig, path)


def _train_size_plot(summary: pd.DataFrame, path: Path) -> Path | None:
    sizes = summary[summary["train_size"] != "all"]["train_size"]
    if summary["train_size"].nunique() < 2:
        return None
    full = int(max(sizes)) * 2 if len(sizes) else 1
    data = summary.assign(n=summary["train_size"].map(lambda s: full if s == "all" else int(s)))
    fig = Figure(figsize=(8.5, 5.2))
    ax = fig.subplots()
    colors = arm_colors(data)
    for label, rows in data.groupby("label", sort=False):
        rows = rows.sort_values("n")
        ax.errorbar(rows["n"], rows["test/acc"], yerr=_yerr(rows), marker="o", capsize=3, label=label,
                    color=colors[label])  # fmt: skip
    ax.set_xscale("log")
    ticks = sorted(data["n"].unique())
    ax.set_xticks(ticks, [("all" if t == full and "all" in set(summary["train_size"]) else f"{t:,}") for t in ticks])
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel("test accuracy (95% interval)")
    ax.set_title("Accuracy vs training-set size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return _save(fig, path)


def write_plots(df: pd.DataFrame, summary: pd.DataFrame, folder: Path) -> list[Path]:
    """Write every plot the sweep supports into ``folder``; return their paths.

    ``summary``: one row per arm with its interval (``reporting.comparison.compare_sweep``).
    """
    if summary.empty:
        return []
    single_size = summary["train_size"].nunique() == 1
    made = []
    if single_size:
        made.append(_scatter(summary, "params/trainable", "trainable parameters (log scale)",
                             "Accuracy vs trainable parameters", folder / "acc_vs_params.png", logx=True, front=True))  # fmt: skip
        warm = (summary.get("feature_cache") == "warm").any() if "feature_cache" in summary else False
        note = "hollow: warm feature cache, fit time without the one-off extraction" if warm else ""
        made.append(_scatter(summary, "time/fit_s", "fit time (s; feature extraction included when the cache was cold)",
                             "Accuracy vs fit time", folder / "acc_vs_time.png", logx=False, front=True, note=note))  # fmt: skip
        made.append(_scatter(summary, "memory/peak_mb", "peak memory (MB)", "Accuracy vs peak memory",
                             folder / "acc_vs_memory.png", logx=False, front=True))  # fmt: skip
    made.append(_lora_heatmap(df, folder / "lora_heatmap.png"))
    made.append(_lora_rank_plot(df, summary, folder / "lora_rank.png"))
    made.append(_train_size_plot(summary, folder / "acc_vs_train_size.png"))
    return [p for p in made if p is not None]


def write_tuning_curves(selection: pd.DataFrame, keys: list[str], path: Path) -> Path | None:
    """protocol=tuned: each arm's validation score against its main knob (its first tuned key; LR keys on a log
    axis), the chosen trial ringed. ``selection``: selection.csv as strings; ``keys``: its value columns."""
    lines = []
    for arm, trials in selection.groupby("arm", sort=False):
        knob = next((k for k in keys if (trials[k] != "").any()), None)
        if knob is None:
            continue
        rows = trials[(trials["score"] != "") & (trials[knob] != "")]
        x = pd.to_numeric(rows[knob], errors="coerce")
        if x.isna().any() or rows.empty:  # a categorical knob (alpha=2r) has no axis
            continue
        order = np.argsort(x.to_numpy(float), kind="stable")
        lines.append((arm, knob, x.to_numpy(float)[order], rows["score"].astype(float).to_numpy()[order],
                      rows["chosen"].eq("true").to_numpy()[order]))  # fmt: skip
    if not lines:
        return None
    fig = Figure(figsize=(8.5, 5.2))
    ax = fig.subplots()
    for i, (arm, knob, x, y, chosen) in enumerate(lines):
        line = ax.plot(x, y, marker=_MARKERS[i % len(_MARKERS)], label=f"{arm} ({knob.removeprefix('strategy.')})")[0]
        ax.scatter(x[chosen], y[chosen], s=160, facecolors="none", edgecolors=line.get_color(), linewidths=1.5)
    if all(knob.endswith("lr") for _, knob, *_ in lines):
        ax.set_xscale("log")
    ax.set_xlabel("each arm's main knob (log scale for learning rates)")
    ax.set_ylabel("validation score (final epoch)")
    ax.set_title("Tuning curves (ringed: the chosen trial)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return _save(fig, path)
