"""Instantiate callbacks and loggers from their config groups; a broken logger never stops a run."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import hydra
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, open_dict

from transferlab.utils.task import is_multirun

log = logging.getLogger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """Every callback config that has a ``_target_`` (null entries are dropped)."""
    return [hydra.utils.instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def _wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _run_id_file(run_cfg: DictConfig | None, tracker: str = "wandb"):
    # <run dir>/<tracker>_run_id.txt: a resumed run (resume=RUN_DIR, a resumed sweep job) continues that run
    from pathlib import Path

    if run_cfg is None or not run_cfg.get("paths") or not run_cfg.paths.get("output_dir"):
        return None
    return Path(run_cfg.paths.output_dir) / f"{tracker}_run_id.txt"


def _remember_run_id(run_cfg: DictConfig | None, logger, tracker: str = "wandb") -> None:
    path = _run_id_file(run_cfg, tracker)
    run_id = logger.run_id if tracker == "mlflow" else logger.version
    if path is not None and run_id is not None:  # None: a DDP rank other than 0, which has no run
        from transferlab.utils.io import atomic_write_text

        atomic_write_text(path, str(run_id))


def _wandb_offline() -> bool:
    return not _wandb_has_credentials() or os.environ.get("WANDB_MODE") == "offline"


def wandb_settings() -> dict:
    """``wandb.init`` kwargs that keep W&B offline when there are no credentials."""
    return {"mode": "offline"} if _wandb_offline() else {}


def sweep_group(cfg: DictConfig, sweep_dir) -> str:
    """The W&B group of a sweep: experiment name + the sweep folder's name (its time stamp), whatever the launcher.

    Its jobs and its report run both take it from here, so the report lands in the jobs' group.
    """
    from pathlib import Path

    return f"{cfg.get('experiment_name') or cfg.get('task_name')}-{Path(sweep_dir).name}"


def _sweep_group(cfg: DictConfig) -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if not is_multirun():
        return None
    return sweep_group(cfg, HydraConfig.get().sweep.dir)


def _say_wandb_offline(logger) -> None:
    """One line: W&B runs offline, where its run is, and how to upload it."""
    try:
        run_dir = Path(logger.experiment.dir).parent  # <save_dir>/wandb/offline-run-<time>-<id>/files -> the run
    except Exception:  # noqa: BLE001 - the hint must never fail a run
        run_dir = Path("logs/wandb/offline-run-*")
    log.warning(
        "W&B is offline (no API key found): the run is in %s; upload it with `wandb sync %s`.", run_dir, run_dir
    )


def _drop_unset_anonymous(logger) -> None:
    """Lightning's WandbLogger always passes ``anonymous=None`` to ``wandb.init``, and W&B (0.31) then prints
    "The anonymous setting has no effect" on every run: leave the key out when the user did not set it."""
    init_kwargs = getattr(logger, "_wandb_init", None)  # Lightning's private dict of wandb.init kwargs
    if isinstance(init_kwargs, dict) and init_kwargs.get("anonymous", False) is None:
        del init_kwargs["anonymous"]


def instantiate_loggers(cfg: DictConfig | None, run_cfg: DictConfig | None = None) -> list[Logger]:
    """Loggers from config. W&B goes offline without credentials; W&B and MLflow start their run here (a resumed
    run reopens its own) so a failure shows now; any logger that fails is skipped with one warning."""
    loggers = []
    for name, conf in (cfg or {}).items():
        if conf is None or "_target_" not in conf:
            continue
        kwargs = {}
        if "Wandb" in conf._target_:
            group = _sweep_group(run_cfg) if run_cfg is not None else None
            if group:
                kwargs["group"] = group
            previous = _run_id_file(run_cfg)
            if previous is not None and previous.is_file():  # a resumed run continues its W&B run
                kwargs.update(id=previous.read_text().strip(), resume="allow")
            if _wandb_offline():
                os.environ["WANDB_MODE"] = "offline"
                kwargs["offline"] = True
                if conf.get("offline") is not True:
                    with open_dict(conf):
                        conf.offline = True  # the printed and saved config says what runs
            os.environ.setdefault("WANDB_SILENT", "true")
            if conf.get("save_dir"):  # W&B looks for the git root from here and warns when it does not exist yet
                Path(conf.save_dir).mkdir(parents=True, exist_ok=True)
        mlflow = "MLFlow" in conf._target_
        if mlflow:
            group = _sweep_group(run_cfg) if run_cfg is not None else None
            if group:  # filter a sweep's runs in MLflow with tags.sweep = '<group>'
                kwargs["tags"] = {**(conf.get("tags") or {}), "sweep": group}
            previous = _run_id_file(run_cfg, "mlflow")
            if previous is not None and previous.is_file():  # a resumed run continues its MLflow run
                kwargs["run_id"] = previous.read_text().strip()
        try:
            logger = hydra.utils.instantiate(conf, **kwargs)
            if "Wandb" in conf._target_:
                _drop_unset_anonymous(logger)
            if "Wandb" in conf._target_ or mlflow:
                _ = logger.experiment  # start the run now, so a failure is caught here and not mid-training
                _remember_run_id(run_cfg, logger, "mlflow" if mlflow else "wandb")
                if kwargs.get("offline"):
                    _say_wandb_offline(logger)
            loggers.append(logger)
        except Exception as e:  # a dashboard must never take a training run down
            warnings.warn(
                f"Logger '{name}' failed to start ({type(e).__name__}: {e}); continuing without it.", stacklevel=1
            )
            if "Wandb" in conf._target_ and not kwargs.get("offline"):
                try:
                    os.environ["WANDB_MODE"] = "offline"
                    logger = hydra.utils.instantiate(conf, offline=True)
                    _ = logger.experiment
                    loggers.append(logger)
                    log.warning("W&B fell back to offline mode; sync later with `wandb sync`.")
                except Exception:  # noqa: BLE001
                    pass
    return loggers


def log_run_to_loggers(loggers: list[Logger], cfg: DictConfig, metrics: dict | None = None) -> None:
    """Log the flattened run config (nested keys as ``a.b.c``) and, at the end, the summary metrics."""
    from lightning.fabric.utilities.logger import _flatten_dict
    from omegaconf import OmegaConf

    for logger in loggers:
        try:
            if metrics is None:
                logger.log_hyperparams(_flatten_dict(OmegaConf.to_container(cfg, resolve=True), delimiter="."))
            elif hasattr(logger.experiment, "summary"):  # W&B: final metrics as run summary
                logger.experiment.summary.update({k: v for k, v in metrics.items() if isinstance(v, int | float | str)})
            elif type(logger).__name__.endswith("MLFlowLogger"):  # MLflow: the metrics.json numbers as metrics
                logger.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
        except Exception as e:  # noqa: BLE001 - logging must never end a run
            log.warning("Logger %s failed: %s", type(logger).__name__, e)
