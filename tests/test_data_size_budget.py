"""The data-size study's step budget: small sets are not starved, large ones get their epochs, and the experiment
composes as preset and as protocol=tuned, each seed drawing its own subset."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.helpers import compose_config
from transferlab.config.budget import step_budget
from transferlab.utils.errors import TransferlabError


def test_small_sets_get_the_floor_and_large_ones_their_epochs():
    small = step_budget(50, 64, 54000, epochs=3, min_steps=300, validations=10)
    assert small == {"max_steps": 300, "val_check_interval": 30, "max_epochs": 300}  # 1 batch an epoch
    full = step_budget(None, 64, 54000, epochs=3, min_steps=300, validations=10)
    assert full["max_steps"] >= 3 * (54000 // 64) and full["max_steps"] % 10 == 0
    assert full["max_epochs"] * (54000 // 64) >= full["max_steps"]  # the step limit, not the epoch one, ends it
    with pytest.raises(TransferlabError, match="min_steps=0 must be a positive integer"):
        step_budget(50, 64, 54000, epochs=3, min_steps=0, validations=10)


@pytest.mark.parametrize("protocol", ["preset", "tuned"])
def test_experiment_composes_with_the_budget_and_seeded_subsets(tmp_path, protocol):
    overrides = ["experiment=strategy_vs_data_size", "+variant=ft_all", "data.train_size=200", "seed=2"]
    cfg = compose_config(tmp_path, [*overrides, f"protocol={protocol}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["trainer"]["max_steps"] == 300 and resolved["trainer"]["check_val_every_n_epoch"] is None
    assert resolved["data"]["seed"] == 2  # data.seed follows seed: each seed draws its own stratified subset
    params = cfg.hydra.sweeper.params
    assert len(str(params["data.train_size"]).split(",")) >= 5 and "seed" not in params
