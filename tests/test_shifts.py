"""Shifted test sets (data.test_shifts): each corruption changes the images, the same way for the same seed;
bad names and severities get one line; a run scores every shift with the best checkpoint and pairs its
per-example predictions with the clean ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, TINY, read_metrics, subprocess_env
from transferlab.data.datamodule import ImageDataModule
from transferlab.data.shifts import CORRUPTIONS, Shift, parse_shifts
from transferlab.predictions import load_predictions
from transferlab.utils.errors import TransferlabError

RANDOM_SHIFTS = {"gaussian_noise", "shot_noise", "impulse_noise", "rotate", "translate"}  # draw per image


def _images(channels: int) -> torch.Tensor:
    """Images with structure (a bright square on a mid-gray ground) and some texture, as uint8 (N, C, 16, 16)."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((8, channels, 16, 16), 90.0) + torch.randint(-30, 30, (8, channels, 16, 16), generator=g)
    x[..., 4:12, 3:9] = 220
    return x.clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_shift_changes_the_images_and_is_deterministic_per_seed(name, channels):
    images = _images(channels)
    shift = parse_shifts([name])[0]
    shifted = shift.apply(images, seed=0)
    assert shifted.dtype == torch.uint8 and shifted.shape == images.shape
    assert not torch.equal(shifted, images)
    assert torch.equal(shifted, shift.apply(images.clone(), seed=0))  # same seed, same images
    if name in RANDOM_SHIFTS:
        assert not torch.equal(shifted, shift.apply(images, seed=1))


def test_higher_severity_moves_the_images_further():
    images = _images(1)
    gaps = [(Shift("gaussian_noise", s).apply(images, 0).float() - images.float()).abs().mean() for s in (1, 5)]
    assert gaps[0] < gaps[1]


def test_spec_forms_and_labels():
    shifts = parse_shifts(["gaussian_noise", "contrast@5", {"jpeg": 1}])
    assert [(s.name, s.severity, s.label) for s in shifts] == [
        ("gaussian_noise", 3, "gaussian_noise"),
        ("contrast", 5, "contrast@5"),
        ("jpeg", 1, "jpeg@1"),
    ]
    assert parse_shifts({"invert": 1})[0].label == "invert"  # one level: its default
    assert parse_shifts(None) == [] and parse_shifts([]) == []


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (["gausian_noise"], r"unknown shift 'gausian_noise'\. Did you mean: gaussian_noise.*Known: gaussian_noise, "),
        (["contrast@6"], r"severity 6 of contrast is out of range; use 1 to 5"),
        (["invert@2"], r"severity 2 of invert is out of range; use 1 to 1"),
        ([{"jpeg": 0}], r"severity 0 of jpeg is out of range"),
        (["contrast", "contrast@3"], r"names contrast twice"),
    ],
)
def test_bad_shift_spec_is_one_line(spec, match):
    with pytest.raises(TransferlabError, match=match) as info:
        parse_shifts(spec)
    assert "\n" not in str(info.value)


def test_shift_on_images_it_cannot_take_is_one_line(image_folder, tmp_path):
    dm = ImageDataModule("imagefolder", root=str(image_folder), image_size=16, test_shifts=["contrast"])
    with pytest.raises(TransferlabError, match="needs the test images in memory as uint8") as info:
        dm.setup()
    assert "\n" not in str(info.value)
    decoded = ImageDataModule("imagefolder", root=str(image_folder), image_size=16, test_shifts=["contrast"],
                              decode_cache_dir=str(tmp_path / "decoded"))  # fmt: skip
    decoded.use_test_shift(decoded.test_shifts[0])  # decoded once into memory: shifts work
    assert not torch.equal(decoded.test_set.images, decoded._clean_test.images)
    tiny = torch.zeros(2, 1, 3, 3, dtype=torch.uint8)
    with pytest.raises(TransferlabError, match="gaussian_blur@5 needs images larger than 4 px"):
        Shift("gaussian_blur", 5).apply(tiny, 0)


def test_datamodule_serves_the_shifted_split_and_back():
    dm = ImageDataModule("digits", image_size=16, test_shifts=["invert"])
    dm.setup()
    clean = dm.test_set.images.clone()
    dm.use_test_shift(dm.test_shifts[0])
    assert torch.equal(dm.test_set.images, 255 - clean) and dm.test_shift_id == "invert:seed=0"
    assert torch.equal(dm.test_set.targets, dm._clean_test.targets)  # same examples, same order: pairable
    dm.use_test_shift(None)
    assert torch.equal(dm.test_set.images, clean) and dm.test_shift_id is None


def test_tune_jobs_compute_no_shift(tiny_cfg):
    from transferlab.train import train

    cfg = tiny_cfg("strategy=fine_tuning", "test=false", "data.test_shifts=[contrast]")
    train(cfg)
    metrics = read_metrics(cfg)
    assert "val/acc" in metrics and not [k for k in metrics if k.startswith("test")]
    assert not list(Path(cfg.paths.output_dir).glob("predictions*"))


@pytest.mark.slow  # a CLI run: ~35 s on 2 cores
def test_cli_run_scores_each_shift_and_pairs_its_predictions(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "transferlab.train", *TINY, "trainer.threads=1", f"paths.output_dir={out}",
           f"paths.cache_dir={tmp_path / 'cache'}", "data.test_shifts=[gaussian_noise,contrast@5]"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_metrics(out)
    accs = [metrics["test_shift/gaussian_noise/acc"], metrics["test_shift/contrast@5/acc"]]
    assert metrics["test_shift/mean_acc"] == pytest.approx(np.mean(accs))
    clean = load_predictions(out)
    for label, acc in zip(["gaussian_noise", "contrast@5"], accs, strict=True):
        shifted = load_predictions(out, shift=label)
        assert np.array_equal(shifted["target"], clean["target"])  # example i is the same image, corrupted
        assert (shifted["pred"] == shifted["target"]).mean() == pytest.approx(acc, abs=1e-6)
        assert shifted["test_set"] == f"digits:{label}"
    # The feature cache keys the shifted test set apart from the clean one: contrast@5 is not the clean set's score.
    assert not np.array_equal(load_predictions(out, shift="contrast@5")["pred"], clean["pred"])
    assert json.loads((out / "metrics.json").read_text())["test/acc"] == metrics["test/acc"]
