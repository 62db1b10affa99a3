"""Turn a composed config into the three pieces of a run: datamodule, strategy module and trainer.

``build_run`` is the one way in, shared by train, eval, export, the benchmarks and the notebook, so a
checkpoint's stored config rebuilds exactly what trained.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import hydra
import lightning as L
from hydra.errors import InstantiationException
from lightning import LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError

from transferlab.config.overrides import closest_key
from transferlab.lightning.slurm import slurm_plugins
from transferlab.models.backbone import build_network, check_image_size, model_input_config, takes_img_size
from transferlab.strategies.base import TransferModule
from transferlab.strategies.optimizer_preset import OptimizerPreset
from transferlab.utils.errors import TransferlabError
from transferlab.utils.instantiate import instantiate_callbacks, instantiate_loggers
from transferlab.utils.threads import apply_threads, warn_if_overloaded

log = logging.getLogger(__name__)

# Model config keys transferlab reads itself; every other key (drop_rate, channels_last, BLIP's shape keys) and the
# ``timm_kwargs`` block go to the network builder (timm.create_model for timm models).
_MODEL_ONLY_KEYS = ("family", "compile", "name", "weights", "input_size", "mean", "std", "timm_kwargs")


def _instantiate(cfg: DictConfig, **kwargs):
    """``hydra.utils.instantiate`` that lets our own bad-input errors through unwrapped (Hydra wraps errors of
    constructors, OmegaConf those of resolvers such as ``lora_alpha``)."""
    try:
        return hydra.utils.instantiate(cfg, **kwargs)
    except (InstantiationException, InterpolationResolutionError) as e:
        cause = _our_error(e)
        if cause is not None:
            raise cause from None
        raise


def _our_error(e: BaseException) -> TransferlabError | None:
    """The TransferlabError that ``e`` wraps, if any."""
    cause = e.__cause__ or e.__context__
    while cause is not None and not isinstance(cause, TransferlabError):
        cause = cause.__cause__ or cause.__context__
    return cause


def build_datamodule(cfg: DictConfig) -> LightningDataModule:
    """The configured DataModule, told the model's input size (unless data.image_size is set), mean and std."""
    _positive_int("data.image_size", cfg.data.get("image_size"), hint="or null for the model's own size")
    spec = model_input_config(cfg.model)
    image_size = cfg.data.get("image_size") or spec["input_size"][-1]
    return _instantiate(
        cfg.data,
        image_size=image_size,
        mean=list(spec["mean"]),
        std=list(spec["std"]),
        interpolation=spec["interpolation"],
        _convert_="all",
    )


def constructor_keys(cls) -> set[str]:
    """Every named argument of ``cls.__init__`` and of the ``__init__``s its ``**kwargs`` reach up the MRO."""
    keys = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters.values()
            keys |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
            if not any(p.kind == p.VAR_KEYWORD for p in params):
                break
    return keys


def strategy_arguments(cfg: DictConfig) -> dict:
    """The strategy's constructor arguments: ``cfg.strategy`` resolved, less what only configs read (``name``,
    protocol=tuned's ``search`` and the preset's declared ``knobs``, which its ``peft_config`` read by interpolation).

    Any other key that the strategy's constructor does not take is an error here, with the closest real key:
    ``+strategy.rank=8`` would otherwise train without a rank change.
    """
    try:
        strategy = OmegaConf.to_container(cfg.strategy, resolve=True)
    except InterpolationResolutionError as e:  # a resolver's own bad-input error (lora_alpha) comes through as is
        raise _our_error(e) or e from None
    knobs = strategy.pop("knobs", None) or []
    for key in ("name", "search", *knobs):
        strategy.pop(key, None)
    known = constructor_keys(hydra.utils.get_class(strategy["_target_"])) | {"_target_"}
    unknown = [key for key in strategy if key not in known]
    if unknown:
        key = unknown[0]
        close = closest_key(key, [str(k) for k in cfg.strategy if not str(k).startswith("_") and k not in unknown])
        hint = f"Did you mean strategy.{close}?" if close else "Remove it."
        if "knobs" in cfg.strategy:  # a preset with a peft_config: its own keys must be declared
            hint += f" (A knob that its peft_config reads goes in the preset's list: knobs: [{key}, ...].)"
        raise TransferlabError(
            f"strategy.{key} is not a key of strategy={cfg.strategy.get('name')}; nothing would read it. {hint}"
        )
    return strategy


def build_module(cfg: DictConfig, num_classes: int) -> TransferModule:
    """The strategy's LightningModule around a freshly built backbone with a ``num_classes`` head, holding the
    resolved run config."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model_kwargs = {k: v for k, v in model.items() if k not in _MODEL_ONLY_KEYS} | (model.get("timm_kwargs") or {})
    image_size = cfg.data.get("image_size")
    if image_size and "img_size" not in model_kwargs and takes_img_size(cfg.model.name):
        model_kwargs["img_size"] = image_size  # ViTs are built for one size; timm resizes the position embeddings
    backbone = build_network(cfg.model.name, num_classes, weights=str(cfg.model.weights), **model_kwargs)
    check_image_size(backbone.net, image_size)
    # A partial, called here: Hydra would turn the facts record (a dataclass) into a DictConfig if passed through it.
    make_module = _instantiate(strategy_arguments(cfg), _partial_=True, _convert_="all")
    module = make_module(net=backbone.net, facts=backbone.facts, num_classes=num_classes)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)  # stored in checkpoints: eval/export rebuild from it
    module.optimizer_preset = OptimizerPreset.from_config(
        module.run_config["trainer"].get("optim"), cfg.data.batch_size
    )
    if not module.base_reproducible and module.needs_pretrained_backbone:  # fine-tuning may start from random
        log.warning(
            "model.weights=none: the backbone is random, so strategy=%s learns on random features. Use "
            "model.weights=hub, bundled or a file, or strategy=fine_tuning.",
            cfg.strategy.get("name") or type(module).__name__,
        )
    if cfg.model.get("compile"):
        # In-place Module.compile keeps parameter names (and so checkpoints) unchanged, unlike torch.compile(net).
        module.net.compile()
    return module


def _positive_int(key: str, value, allow: tuple = (), hint: str = "") -> None:
    if value is None or (value in allow and not isinstance(value, bool)):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        example = f"Try {key}=64 {hint}" if hint else f"Try {key}=1"
        raise TransferlabError(f"{key}={value} must be a positive integer. {example.strip()}.")


def trainer_config(cfg: DictConfig) -> DictConfig:
    """``cfg.trainer`` checked for values Lightning would only fail on later, without our own keys (``threads``)."""
    trainer = cfg.trainer.copy()
    _positive_int("trainer.max_epochs", trainer.get("max_epochs"))
    _positive_int("trainer.check_val_every_n_epoch", trainer.get("check_val_every_n_epoch"))
    _positive_int("trainer.log_every_n_steps", trainer.get("log_every_n_steps"))
    _positive_int("trainer.max_steps", trainer.get("max_steps"), allow=(-1,))  # -1: Lightning's "no limit"
    min_epochs = trainer.get("min_epochs")
    if min_epochs is not None and (not isinstance(min_epochs, int) or min_epochs < 0):
        raise TransferlabError(f"trainer.min_epochs={min_epochs} must be 0 or more. Try trainer.min_epochs=1.")
    with open_dict(trainer):
        trainer.pop("threads", None)  # ours, applied in build_run: not a Lightning Trainer argument
        trainer.pop("optim", None)  # ours, read by build_module
    return trainer


def build_trainer(cfg: DictConfig, with_loggers: bool = True, checked: DictConfig | None = None) -> Trainer:
    """The configured Lightning Trainer with its callbacks and (optionally) loggers; ``checked`` is
    :func:`trainer_config`'s result when the caller already has it."""
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"), cfg) if with_loggers else []
    if not loggers:  # Lightning refuses an LR monitor with nothing to log to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer_cfg = checked if checked is not None else trainer_config(cfg)
    plugins = [*hydra.utils.instantiate(trainer_cfg.get("plugins") or []), *slurm_plugins()]
    return hydra.utils.instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False, plugins=plugins)


@dataclass
class Run:
    """What a run is built from: its config, the datamodule the strategy trains on, the module, the trainer."""

    cfg: DictConfig
    datamodule: LightningDataModule
    module: TransferModule
    trainer: Trainer | None


def build_run(cfg: DictConfig, trainer: bool = True, loggers: bool = True) -> Run:
    """Seed, then build data, backbone + strategy, the strategy's view of the data (e.g. a feature cache) and,
    with ``trainer``, the Trainer (with ``loggers``)."""
    threads = apply_threads(cfg.trainer.get("threads"))  # before anything is built: data, model, Trainer
    warn_if_overloaded(threads)
    trainer_cfg = trainer_config(cfg) if trainer else None  # bad trainer values fail now, before data and model
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.num_classes)
    return Run(
        cfg=cfg,
        datamodule=module.wrap_datamodule(datamodule),
        module=module,
        trainer=build_trainer(cfg, with_loggers=loggers, checked=trainer_cfg) if trainer else None,
    )
