"""The loop every strategy shares: new head, cross-entropy, metrics, optimizer over trainable params, accounting."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning import LightningModule
from timm.optim import param_groups_weight_decay
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from transferlab.models.backbone import BackboneFacts
from transferlab.strategies import schedules
from transferlab.strategies.optimizer_preset import OptimizerPreset
from transferlab.utils import precision
from transferlab.utils.errors import TransferlabError
from transferlab.utils.shapes import padded_rows

log = logging.getLogger(__name__)

_BATCHNORM = (nn.modules.batchnorm._BatchNorm,)


class TransferModule(LightningModule):
    """A classifier built on a pretrained ``net`` (a timm model whose head was just replaced), described by
    ``facts`` (head name, feature width, weights; derived from ``net`` when not given, its weights then random).

    Subclasses decide what trains (``setup_trainable``) and with which LRs (``param_groups``). A strategy's
    special needs are hooks with do-nothing defaults that the entry points always call: ``wrap_datamodule``
    (e.g. serve cached features), ``save_artifacts`` (e.g. an adapter folder), ``plain_network`` (what export
    writes) and, for reports, ``report_label`` and ``report_family``.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        facts: BackboneFacts | None = None,
        lr: float = 1e-3,
        optimizer: Callable | None = None,
        scheduler: str = "warmup_cosine",
        warmup_fraction: float = 0.05,
        weight_decay: float = 0.05,
        label_smoothing: float = 0.0,
        freeze_bn: bool = True,
        bn_momentum: float | None = None,
        zero_init_head: bool = True,
        eval_precision: str = "32",
    ):
        super().__init__()
        if lr is None or lr <= 0:
            raise TransferlabError(f"strategy.lr={lr} must be positive. Try strategy.lr=1e-3.")
        schedules.by_name(scheduler)  # fail at build time, not when training starts
        self.net = net
        self.facts = facts or BackboneFacts.of(net)
        self.num_classes = num_classes
        self.lr = lr
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.scheduler_name = scheduler
        self.warmup_fraction = warmup_fraction
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.freeze_bn = freeze_bn
        self._default_optimizer = optimizer is None  # fused kernels are switched on for the default AdamW only
        self.optimizer_preset = OptimizerPreset()  # set from trainer.optim by build_module
        self.lr_scale = 1.0  # the factor configure_optimizers applied to every configured LR
        # Validation and test passes only ("auto", "32" or "bf16"); training keeps the trainer's precision. On a CPU with
        # native bf16, training in bf16 is slower (benchmarks/speed_options) but inference is faster.
        self.eval_precision = precision.check_choice(eval_precision, key="strategy.eval_precision")
        if bn_momentum is not None:
            # TF-ported weights (tf_* in timm) use momentum 0.01: over a short fine-tune the running
            # stats would still mostly describe ImageNet, and evaluation would suffer.
            for m in net.modules():
                if isinstance(m, _BATCHNORM):
                    m.momentum = bn_momentum
        self.head_name = self.facts.head_name
        self.run_config: dict | None = None  # the resolved run config, stored in checkpoints by train.py
        self.test_predictions: dict | None = None  # per-example test predictions, set by the last test pass
        # Frozen pretrained tensors are left out of checkpoints when their weights source can rebuild them.
        self.slim_checkpoints = False
        # validate_args=False: the checks run torch.unique on every update, a host sync per step on a GPU.
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
                "f1_macro": MulticlassF1Score(num_classes, average="macro", validate_args=False),
            }
        )
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # The latest non-finite training loss, kept on the device: the host reads it every log_every_n_steps steps
        # (and at each epoch's last step, before any checkpoint), not at every step.
        self._bad_loss: torch.Tensor | None = None
        self._epoch_predictions: dict[str, list] = {"train": [], "val": [], "test": []}  # (pred, target) per batch
        self._eval_rows = 0  # the largest batch of this validation/test pass: shorter ones are padded up to it
        if zero_init_head:
            self._zero_init_head()
        self.setup_trainable()

    def _zero_init_head(self) -> None:
        # A zero head starts at uniform predictions and sends no gradient into the pretrained body
        # until it has learned something (as BiT does); a random head's large early gradients
        # damage pretrained features in the first steps of a short fine-tune.
        last = [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()

    # Whether a random backbone (model.weights=none) defeats the strategy: frozen random features do (a warning
    # says so); fine-tuning can still learn from random weights.
    needs_pretrained_backbone: bool = False

    # --- hooks the entry points call; strategies override what they need ---------------------
    @property
    def strategy_id(self) -> str:
        """The name stored in checkpoints; a checkpoint from another strategy is refused (compared case-blind)."""
        return type(self).__name__

    def wrap_datamodule(self, datamodule):
        """The datamodule this strategy trains on. Default: the image datamodule unchanged."""
        return datamodule

    def save_artifacts(self, out_dir: Path) -> dict[str, float]:
        """Write strategy-specific files into the run folder after testing; return metrics about them
        (they join metrics.json). Default: none."""
        return {}

    def plain_network(self) -> nn.Module:
        """The trained network as a plain timm model, for export (a copy: this module is left untouched)."""
        return copy.deepcopy(self.net)

    @classmethod
    def report_label(cls, strategy_cfg: dict) -> str:
        """A short name for a job's strategy settings in reports, from its (saved) strategy config."""
        return str(strategy_cfg.get("name") or cls.__name__)

    @classmethod
    def report_family(cls, strategy_cfg: dict) -> str:
        """The colour family in plots: arms of one family (e.g. every adapter method) share a hue."""
        return "other"

    # --- what trains ------------------------------------------------------------------------
    def setup_trainable(self) -> None:
        """Set ``requires_grad`` on the network. The base trains everything."""

    @property
    def head(self) -> nn.Module:
        """The new classification head."""
        return self.net.get_submodule(self.head_name)

    def is_head_param(self, name: str) -> bool:
        """Whether parameter ``name`` (relative to ``self.net``) belongs to the head."""
        return name.startswith(self.head_name + ".")

    def train(self, mode: bool = True):
        """Switch modes, keeping frozen BatchNorm layers in eval so their running stats stay pretrained."""
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.net.modules():
                if isinstance(m, _BATCHNORM) and not any(p.requires_grad for p in m.parameters(recurse=False)):
                    m.eval()
        return self

    def on_train_epoch_start(self) -> None:
        """Apply the train/eval policy above at every epoch.

        Lightning (>= 2.2) never calls ``.train()`` on the whole module: it keeps the modes the
        module already has. Without this hook, frozen BatchNorm layers would train their stats.
        Callbacks run first, so layers that gradual unfreezing just opened are covered too.
        """
        self.train()

    def optimizer_summary(self) -> dict[str, float | str]:
        """What metrics.json records about the LR rule (``trainer.optim``) this run trained with."""
        preset = self.optimizer_preset
        return {"optim/lr_scaling": preset.lr_scaling, "optim/lr_scale": self.lr_scale,
                "optim/reference_batch": preset.reference_batch}  # fmt: skip

    def param_counts(self) -> dict[str, float]:
        """Trainable and total parameter counts, and the trainable share in percent."""
        total = sum(p.numel() for p in self.net.parameters())
        trainable = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
        return {
            "params/trainable": trainable,
            "params/total": total,
            "params/trainable_pct": 100.0 * trainable / max(total, 1),
        }

    def trainable_summary(self) -> str:
        """One line saying what trains."""
        c = self.param_counts()
        return f"{type(self).__name__}: {c['params/trainable']:,} of {c['params/total']:,} params trainable ({c['params/trainable_pct']:.2f}%)"

    # --- the loop ---------------------------------------------------------------------------
    @property
    def channels_last(self) -> bool:
        """Whether the network's convolutions run in NHWC memory format (set by ``model.channels_last``)."""
        return self.facts.channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of preprocessed images."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def batch_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch as the strategy's datamodule serves it. Default: images, through ``forward``."""
        return self(inputs)

    def _step(self, batch, metrics: MetricCollection, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self.batch_logits(x) if stage == "train" else self._eval_logits(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing if stage == "train" else 0.0)
        self._epoch_predictions[stage].append((logits.detach().argmax(-1), y))
        # The step loss stays off the progress bar: Lightning turns progress-bar values into numbers at every
        # batch, a host sync per step. The loggers still get it every log_every_n_steps steps.
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=stage == "val",
            batch_size=len(y),
            sync_dist=stage != "train",
        )
        return loss, logits

    def _eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of an evaluation batch, computed at the pass's one batch shape (a short last batch is padded)."""
        self._eval_rows = max(self._eval_rows, len(x))
        return self.batch_logits(padded_rows(x, self._eval_rows))[: len(x)]

    def _check_loss(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Stop with one line once a training loss was NaN or infinite; the host looks every
        ``log_every_n_steps`` steps and at the epoch's last step, so the checkpoints written after it stay good."""
        loss = loss.detach()
        bad = self._bad_loss if self._bad_loss is not None else torch.zeros((), device=loss.device)
        self._bad_loss = torch.where(torch.isfinite(loss), bad, loss.to(bad.dtype))
        trainer = self.trainer
        last = batch_idx + 1 >= trainer.num_training_batches or 0 < trainer.max_steps <= self.global_step + 1
        if (batch_idx + 1) % trainer.log_every_n_steps and not last:
            return
        if not torch.isfinite(self._bad_loss):
            raise TransferlabError(
                f"The training loss became {self._bad_loss.item()} by step {self.global_step}. Lower strategy.lr "
                f"(now {self.lr}); the last good checkpoint is kept in the run's checkpoints/."
            )

    def _log_epoch_metrics(self, metrics: MetricCollection, stage: str) -> None:
        # One metric update per epoch over the epoch's predicted classes (the same sums as one per batch): the
        # macro F1's confusion matrix uses torch.bincount, which on CUDA reads its input's maximum on the host.
        predictions = self._epoch_predictions[stage]
        if predictions:
            metrics.update(*(torch.cat(parts) for parts in zip(*predictions, strict=True)))
        self._epoch_predictions[stage] = []
        # Logged once per epoch, not as metric objects at every step: Lightning moves each logged metric's
        # state to the device on every self.log call, a few ms per step that dominated head-only training on
        # cached features (benchmarks/feature_cache). compute() syncs across processes itself.
        self.log_dict(metrics.compute(), prog_bar=stage == "val", sync_dist=True)
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training accuracy and F1."""
        self._log_epoch_metrics(self.train_metrics, "train")

    def on_validation_epoch_start(self) -> None:
        """A new pass: its first batch sets its batch shape."""
        self._eval_rows = 0

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's validation accuracy and F1."""
        self._log_epoch_metrics(self.val_metrics, "val")

    def on_test_epoch_start(self) -> None:
        """Start collecting this test pass's per-example predictions; its first batch sets its batch shape."""
        self._eval_rows = 0
        self._test_batches: list[tuple[torch.Tensor, ...]] = []

    def on_test_epoch_end(self) -> None:
        """Log the test accuracy and F1, and keep the per-example predictions in ``test_predictions``."""
        self._log_epoch_metrics(self.test_metrics, "test")
        pred, prob, target = (torch.cat(parts) for parts in zip(*self._test_batches, strict=True))
        self._test_batches = []
        if self.trainer.world_size > 1:
            # Lightning's distributed test sampler deals example i to rank i % world_size (padding the last
            # round), so stacking the ranks' lists column by column restores the dataset's order.
            n = len(self.trainer.test_dataloaders.dataset)
            pred, prob, target = (self.all_gather(t).T.reshape(-1)[:n] for t in (pred, prob, target))
        self.test_predictions = {"pred": pred.cpu().numpy(), "target": target.cpu().numpy(), "prob": prob.cpu().numpy()}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss."""
        loss = self._step(batch, self.train_metrics, "train")[0]
        self._check_loss(loss, batch_idx)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        """Accumulate validation loss and metrics."""
        with precision.autocast(precision.resolve(self.eval_precision, self.device), self.device):
            self._step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        """Accumulate test metrics and each example's predicted class, its probability and the true label."""
        with precision.autocast(precision.resolve(self.eval_precision, self.device), self.device):
            _, logits = self._step(batch, self.test_metrics, "test")
        prob, pred = logits.detach().float().softmax(-1).max(-1)
        self._test_batches.append((pred, prob, batch[1]))

    # --- optimisation -----------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """Optimizer groups over trainable params only, at one LR: timm's weight-decay split (none for biases,
        norms and other 1-d tensors). ``configure_optimizers`` multiplies their LRs by ``lr_scale``."""
        groups = param_groups_weight_decay(self.net, self.weight_decay)
        return [dict(g, lr=self.lr) for g in groups if g["params"]]

    def configure_optimizers(self):
        """The configured optimizer over ``param_groups`` and a per-step LR schedule."""
        groups = self.param_groups()
        if not groups:
            raise TransferlabError("Nothing is trainable. Check strategy.unfreeze / strategy.target_modules.")
        preset, trainer = self.optimizer_preset, self._trainer
        if trainer is not None:
            self.lr_scale = preset.lr_factor(trainer.world_size, trainer.accumulate_grad_batches)
        groups = [dict(g, lr=g["lr"] * self.lr_scale) for g in groups]
        fused = preset.fused and self._default_optimizer and self.device.type == "cuda"
        optimizer = self.optimizer_factory(groups, **({"fused": True} if fused else {}))
        total = int(self._trainer.estimated_stepping_batches) if self._trainer is not None else 1
        scheduler = schedules.by_name(self.scheduler_name)(optimizer, total, warmup_fraction=self.warmup_fraction)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- checkpoints ------------------------------------------------------------------------
    @property
    def base_reproducible(self) -> bool:
        """Whether the frozen pretrained weights can be rebuilt from their source (anything but ``weights=none``)."""
        return self.facts.rebuildable

    def _frozen_param_keys(self) -> set[str]:
        return {f"net.{n}" for n, p in self.net.named_parameters() if not p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the run config and strategy name (so eval/export can rebuild this module from the file alone),
        and with ``slim_checkpoints`` drop frozen pretrained parameters (buffers stay: they are small)."""
        checkpoint["transferlab"] = {"strategy": self.strategy_id, "config": self.run_config}
        if self.slim_checkpoints and self.base_reproducible:
            frozen = self._frozen_param_keys()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint from another strategy, or one lacking trainable tensors (it would load half a model)."""
        meta = checkpoint.get("transferlab") or {}
        if meta.get("strategy") is not None and meta["strategy"].lower() != self.strategy_id.lower():
            raise TransferlabError(
                f"The checkpoint was written by {meta['strategy']} but this run uses {self.strategy_id}. "
                "Use the same strategy=..., or start without ckpt_path."
            )
        state = checkpoint.get("state_dict", {})
        own = {f"net.{n}": p for n, p in self.net.named_parameters()}
        missing = sorted(k for k in own if k not in state and k not in self._frozen_param_keys())
        wrong = sorted(k for k in own if k in state and state[k].shape != own[k].shape)
        if missing or wrong:
            example = (missing or wrong)[0]
            raise TransferlabError(
                f"The checkpoint does not fit this model ({len(missing)} missing, {len(wrong)} mis-shaped tensors, e.g. {example}): "
                "it is from another model, class count or adapter setting. Use the model and strategy settings of the run that wrote it."
            )
