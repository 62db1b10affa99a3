"""Training details the end-to-end tests do not pin down: LR values, gradual unfreezing, LP-FT, the exported
feature-extraction network, and what ``train`` and ``main`` return."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from lightning import Callback

from tests.helpers import TINY, compose_config
from transferlab.build import build_run
from transferlab.strategies.schedules import warmup_cosine


def _lrs_after(steps: int, **schedule) -> list[float]:
    """The LR at steps 0..steps of a warmup_cosine schedule over one group with base LR 1."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, **schedule)
    lrs = []
    for _ in range(steps + 1):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_then_cosine_lr_values():
    lrs = _lrs_after(100, total_steps=100, warmup_fraction=0.1)
    # linear warmup over 10 steps, reaching the base LR at the last warmup step
    assert lrs[0] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.5) and lrs[9] == pytest.approx(1.0)
    # then a half cosine from the base LR down to 0 at the last step
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5)
    assert lrs[10 + 90 // 4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 22 / 90)))
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # never rises after warmup


def test_lr_schedule_floor_and_no_warmup():
    floored = _lrs_after(50, total_steps=50, warmup_fraction=0.0, min_factor=0.1)
    assert floored[0] == pytest.approx(1.0)  # no warmup: the first step is at the base LR
    assert floored[25] == pytest.approx(0.1 + 0.9 * 0.5)
    assert floored[50] == pytest.approx(0.1)


class _Recorder(Callback):
    """Snapshots backbone and head weights at fit start and after each epoch, and the LR groups at each step."""

    def __init__(self):
        self.weights: dict[str, tuple[dict, dict]] = {}
        self.groups: dict[int, list[list[tuple[set, float, float]]]] = {}

    def _snapshot(self, module) -> tuple[dict, dict]:
        backbone, head = {}, {}
        for name, p in module.net.named_parameters():
            (head if module.is_head_param(name) else backbone)[name] = p.detach().clone()
        return backbone, head

    def on_fit_start(self, trainer, pl_module) -> None:
        self.weights["start"] = self._snapshot(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        groups = [({id(p) for p in g["params"]}, g["lr"], g["initial_lr"]) for g in trainer.optimizers[0].param_groups]
        self.groups.setdefault(trainer.current_epoch, []).append(groups)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.weights[trainer.current_epoch] = self._snapshot(pl_module)


@pytest.fixture(scope="module")
def lp_ft_run(tmp_path_factory):
    """Two epochs of LP-FT (head only, then everything from epoch 1) on the tiny config, recorded."""
    tmp_path = tmp_path_factory.mktemp("lp_ft")
    cfg = compose_config(tmp_path, [*TINY, "strategy=lp_ft", "trainer.max_epochs=2"])
    run = build_run(cfg, loggers=False)
    recorder = _Recorder()
    run.trainer.callbacks.append(recorder)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    return cfg, run.module, recorder


def _changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if not torch.equal(before[name], after[name])}


def test_lp_ft_trains_only_the_head_in_its_first_epoch(lp_ft_run):
    _, _, rec = lp_ft_run
    (backbone0, head0), (backbone1, head1), (backbone2, _) = rec.weights["start"], rec.weights[0], rec.weights[1]
    assert _changed(head0, head1) == set(head0)  # the linear probe trained the whole head
    assert not _changed(backbone0, backbone1)  # and not one backbone weight
    assert len(_changed(backbone1, backbone2)) > len(backbone1) // 2  # epoch 1 fine-tunes the backbone


def test_groups_added_by_gradual_unfreezing_follow_the_schedule_at_their_own_lr(lp_ft_run):
    cfg, module, rec = lp_ft_run
    head_ids = {id(p) for p in module.head.parameters()}
    backbone_ids = {id(p) for name, p in module.net.named_parameters() if not module.is_head_param(name)}
    assert all(ids <= head_ids for ids, _, _ in rec.groups[0][0])  # epoch 0: only head groups

    steps = rec.groups[1]
    added = [(ids, lr, initial) for ids, lr, initial in steps[0] if ids <= backbone_ids]
    assert set().union(*(ids for ids, _, _ in added)) == backbone_ids  # unfreeze=all: every backbone tensor joined
    assert all(initial == pytest.approx(cfg.strategy.backbone_lr) for _, _, initial in added)  # no layer decay set
    for groups in steps:  # at every step the new groups sit at the same point of the schedule as the head's
        head_factor = next(lr / initial for ids, lr, initial in groups if ids <= head_ids)
        for _, lr, initial in groups:
            assert lr == pytest.approx(initial * head_factor)
    first, last = (next(lr / initial for ids, lr, initial in g if ids <= backbone_ids) for g in (steps[0], steps[-1]))
    assert last < first  # the added groups decay with the cosine instead of sitting at a constant LR


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_exported_feature_extraction_network_matches_the_module(tmp_path, head):
    cfg = compose_config(tmp_path, [*TINY, "strategy=feature_extraction", f"strategy.head={head}"])
    module = build_run(cfg, trainer=False).module.eval()
    torch.manual_seed(0)
    images = torch.randn(6, 3, 32, 32)
    features = module.encode(torch.randn(64, 3, 32, 32)) * 5 + 3  # standardisation far from the identity
    module.on_features_cached(features)
    with torch.no_grad():
        for layer in module.head:
            if isinstance(layer, torch.nn.Linear):  # the head starts zeroed: give it weights that matter
                torch.nn.init.normal_(layer.weight)
                torch.nn.init.normal_(layer.bias)
        exported = module.plain_network().eval()
        if head == "linear":  # the standardisation folded away: a plain timm network
            assert isinstance(exported.get_submodule(module.head_name), torch.nn.Linear)
        torch.testing.assert_close(exported(images), module(images), rtol=1e-4, atol=1e-4)


def test_train_returns_its_metrics_and_main_the_optimized_metric(tmp_path):
    from transferlab.train import main, train

    cfg = compose_config(tmp_path / "train", [*TINY, "strategy=feature_extraction"])
    metrics = train.__wrapped__(cfg)  # under task_wrapper: resumable(train), which returns the metrics dict
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert isinstance(metrics, dict) and metrics["status"] == "ok"
    assert metrics.keys() == written.keys() and metrics["test/acc"] == pytest.approx(written["test/acc"])

    cfg = compose_config(tmp_path / "main", [*TINY, "strategy=feature_extraction", "optimized_metric=test/f1_macro"])
    value = main(cfg)  # hydra.main takes a composed config as it is
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert isinstance(value, float) and value == pytest.approx(written["test/f1_macro"])
