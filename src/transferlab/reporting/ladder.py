"""The backbone ladder: does a backbone with a higher ImageNet top-1 transfer better, per strategy?

For a sweep over 2+ models whose ImageNet top-1 is published (``IMAGENET_TOP1``), plot transfer test
accuracy (mean over seeds) against ImageNet top-1, one line per strategy arm, and write a markdown
section with the model x strategy table, Pearson's r per arm and the source of every ImageNet number.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from matplotlib.figure import Figure

from transferlab.reporting.plots import _save, arm_colors

TIMM_CSV = "huggingface/pytorch-image-models `results/results-imagenet.csv` (commit 4e5207c7, 2025-10-30)"
TF_README = "tensorflow/tpu `models/official/efficientnet/lite/README.md` (FP32 accuracy)"


class Top1(NamedTuple):
    """A published ImageNet-1k top-1 (%) and where it comes from."""

    top1: float
    source: str  # repository, file and row
    release: float | None = None  # the architecture authors' own number, for comparison
    release_source: str | None = None


def _timm(arch: str, size: int, crop: float, top1: float, release: float) -> Top1:
    row = f"{TIMM_CSV}, row `{arch}.in1k` ({size} px, crop_pct {crop})"
    return Top1(top1, row, release, TF_README)


# timm's own evaluation (ImageNet-1k val, native size, its eval transform) of its port of the TF EfficientNet-Lite
# checkpoints; the TF release's numbers differ from it by at most 0.3 points.
IMAGENET_TOP1: dict[str, Top1] = {
    "tf_efficientnet_lite0": _timm("tf_efficientnet_lite0", 224, 0.875, 74.846, 75.1),
    "tf_efficientnet_lite1": _timm("tf_efficientnet_lite1", 240, 0.882, 76.674, 76.7),
    "tf_efficientnet_lite2": _timm("tf_efficientnet_lite2", 260, 0.890, 77.470, 77.6),
}

KORNBLITH = (
    "Kornblith, Shlens & Le, *Do Better ImageNet Models Transfer Better?* (CVPR 2019), found r = 0.99 with fixed "
    "features and r = 0.96 with fine-tuning, over 16 networks and 12 datasets"
)
_MARKERS = "osD^v<>pP*hX"


def _top1(model) -> Top1 | None:
    # metrics.json holds the timm name; accept a pretrained tag too (tf_efficientnet_lite0.in1k)
    return IMAGENET_TOP1.get(str(model).split(".")[0]) if isinstance(model, str) else None


def _ladder(df: pd.DataFrame) -> pd.DataFrame | None:
    """Mean/std test accuracy per (model, label) over seeds, or None when the sweep is no ladder."""
    if df is None or df.empty or not {"model", "label", "test/acc", "status"} <= set(df.columns):
        return None
    ok = df[(df["status"] == "ok") & df["model"].notna() & df["test/acc"].notna()]
    models = list(dict.fromkeys(ok["model"]))
    if len(models) < 2 or any(_top1(m) is None for m in models):
        return None
    if "strategy" not in ok:
        ok = ok.assign(strategy=None)
    if "strategy_label" in ok:  # collect_results adds the model to labels when models differ; group without it
        ok = ok.assign(label=ok["strategy_label"])
    grouped = ok.groupby(["model", "label"], sort=False)
    out = grouped["test/acc"].agg(acc="mean", std=lambda s: s.std(ddof=1) if len(s) > 1 else 0.0, seeds="size")
    out["strategy"] = grouped["strategy"].first()
    out["family"] = grouped["family"].first() if "family" in ok else None
    out = out.reset_index()
    out["imagenet_top1"] = out["model"].map(lambda m: _top1(m).top1)
    return out.sort_values(["imagenet_top1", "model"], kind="stable", ignore_index=True)


def _short(model: str) -> str:
    return model.removeprefix("tf_").replace("efficientnet_", "EfficientNet-").replace("-lite", "-Lite")


def write_ladder_plot(df: pd.DataFrame, folder: str | Path) -> Path | None:
    """Plot transfer test accuracy against ImageNet top-1 (one line per strategy arm) into ``folder``.

    Returns the PNG's path, or None unless the sweep has 2+ models that all have a published top-1.
    """
    ladder = _ladder(df)
    if ladder is None:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8.5, 5.2))
    ax = fig.subplots()
    colors = arm_colors(ladder)
    for i, (label, rows) in enumerate(ladder.groupby("label", sort=False)):
        ax.errorbar(rows["imagenet_top1"], rows["acc"], yerr=rows["std"] if (rows["seeds"] > 1).any() else None,
                    marker=_MARKERS[i % len(_MARKERS)], markersize=8, capsize=3, label=label,
                    color=colors[label])  # fmt: skip
    top1 = ladder.drop_duplicates("model")
    ticks = [f"{t:.1f}\n{_short(m)}" for m, t in zip(top1["model"], top1["imagenet_top1"], strict=True)]
    ax.set_xticks(top1["imagenet_top1"], ticks)
    ax.set_xlabel("ImageNet-1k top-1 (%, timm results-imagenet.csv)")
    spread = " ± std" if (ladder["seeds"] > 1).any() else ""
    ax.set_ylabel(f"transfer test accuracy (mean{spread} over seeds)")
    ax.set_title("Does a better ImageNet backbone transfer better?")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return _save(fig, folder / "acc_vs_imagenet_top1.png")


def pearson(x, y) -> tuple[float, float]:
    """Pearson's r and its two-sided p-value (scipy.stats.pearsonr); NaN when undefined (n < 2, a constant)."""
    from scipy.stats import pearsonr

    if len(x) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input warns and gives NaN, which the table shows
        res = pearsonr(x, y)
    return float(res.statistic), float(res.pvalue)


def critical_r(n: int, alpha: float = 0.05) -> float:
    """The smallest |r| that reaches two-sided p < alpha with n points (t-test on n - 2 degrees of freedom)."""
    from scipy.stats import t

    if n < 3:
        return math.nan
    tc = t.ppf(1 - alpha / 2, n - 2)
    return float(tc / math.sqrt(n - 2 + tc**2))


def _cell(row) -> str:
    return f"{row['acc']:.4f} ± {row['std']:.4f}" if row["seeds"] > 1 else f"{row['acc']:.4f}"


def _fmt(v: float, spec: str) -> str:
    return "–" if math.isnan(v) else f"{v:{spec}}"


def ladder_section(df: pd.DataFrame) -> str:
    """The report's "Backbone ladder" markdown section, or "" unless the sweep has 2+ models with a published top-1."""
    ladder = _ladder(df)
    if ladder is None:
        return ""
    labels = list(dict.fromkeys(ladder["label"]))
    models = list(dict.fromkeys(ladder["model"]))
    seeds = sorted(set(ladder["seeds"]))
    lines = [
        "## Backbone ladder: transfer accuracy vs ImageNet top-1\n",
        "Test accuracy ("
        + ("mean ± std over seeds" if max(seeds) > 1 else "one seed")
        + ") per backbone and strategy arm. ImageNet-1k top-1 (%) is the published number at each model's native "
        "size, whatever `data.image_size` this sweep used.\n",
        "| model | ImageNet top-1 | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for model in models:
        rows = ladder[ladder["model"] == model].set_index("label")
        cells = [_cell(rows.loc[label]) if label in rows.index else "–" for label in labels]
        lines.append(f"| {model} | {_top1(model).top1:.2f} | " + " | ".join(cells) + " |")

    lines += ["", "Pearson correlation between ImageNet top-1 and transfer test accuracy (mean over seeds), per arm:\n",
              "| strategy | n models | Pearson r | p (two-sided) |", "|---|---|---|---|"]  # fmt: skip
    ns = []
    for label in labels:
        rows = ladder[ladder["label"] == label]
        r, p = pearson(rows["imagenet_top1"].to_numpy(float), rows["acc"].to_numpy(float))
        ns.append(len(rows))
        lines.append(f"| {label} | {len(rows)} | {_fmt(r, '+.3f')} | {_fmt(p, '.3f')} |")
    n = min(ns)
    lines.append("")
    if n < 3:
        lines.append(
            f"With {n} models r is ±1 by construction and says nothing; add models for a correlation. {KORNBLITH}.\n"
        )
    else:
        lines.append(
            f"How much {n} points can show: r has {n - 2} degree{'s' if n > 3 else ''} of freedom, so |r| must exceed "
            f"{critical_r(n):.3f} for p < 0.05, and moving one point can flip its sign. "
            + (
                "Three points can show whether an arm ranks the backbones in ImageNet order; they cannot measure "
                "how strongly transfer tracks ImageNet, and a rank is only real where the gaps exceed the "
                "seed-to-seed spread. "
                if n == 3
                else "A handful of points ranks the backbones; it does not pin down the strength of the trend. "
            )
            + f"For scale: {KORNBLITH}. Agreement here is consistent with that; disagreement with "
            f"{n} nearby backbones (ImageNet top-1 within "
            f"{ladder['imagenet_top1'].max() - ladder['imagenet_top1'].min():.1f} points) would not refute it.\n"
        )
    lines.append("ImageNet top-1 sources (the number used, then the architecture authors' own where known):\n")
    for model in models:
        t = _top1(model)
        extra = f"; release: {t.release:.1f}, {t.release_source}" if t.release is not None else ""
        lines.append(f"- {model}: {t.top1:.3f}, {t.source}{extra}")
    return "\n".join(lines) + "\n"
