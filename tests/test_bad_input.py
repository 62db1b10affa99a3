"""Bad input gets one clear line naming the problem and the fix; nothing already written is damaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from tests.helpers import TINY, compose_config
from transferlab.train import train
from transferlab.utils.errors import TransferlabError

ROOT = Path(__file__).resolve().parents[1]


def _write_truncated(path: Path) -> Path:
    from transferlab.models.backbone import build_network

    torch.save(build_network("test_efficientnet", num_classes=3).net.state_dict(), path)
    path.write_bytes(path.read_bytes()[:3000])
    return path


def _write_other_arch(path: Path) -> Path:
    from transferlab.models.backbone import build_network

    torch.save(build_network("test_resnet", num_classes=3).net.state_dict(), path)
    return path


def _write_garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a checkpoint at all " * 40)
    return path


def _mkdirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _images(tmp: Path, classes: int, per_class: int = 4, bad: bool = False) -> Path:
    from PIL import Image

    root = tmp / "imgs"
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (c * 60, i * 30, 0)).save(root / f"c{c}" / f"{i}.png")
    if bad:
        (root / "c0" / "notes.txt").write_text("not an image")
    return root


def _ckpt(tmp: Path, *overrides: str) -> Path:
    cfg = compose_config(tmp / "source", [*TINY, "data.train_size=60", *overrides])
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


# (id, overrides or a function of tmp_path returning overrides, expected message fragment)
CASES = [
    ("unknown_timm_model", ["model.name=test_efficientnt"], "Did you mean: test_efficientnet"),
    ("weights_missing", lambda t: [f"model.weights={t / 'nope.pth'}"], "does not exist"),
    ("weights_truncated", lambda t: [f"model.weights={_write_truncated(t / 'w.pth')}"], "corrupt or truncated"),
    ("weights_wrong_arch", lambda t: [f"model.weights={_write_other_arch(t / 'r.pth')}"], "does not match test_efficientnet"),
    ("bundled_for_other_model", ["model.weights=bundled"], "No bundled weights for 'test_efficientnet'"),
    ("lora_r_zero", ["strategy=lora", "strategy.r=0"], "strategy.r=0 must be a positive integer"),
    ("lora_alpha_negative", ["strategy=lora", "strategy.alpha=-1"], "strategy.alpha=-1"),
    ("lora_dropout_one", ["strategy=lora", "strategy.dropout=1.0"], r"lora_dropout=1.0 must be in \[0, 1\) \(strategy.dropout"),
    ("lora_targets_nothing", ["strategy=lora", "strategy.target_modules=[nope]"], "matches no module. Candidates"),
    ("lora_depthwise_target", ["strategy=lora", "strategy.target_modules=[conv_dw]"], "Lora rejected its settings: Targeting a Conv2d with groups="),
    ("n_blocks_too_large", ["strategy=fine_tuning", "strategy.unfreeze=last_n_blocks", "strategy.n_blocks=99"], "strategy.n_blocks=99 but"),
    ("unfreeze_pattern_matches_nothing", ["strategy=fine_tuning", "strategy.unfreeze=[nothing]"], "match no parameter"),
    ("lr_zero", ["strategy.lr=0"], "strategy.lr=0 must be positive"),
    ("backbone_lr_negative", ["strategy=fine_tuning", "strategy.backbone_lr=-0.1"], "must be positive"),
    ("train_size_too_large", ["data.train_size=5000"], "larger than the"),
    ("train_size_below_classes", ["data.train_size=5"], "smaller than the number of classes"),
    ("class_count_mismatch", ["data.num_classes=7"], "data.num_classes=7 but digits has 10 classes"),
    ("imagefolder_missing", lambda t: ["data=imagefolder", f"data.root={t / 'none'}", "data.num_workers=0"], "does not exist"),
    ("imagefolder_empty", lambda t: ["data=imagefolder", f"data.root={(t / 'empty').mkdir() or t / 'empty'}", "data.num_workers=0"], "no class subfolders|only one class|holds no"),
    ("imagefolder_one_class", lambda t: ["data=imagefolder", f"data.root={_images(t, 1)}", "data.num_workers=0"], "only one class"),
    ("imagefolder_non_image", lambda t: ["data=imagefolder", f"data.root={_images(t, 2, bad=True)}", "data.num_workers=0"], "on_bad_image=skip"),
    ("bad_on_bad_image_value", lambda t: ["data=imagefolder", f"data.root={_images(t, 2)}", "data.on_bad_image=ignore"], "Use 'skip' or 'error'"),
    ("ckpt_missing", lambda t: [f"ckpt_path={t / 'missing.ckpt'}"], "does not exist"),
    ("resume_dir_without_checkpoint", lambda t: [f"resume={t}"], "no checkpoints/last.ckpt"),
    ("ckpt_other_strategy", lambda t: ["strategy=fine_tuning", f"ckpt_path={_ckpt(t, 'strategy=lora')}"], "written by Lora but this run uses FineTuning"),
    ("max_epochs_negative", ["trainer.max_epochs=-1"], "trainer.max_epochs=-1 must be a positive integer"),
    ("max_epochs_zero", ["trainer.max_epochs=0"], "trainer.max_epochs=0 must be a positive integer"),
    ("val_every_zero", ["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0 must be a positive"),
    ("threads_zero", ["trainer.threads=0"], "trainer.threads=0 must be a positive integer or null"),
    ("added_key_no_strategy_reads", ["strategy=lora", "+strategy.rank=8"], r"strategy.rank is not a key of strategy=lora; nothing would read it. Did you mean strategy.r\?"),
    ("ckpt_truncated", lambda t: [f"ckpt_path={_write_truncated(t / 'cut.ckpt')}"], "corrupt or truncated"),
    ("ckpt_garbage", lambda t: [f"ckpt_path={_write_garbage(t / 'junk.ckpt')}"], "is corrupt"),
    ("ckpt_foreign", lambda t: [f"ckpt_path={_write_other_arch(t / 'foreign.ckpt')}"], "not a transferlab checkpoint"),
    ("resume_corrupt_last", lambda t: [f"resume={_write_garbage(t / 'old' / 'checkpoints' / 'last.ckpt').parents[1]}"], "is corrupt"),
    ("resume_truncated_last", lambda t: [f"resume={_write_truncated(_mkdirs(t / 'old2' / 'checkpoints') / 'last.ckpt').parents[1]}"], "corrupt or truncated"),
    ("seed_out_of_range", ["seed=12345678901"], "seed=12345678901 must be an integer from 0 to 4000000, or null"),
    ("image_size_zero", ["data.image_size=0"], r"data.image_size=0 must be a positive integer. Try data.image_size=64 or null"),
    ("image_size_not_int", ["data.image_size=1.5"], "data.image_size=1.5 must be a positive integer"),
    ("vit_patch_remainder", ["model.name=vit_tiny_patch16_224", "model.family=vit", "data.image_size=30"], "not a multiple of the model's patch size 16: .* drop the last 14 pixel rows and columns. Use data.image_size=16 or 32"),
    ("limit_val_fraction_keeps_no_batch", ["trainer.limit_val_batches=0.25"], r"trainer.limit_val_batches=0.25 keeps no batch: the val split has 1 batch \(50 images, data.eval_batch_size=256\).*Set trainer.limit_val_batches=1"),
    ("limit_train_fraction_keeps_no_batch", ["data.train_size=20", "trainer.limit_train_batches=0.25"], r"trainer.limit_train_batches=0.25 keeps no batch: the train split has 1 batch \(20 images"),
    ("ckpt_other_model", lambda t: ["strategy=fine_tuning", "model.name=test_resnet", f"ckpt_path={_ckpt(t, 'strategy=fine_tuning')}"], "does not fit this model"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "overrides", "match"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(tmp_path, case, overrides, match):
    extra = overrides(tmp_path) if callable(overrides) else overrides
    cfg = compose_config(tmp_path / "run", [*TINY, *extra])
    with pytest.raises(TransferlabError, match=match) as info:
        train.__wrapped__(cfg)  # the task without its wrapper, to see the exception itself
    assert "\n" not in str(info.value)  # one line


@pytest.mark.parametrize("override", ["strategy=fine_tunning", "model=efficientnet_lite9", "data=fashion_mnistt"])
def test_unknown_group_option_lists_the_options(tmp_path, override):
    with pytest.raises(ConfigCompositionException, match="Could not find"):
        compose_config(tmp_path, [override])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["strategy=lora", "strategy.rank=8"], "error: strategy.rank is not a key of strategy=lora. Did you mean strategy.r?"),
        (["trainer.max_epoch=3"], "error: trainer.max_epoch is not a key of trainer=default. Did you mean trainer.max_epochs?"),
        (["data.trainsize=60"], "error: data.trainsize is not a key of data=fashion_mnist. Did you mean data.train_size?"),
    ],
)  # fmt: skip
def test_unknown_key_suggests_the_closest(tmp_path, overrides, message):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(tmp_path, overrides)
    assert str(info.value) == message


def test_cli_unknown_key_is_one_line(tmp_path):
    env = {**os.environ, "TRANSFERLAB_LOG_DIR": str(tmp_path)}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "transferlab.train", "strategy=lora", "strategy.rank=8"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: strategy.rank is not a key of strategy=lora. Did you mean strategy.r?"], proc.stderr
    assert "Traceback" not in proc.stderr and "+strategy.rank" not in proc.stderr


def test_entry_point_composes_the_config_before_importing_torch():
    """Config mistakes are reported in a second: ``transferlab.train`` imports torch, Lightning, timm and PEFT
    (about 10 s on 2 cores) only once Hydra has composed the config and the run starts."""
    heavy = ("torch", "lightning", "timm", "peft", "wandb")
    code = f"import sys, transferlab.train; print([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_cli_prints_one_line_and_exits_nonzero(tmp_path):
    env = {**os.environ, "TRANSFERLAB_LOG_DIR": str(tmp_path)}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "transferlab.train", *TINY, "strategy=lora", "strategy.r=0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: strategy.r=0 must be a positive integer (the LoRA rank). Try strategy.r=8."], proc.stderr
    assert "Traceback" not in proc.stderr


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from transferlab.strategies.base import TransferModule

    cfg = compose_config(tmp_path, [*TINY, "strategy=fine_tuning", "trainer.max_epochs=3"])
    real = TransferModule.forward

    def poisoned(self, x):
        out = real(self, x)
        return out * float("nan") if self.current_epoch == 1 else out

    monkeypatch.setattr(TransferModule, "forward", poisoned)
    with pytest.raises(TransferlabError, match="loss became nan.*last good checkpoint"):
        train.__wrapped__(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 0 and all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )


def test_read_only_output_dir_fails_clearly_and_keeps_old_files(tmp_path, monkeypatch):
    import errno

    from transferlab.utils import io

    out = tmp_path / "ro"
    io.atomic_write_json(out / "metrics.json", {"test/acc": 0.9})
    out.chmod(0o500)
    if os.access(out, os.W_OK):  # root ignores permission bits: simulate the read-only file system instead
        monkeypatch.setattr(
            io.tempfile, "mkstemp", lambda **kw: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system"))
        )
    try:
        with pytest.raises(TransferlabError, match="Could not write|Read-only"):
            io.atomic_write_json(out / "metrics.json", {"test/acc": 0.1})
    finally:
        out.chmod(0o700)
    assert json.loads((out / "metrics.json").read_text()) == {"test/acc": 0.9}


def test_disk_full_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno

    from transferlab.utils import io

    target = tmp_path / "metrics.json"
    io.atomic_write_json(target, {"old": 1})

    def full(_path):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(TransferlabError, match="No space left on device.*previous file is untouched"):
        io.atomic_write(target, full)
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_unwritable_output_root_names_the_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from transferlab.utils.io import atomic_write_text

    with pytest.raises(TransferlabError, match="Cannot create output folder"):
        atomic_write_text(blocker / "sub" / "a.txt", "x")


def test_atomic_folder_swap_keeps_old_until_new_is_complete_and_uses_usual_modes(tmp_path):
    from transferlab.utils import io

    target = tmp_path / "adapter"
    io.atomic_write_dir(target, lambda d: (d / "w.bin").write_bytes(b"old"))

    def crash(d):
        (d / "w.bin").write_bytes(b"half")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write_dir(target, crash)
    assert (target / "w.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temp folder left behind
    io.atomic_write_dir(target, lambda d: (d / "w.bin").write_bytes(b"new"))
    assert (target / "w.bin").read_bytes() == b"new"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's private 0700
    assert (target / "w.bin").stat().st_mode & 0o777 == 0o666 & ~mask


def test_seed_null_draws_a_seed_and_records_it(tmp_path, caplog):
    # lightning-hydra-template allows seed=null; every ${seed} (splits, augmentation, epoch seeds) must get the drawn one
    cfg = compose_config(tmp_path / "run", [*TINY, "data.train_size=60", "seed=null"])
    with caplog.at_level("INFO", logger="transferlab.train"):
        train.__wrapped__(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    info = json.loads((Path(cfg.paths.output_dir) / "run_info.json").read_text())
    assert isinstance(metrics["seed"], int) and metrics["seed"] == info["seed"] == cfg.seed
    assert f"seed=null: drew seed {metrics['seed']}" in caplog.text


def test_peft_changing_a_setting_says_so_and_records_the_value_used(tmp_path, caplog):
    # OFT's block size must divide each layer's width; PEFT silently picks a nearby divisor per layer
    cfg = compose_config(tmp_path / "run", [*TINY, "data.train_size=60", "strategy=oft", "strategy.block_size=7"])
    with caplog.at_level("WARNING", logger="transferlab.strategies.adapters"):
        train.__wrapped__(cfg)
    lines = [r.getMessage() for r in caplog.records if "did not use the settings asked for" in r.getMessage()]
    assert len(lines) == 1 and "oft_block_size=7 became" in lines[0] and "peft/used/oft_block_size" in lines[0]
    used = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["peft/used/oft_block_size"]
    assert used and "7" not in used.split(",")
