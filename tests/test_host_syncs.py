"""The host-sync counter of ``benchmarks/host_syncs``: it sees a sync that a training step adds."""

from __future__ import annotations

import torch

from benchmarks.host_syncs import HostSyncCounter, count_fit
from tests.helpers import TINY, compose_config
from transferlab.strategies.base import TransferModule

STEPS = ["data.train_size=400", "data.batch_size=16", "trainer.log_every_n_steps=50"]  # 22 steps, no log step


def test_counter_sees_each_syncing_call():
    t = torch.ones(3)
    with HostSyncCounter() as counter:
        total = t.sum()  # not a sync
        total.item(), bool(total > 0), t.tolist()
    assert counter.count == 3


def test_counter_sees_a_sync_added_to_the_training_step(tmp_path, monkeypatch):
    cfg = compose_config(tmp_path / "clean", [*TINY, "strategy=fine_tuning", *STEPS])
    clean = count_fit(cfg)
    assert clean["steps"] >= 20 and clean["per_step"] <= 0.1
    real = TransferModule.training_step
    monkeypatch.setattr(TransferModule, "training_step", lambda self, b, i: (out := real(self, b, i), out.item())[0])
    synced = count_fit(compose_config(tmp_path / "synced", [*TINY, "strategy=fine_tuning", *STEPS]))
    assert synced["syncs"] == clean["syncs"] + synced["steps"]  # one more per step window
