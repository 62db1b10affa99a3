"""One batch shape per frozen pass: a padded last batch gives the features and logits an unpadded one gives."""

from __future__ import annotations

import pytest
import torch

from transferlab.build import build_run
from transferlab.utils import precision
from transferlab.utils.shapes import padded_rows


def test_padding_adds_zero_rows_only_when_short():
    x = torch.ones(3, 2)
    padded = padded_rows(x, 5)
    assert padded.shape == (5, 2) and torch.equal(padded[:3], x) and not padded[3:].any()
    assert padded_rows(x, 3) is x and padded_rows(x, 2) is x


@pytest.mark.parametrize(("pass_precision", "tolerance"), [("32", 1e-5), ("bf16", 2e-2)])
def test_padded_last_batch_gives_the_unpadded_features(tiny_cfg, pass_precision, tolerance):
    # 300 training images in batches of 64: the last batch (44) is padded to 64. One batch of 300 pads nothing.
    def features(eval_batch: int) -> torch.Tensor:
        cfg = tiny_cfg("strategy=feature_extraction", f"strategy.extract_precision={pass_precision}",
                       f"data.eval_batch_size={eval_batch}")  # fmt: skip
        data = build_run(cfg, trainer=False).datamodule
        data.images.setup("fit")
        data.precision = precision.resolve(pass_precision, torch.device("cpu"))
        return data._extract("train")[0]

    padded, whole = features(64), features(300)
    assert padded.shape == whole.shape == (300, padded.shape[1]) and padded.dtype == torch.float32
    scale = whole.abs().max()
    assert (padded - whole).abs().max() <= tolerance * scale


def test_short_eval_batch_is_padded_to_the_pass_shape_and_cut_back(tiny_cfg):
    module = build_run(tiny_cfg("strategy=fine_tuning"), trainer=False).module.eval()
    shapes = []
    module.register_forward_pre_hook(lambda m, args: shapes.append(len(args[0])))
    full, short = torch.randn(8, 3, 32, 32), torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        module._eval_logits(full)
        logits = module._eval_logits(short)
        torch.testing.assert_close(logits, module(short), atol=1e-5, rtol=1e-4)
    assert logits.shape == (5, module.num_classes) and shapes[:2] == [8, 8]  # the short batch ran at 8 rows
