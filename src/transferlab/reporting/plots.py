"""The report's plots (matplotlib, written atomically): accuracy against cost, and sweep-specific views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the OO API: no pyplot state, no backend switch for notebooks

from transferlab.reporting.collect import summarize
from transferlab.utils.io import atomic_write

_COLORS = {"feature_extraction": "tab:blue", "fine_tuning": "tab:orange", "lp_ft": "tab:red", "lora": "tab:green"}
_MARKERS = "osD^v<>pP*hX"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=130, format="png"))
    return path


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
    summary: pd.DataFrame, x: str, xlabel: str, title: str, path: Path, logx: bool, front: bool
) -> Path | None:
    if x not in summary or "test/acc" not in summary:
        return None
    data = summary.dropna(subset=[x, "test/acc"])
    if data.empty:
        return None
    fig = Figure(figsize=(8.5, 5.2))
    ax = fig.subplots()
    for i, (_, row) in enumerate(data.iterrows()):
        err = row.get("test/acc std", 0.0) if row["seeds"] > 1 else 0.0
        ax.errorbar(row[x], row["test/acc"], yerr=err, fmt=_MARKERS[i % len(_MARKERS)], markersize=9, capsize=3,
                    color=_COLORS.get(row["strategy"], "tab:gray"), label=row["label"])  # fmt: skip
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
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    # the legend sits outside the axes, so labels never overlap points or each other
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return _save(fig, path)


def _lora_heatmap(df: pd.DataFrame, path: Path) -> Path | None:
    lora = df[(df["status"] == "ok") & (df["strategy"] == "lora")].dropna(subset=["r", "alpha", "test/acc"])
    if lora["r"].nunique() < 2 or lora["alpha"].nunique() < 2:
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


def _train_size_plot(summary: pd.DataFrame, path: Path) -> Path | None:
    sizes = summary[summary["train_size"] != "all"]["train_size"]
    if summary["train_size"].nunique() < 2:
        return None
    full = int(max(sizes)) * 2 if len(sizes) else 1
    data = summary.assign(n=summary["train_size"].map(lambda s: full if s == "all" else int(s)))
    fig = Figure(figsize=(8.5, 5.2))
    ax = fig.subplots()
    for label, rows in data.groupby("label", sort=False):
        rows = rows.sort_values("n")
        err = rows.get("test/acc std", None)
        ax.errorbar(rows["n"], rows["test/acc"], yerr=err, marker="o", capsize=3, label=label,
                    color=_COLORS.get(rows["strategy"].iloc[0]))  # fmt: skip
    ax.set_xscale("log")
    ticks = sorted(data["n"].unique())
    ax.set_xticks(ticks, [("all" if t == full and "all" in set(summary["train_size"]) else f"{t:,}") for t in ticks])
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs training-set size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return _save(fig, path)


def write_plots(df: pd.DataFrame, folder: Path) -> list[Path]:
    """Write every plot the sweep supports into ``folder``; return their paths."""
    summary = summarize(df)
    if summary.empty:
        return []
    single_size = summary["train_size"].nunique() == 1
    made = []
    if single_size:
        made.append(_scatter(summary, "params/trainable", "trainable parameters (log scale)",
                             "Accuracy vs trainable parameters", folder / "acc_vs_params.png", logx=True, front=True))  # fmt: skip
        made.append(_scatter(summary, "time/fit_s", "fit time (s)", "Accuracy vs fit time", folder / "acc_vs_time.png",
                             logx=False, front=True))  # fmt: skip
        made.append(_scatter(summary, "memory/peak_mb", "peak memory (MB)", "Accuracy vs peak memory",
                             folder / "acc_vs_memory.png", logx=False, front=True))  # fmt: skip
    made.append(_lora_heatmap(df, folder / "lora_heatmap.png"))
    made.append(_train_size_plot(summary, folder / "acc_vs_train_size.png"))
    return [p for p in made if p is not None]
