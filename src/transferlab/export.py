"""Export a trained model as a plain timm state_dict: ``python -m transferlab.export ckpt_path=PATH``.

Each strategy says what its plain network is (``TransferModule.plain_network``): PEFT adapters are
merged into the weights where the method can merge; a feature-extraction head's standardisation is
folded into its linear layer. The result loads with ``timm.create_model(arch, num_classes=K)`` and no
transferlab or PEFT code. Before writing, the exported model's outputs are compared with the
trained model's on a real test batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from transferlab.checkpoints import read_checkpoint, rebuild, run_config
from transferlab.config.setup import CONFIG_DIR, setup_environment
from transferlab.utils.errors import TransferlabError
from transferlab.utils.io import atomic_write, atomic_write_json
from transferlab.utils.task import task_wrapper

log = logging.getLogger(__name__)
setup_environment()


def _test_batch(module, datamodule) -> torch.Tensor:
    images = datamodule.image_data  # the images, also behind a feature cache
    images.setup("test")
    batch, _ = next(iter(images.test_dataloader()))
    return images.preprocess(batch[:32])


@task_wrapper
def export(cfg: DictConfig) -> dict:
    """Write model.safetensors and model.json; return what was checked."""
    ckpt_path = Path(cfg.ckpt_path)
    checkpoint = read_checkpoint(ckpt_path)
    train_cfg = run_config(checkpoint, data_root=cfg.get("data_root"))
    module, datamodule = rebuild(checkpoint, train_cfg)
    module.eval()
    plain = module.plain_network().eval()
    x = _test_batch(module, datamodule)
    with torch.no_grad():
        diff = (module(x) - plain(x)).abs().max().item()
    if diff > cfg.atol:
        raise TransferlabError(
            f"The exported model differs from the trained one by {diff:.2e} (> atol={cfg.atol}). Report this as a bug."
        )
    out = Path(cfg.output_dir) if cfg.get("output_dir") else ckpt_path.resolve().parent.parent / "export"
    state = {k: v.contiguous() for k, v in plain.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda p: save_file(state, str(p)))
    transform = datamodule.image_data.transform
    info = {
        "architecture": train_cfg.model.name,
        "num_classes": datamodule.num_classes,
        "image_size": transform.image_size,
        "mean": transform.mean.flatten().tolist(),
        "std": transform.std.flatten().tolist(),
        "strategy": checkpoint["transferlab"]["strategy"],
        "max_abs_diff": diff,
        "load_with": f"timm.create_model('{train_cfg.model.name}', num_classes={datamodule.num_classes}).load_state_dict(...)",
    }
    atomic_write_json(out / "model.json", info)
    log.info("Exported %s (max |diff| = %.2e on a test batch)", out / "model.safetensors", diff)
    return {"export/max_abs_diff": diff}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> float | None:
    """Console entry point."""
    return export(cfg)


if __name__ == "__main__":
    main()
