"""Fine-tuning: unfreeze all, the last N blocks or name patterns; discriminative and layer-wise decayed LRs."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from lightning.pytorch.callbacks import BaseFinetuning
from timm.models import group_parameters
from torch import nn

from transferlab.models.families import block_index
from transferlab.strategies import schedules
from transferlab.strategies.base import TransferModule
from transferlab.utils.errors import TransferlabError

log = logging.getLogger(__name__)

UnfreezeSpec = str | int | Sequence[str]
# Normalisation layers whose affine parameters ``unfreeze=norms`` trains (timm's LayerNorm2d subclasses LayerNorm).
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


class FineTuning(TransferModule):
    """Train a chosen part of the pretrained backbone together with the new head.

    ``unfreeze``: ``all``, ``none`` (head only, a linear probe), ``last_n_blocks`` (with
    ``n_blocks``, blocks counted by timm's ``group_matcher``), ``biases`` (BitFit), ``norms``
    (BatchNorm/LayerNorm/GroupNorm affine parameters), or a list of name regexes.
    Pretrained layers train at ``backbone_lr`` (decayed by ``layer_decay`` per layer below the
    top), the head at ``lr``. ``unfreeze_schedule`` maps epochs to more unfreezing.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        unfreeze: UnfreezeSpec = "all",
        n_blocks: int = 2,
        lr: float = 3e-3,
        backbone_lr: float = 1e-3,
        head_lr: float | None = None,
        layer_decay: float | None = None,
        unfreeze_schedule: dict | None = None,
        **kwargs,
    ):
        self.unfreeze = unfreeze
        self.n_blocks = n_blocks
        # head_lr: the same value as lr, accepted from configs written when both keys existed (checkpoints hold them)
        self.head_lr = lr = head_lr if head_lr is not None else lr
        self.backbone_lr = backbone_lr
        if backbone_lr is None or backbone_lr <= 0:
            raise TransferlabError(
                f"strategy.backbone_lr={backbone_lr} must be positive. Try strategy.backbone_lr=1e-3."
            )
        if layer_decay is not None and not 0 < layer_decay <= 1:
            raise TransferlabError(f"strategy.layer_decay={layer_decay} must be in (0, 1], or null for none.")
        self.layer_decay = layer_decay
        self.unfreeze_schedule = {int(k): v for k, v in (unfreeze_schedule or {}).items()}
        super().__init__(net, num_classes, lr=lr, **kwargs)
        self._layer_ids = self._layer_id_map()

    # --- which parameters train ---------------------------------------------------------------
    def select(self, spec: UnfreezeSpec) -> set[str]:
        """Names of the backbone parameters that ``spec`` unfreezes."""
        names = [n for n, _ in self.net.named_parameters() if not self.is_head_param(n)]
        if spec == "all":
            return set(names)
        if spec in ("none", None):
            return set()
        if spec == "last_n_blocks" or isinstance(spec, int):
            return self._last_blocks(self.n_blocks if spec == "last_n_blocks" else spec, names)
        if spec == "biases":  # BitFit (Ben Zaken et al. 2022): every bias term, norm layers' included
            return {n for n in names if n.endswith(".bias")}
        if spec == "norms":  # norm tuning: the affine scale and shift of every normalisation layer
            norms = {m for m in self.net.modules() if isinstance(m, _NORMS)}
            return {n for n, p in self.net.named_parameters() if n in names and self._owner(n) in norms}
        if isinstance(spec, str):
            spec = [spec]
        patterns = [re.compile(p) for p in spec]
        chosen = {n for n in names if any(p.search(n) for p in patterns)}
        if not chosen:
            raise TransferlabError(
                f"strategy.unfreeze patterns {list(spec)} match no parameter. Parameter names look like: {names[0]}, {names[len(names) // 2]}."
            )
        return chosen

    def _owner(self, name: str) -> nn.Module:
        return self.net.get_submodule(name.rpartition(".")[0])

    def _last_blocks(self, n: int, names: list[str]) -> set[str]:
        blocks = block_index(self.net)
        count = max(blocks.values()) + 1
        if not 1 <= n <= count:
            raise TransferlabError(
                f"strategy.n_blocks={n} but {type(self.net).__name__} has {count} blocks. Use 1..{count}, or unfreeze=all."
            )
        first = next(i for i, name in enumerate(names) if blocks.get(name) == count - n)
        return set(names[first:])  # the top n blocks and everything after them (neck, final norm)

    def setup_trainable(self) -> None:
        """Freeze the backbone, then unfreeze what ``unfreeze`` selects (the head always trains)."""
        chosen = self.select(self.unfreeze)
        for name, p in self.net.named_parameters():
            p.requires_grad = self.is_head_param(name) or name in chosen

    # --- learning rates ---------------------------------------------------------------------------
    def _layer_id_map(self) -> dict[str, int]:
        # timm groups parameters into layers (stem = 0, ... , head = last) for layer-wise decay.
        groups = group_parameters(self.net, self.net.group_matcher(coarse=False))
        return {name: layer for layer, names in groups.items() for name in names if not self.is_head_param(name)}

    def lr_for(self, name: str) -> float:
        """The LR of parameter ``name``: ``lr`` for the head, decayed ``backbone_lr`` below it."""
        if self.is_head_param(name):
            return self.head_lr
        if not self.layer_decay:
            return self.backbone_lr
        top = max(self._layer_ids.values())
        # Not timm's param_groups_layer_decay: it scales from the head's layer and over trainable tensors only, so
        # the reference layer would move with what is unfrozen; ``backbone_lr`` is the top backbone layer's LR.
        # The layers themselves are timm's (group_matcher via group_parameters).
        return self.backbone_lr * self.layer_decay ** (top - self._layer_ids.get(name, top))

    def param_groups(self, names: set[str] | None = None) -> list[dict]:
        """One group per (LR, weight decay) pair over the trainable (or given) parameters."""
        groups: dict[tuple[float, float], list] = {}
        for name, p in self.net.named_parameters():
            if (names is None and p.requires_grad) or (names is not None and name in names):
                wd = 0.0 if p.ndim <= 1 else self.weight_decay
                groups.setdefault((self.lr_for(name), wd), []).append(p)
        return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]

    @classmethod
    def report_label(cls, strategy_cfg: dict) -> str:
        """``fine_tuning (all)``, ``fine_tuning (last 2)``; a named preset (lp_ft, bitfit, norm_tuning) by its name."""
        name, unfreeze = strategy_cfg.get("name", "fine_tuning"), strategy_cfg.get("unfreeze")
        if unfreeze == "last_n_blocks":
            return f"{name} (last {strategy_cfg.get('n_blocks')})"
        return f"{name} ({unfreeze})" if name == "fine_tuning" else name

    @classmethod
    def report_family(cls, strategy_cfg: dict) -> str:
        """Arms that train a chosen kind of parameter (biases, norms, patterns) apart from block-wise fine-tuning."""
        unfreeze = strategy_cfg.get("unfreeze")
        return (
            "fine-tuning" if unfreeze in ("all", "last_n_blocks", "none") or isinstance(unfreeze, int) else "selective"
        )

    def configure_callbacks(self):
        """Gradual unfreezing, when ``unfreeze_schedule`` is set."""
        return [GradualUnfreezing(self.unfreeze_schedule)] if self.unfreeze_schedule else []


class GradualUnfreezing(BaseFinetuning):
    """At each scheduled epoch, unfreeze more of the backbone and give it its proper LRs.

    Built on Lightning's ``BaseFinetuning`` so resumed runs replay the schedule, and the new
    groups join the warmup-cosine schedule instead of sitting at a constant LR.
    """

    def __init__(self, schedule: dict[int, UnfreezeSpec]):
        super().__init__()
        self.schedule = dict(sorted(schedule.items()))

    def freeze_before_training(self, pl_module: FineTuning) -> None:
        """The module froze itself according to ``unfreeze``; nothing more to freeze."""

    def finetune_function(self, pl_module: FineTuning, epoch: int, optimizer) -> None:
        """Unfreeze every spec scheduled up to ``epoch``; parameters not yet optimised join as new LR groups.

        Applying all milestones so far (not only this epoch's) keeps a resumed run's
        ``requires_grad`` flags right; the optimizer's groups come back from its own state.
        """
        schedules.cover_all_groups(pl_module.lr_schedulers(), optimizer)  # after a resume
        due = [spec for start, spec in self.schedule.items() if start <= epoch]
        if not due:
            return
        target = set().union(*(pl_module.select(spec) for spec in due))
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for name in target:
            pl_module.net.get_parameter(name).requires_grad = True
        new = {n for n in target if id(pl_module.net.get_parameter(n)) not in in_optimizer}
        if not new:
            return
        scheduler = pl_module.lr_schedulers()
        for group in pl_module.param_groups(names=new):
            schedules.add_param_group(optimizer, scheduler, dict(group, lr=group["lr"] * pl_module.lr_scale))
        log.info("Epoch %d: unfroze %d tensors. %s", epoch, len(new), pl_module.trainable_summary())
