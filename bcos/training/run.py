"""``run_training``: set up everything for one experiment and train it with Lightning.

One call builds the experiment's model, data, loggers and callbacks, takes the run folder's lock,
writes the resolved config to ``config.txt``, resumes from ``last.ckpt`` unless told not to, and
trains. The options are those of ``train.py`` (:class:`TrainOptions`; an ``argparse.Namespace``
with the same attribute names works too).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import importlib.util
import inspect
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning
import lightning.pytorch as pl
import torch
from lightning.pytorch import callbacks as pl_callbacks
from lightning.pytorch import loggers as pl_loggers
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

import bcos
from bcos.atomic_io import remove_stale_temporaries
from bcos.cpu_allocator import keep_freed_memory_if_requested
from bcos.errors import BcosError, CheckpointError, ConfigError, unknown_name
from bcos.experiments.utils import Experiment, config_to_text
from bcos.experiments.utils.datasets import dataset_of_datamodule
from bcos.experiments.utils.run_folder import CONFIG_FILENAME, METRICS_DIRNAME, RunFolder
from bcos.checkpoint_io import safe_load
from bcos.training.atomic import AtomicCheckpointIO, atomic_write_text
from bcos.training.callbacks import ExplanationsLogger, MetricsTracker
from bcos.training.callbacks.b_schedule import BSchedule
from bcos.training.callbacks.checkpointing import checkpoint_callbacks
from bcos.training.callbacks.explanation_logger import EXPLANATIONS_DIRNAME
from bcos.training.callbacks.random_state import RandomStateCheckpoint
from bcos.training.loggers import AtomicCSVLogger, AtomicTensorBoardLogger
from bcos.training.processes import ProcessLayout, global_rank_from_env, launcher_layout
from bcos.training.resume_check import check_resume_fits
from bcos.training.run_lock import RunFolderLock
from bcos.training.sigterm import stop_cleanly_on_sigterm
from bcos.training.sync_norms import SyncBatchNormPlugin, check_syncable
from bcos.training.trainer import ClassificationLitModel, NonFiniteLossError

__all__ = ["TrainOptions", "TrainingInterrupted", "TrainingTerminated", "run_training", "resolve_precision", "ARCHIVE_DIRNAME"]

#: where ``--force-no-resume`` moves the files of the earlier run (inside the run folder)
ARCHIVE_DIRNAME = "archived_runs"
DEFAULT_SEED = 42
AMP_CHOICES = ("bf16", "fp16")
#: exit status of a training stopped by SIGTERM / SIGINT (128 + the signal number, as a shell reports it)
SIGTERM_EXIT_STATUS = 128 + 15
SIGINT_EXIT_STATUS = 128 + 2


class TrainingTerminated(BcosError):
    """SIGTERM stopped the training; ``last.ckpt`` (the last finished epoch) is where it resumes."""

    exit_status = SIGTERM_EXIT_STATUS


class TrainingInterrupted(BcosError):
    """Ctrl-C (SIGINT) stopped the training; ``last.ckpt`` (the last finished epoch) is where it resumes."""

    exit_status = SIGINT_EXIT_STATUS


@dataclasses.dataclass
class TrainOptions:
    """Every option of ``train.py`` (and the submitit launcher's ``nodes``), with its default."""

    dataset: str
    base_network: str
    experiment_name: str
    base_directory: str = "./experiments"
    resume: bool = True
    distributed: bool = False
    devices: int | None = None  # processes per node; None: the launcher's count, the config's or "auto"
    accelerator: str | None = None  # None: the config's or "auto"; "cpu" or "gpu"
    sync_batchnorm: bool = False
    amp: str | None = None  # None: full precision; "auto", "bf16" or "fp16"
    compile: bool = False
    channels_last: bool = False
    cache_dataset: str | None = None
    track_grad_norm: bool = False
    refresh_rate: int | None = None
    csv_logger: bool = False
    tensorboard_logger: bool = False
    wandb_logger: bool = False
    wandb_project: str | None = None
    wandb_id: str | None = None
    wandb_name: str | None = None
    explanation_logging: bool = False
    explanation_logging_every_n_epochs: int = 1
    fast_dev_run: bool = False
    debug: bool = False
    nodes: int | None = None  # set by the submitit launcher (the launcher's environment says the same)
    datamodule: str | None = None  # --datamodule MODULE:CLASS, imported before the dataset is looked up

    @classmethod
    def from_namespace(cls, args: Any) -> TrainOptions:
        """Options from an ``argparse.Namespace`` (or any object); missing attributes keep their default."""
        if isinstance(args, cls):
            return args
        values = vars(args) if hasattr(args, "__dict__") else dict(args)
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def resolve_precision(amp: str | bool | None, cuda: bool | None = None) -> str | None:
    """Lightning's ``precision`` for ``--amp``: None (off), bf16 or fp16 mixed precision.

    A bare ``--amp`` ("auto") means fp16 on a GPU (as the reference trained) and bf16 on the CPU,
    where fp16 autocast is not supported.
    """
    if amp is None or amp is False:
        return None
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if amp is True or amp == "auto":
        amp = "fp16" if cuda else "bf16"
    if amp not in AMP_CHOICES:
        raise unknown_name("--amp precision", str(amp), AMP_CHOICES)
    if amp == "fp16" and not cuda:
        raise ConfigError("--amp fp16 needs a GPU; use --amp bf16 on the CPU")
    return "bf16-mixed" if amp == "bf16" else "16-mixed"


def _on_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


def _place_processes(options: TrainOptions, trainer_config: dict[str, Any], layout: ProcessLayout | None) -> None:
    """Set ``accelerator``, ``devices``, ``num_nodes`` and the DDP ``strategy`` in ``trainer_config``.

    A launcher's process count wins over the config's; a conflicting ``--devices``/``--nodes`` is an error.
    """
    if options.accelerator is not None:
        trainer_config["accelerator"] = options.accelerator
    trainer_config.setdefault("accelerator", "auto")
    if layout is not None:
        for flag, given, launched in (
            ("--devices", options.devices, layout.processes_per_node),
            ("--nodes", options.nodes, layout.nodes),
        ):
            if given is not None and given != launched:
                raise ConfigError(
                    f"{flag} {given} disagrees with {layout.launcher}, which started {layout.processes_per_node} "
                    f"process(es) per node on {layout.nodes} node(s); leave {flag} out, the launcher sets the count"
                )
        trainer_config["devices"], trainer_config["num_nodes"] = layout.processes_per_node, layout.nodes
    else:
        if options.devices is not None:
            trainer_config["devices"] = options.devices
        if options.nodes:
            trainer_config["num_nodes"] = options.nodes
        trainer_config.setdefault("devices", "auto")
        trainer_config.setdefault("num_nodes", 1)
    devices = trainer_config["devices"]
    several = (isinstance(devices, int) and devices > 1) or int(trainer_config["num_nodes"]) > 1
    if options.distributed or several:
        if trainer_config.get("strategy", "auto") == "auto":
            trainer_config["strategy"] = "ddp"


def _trainer_config(
    options: TrainOptions, config: Mapping[str, Any], layout: ProcessLayout | None = None
) -> tuple[dict[str, Any], bool]:
    """The config's ``trainer`` settings plus the command-line options; also whether to track grad norms."""
    trainer_config = copy.deepcopy(dict(config.get("trainer", {})))
    track_grad_norm = bool(trainer_config.pop("track_grad_norm", False)) or options.track_grad_norm
    allowed = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    reserved = {"default_root_dir", "logger", "callbacks"}
    for key in trainer_config:
        if key not in allowed or key in reserved:
            raise unknown_name("trainer setting in config['trainer']", key, allowed - reserved)
    _place_processes(options, trainer_config, layout)
    if options.sync_batchnorm:
        trainer_config["sync_batchnorm"] = True
    if options.fast_dev_run:
        trainer_config["fast_dev_run"] = True
    precision = resolve_precision(options.amp)
    if precision is not None:
        trainer_config["precision"] = precision
    if options.debug:
        # deterministic algorithms where they exist; warn (not fail) for the ops without one
        trainer_config["deterministic"] = "warn"
    return trainer_config, track_grad_norm


def _loggers(options: TrainOptions, run_folder: RunFolder) -> list[pl_loggers.Logger]:
    loggers: list[pl_loggers.Logger] = []
    if options.wandb_logger:
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("--wandb_logger needs the wandb package: pip install 'bcos[wandb]'")
        if not options.wandb_project:
            raise ConfigError("--wandb_logger needs --wandb_project NAME (or the WANDB_PROJECT environment variable)")
        loggers.append(
            pl_loggers.WandbLogger(
                name=options.wandb_name or options.experiment_name,
                save_dir=str(run_folder.path),
                project=options.wandb_project,
                id=options.wandb_id,
            )
        )
    if options.csv_logger:
        loggers.append(AtomicCSVLogger(save_dir=str(run_folder.csv_logs_dir), name="", flush_logs_every_n_steps=1000))
    if options.tensorboard_logger:
        base = Path(options.base_directory)
        # the reference's tb_logs/<base_directory>/<dataset>/... next to the working directory;
        # an absolute base directory keeps the logs inside the run folder instead
        root = run_folder.path / "tb_logs" if base.is_absolute() else Path("tb_logs", base, *run_folder.path.parts[-3:])
        loggers.append(AtomicTensorBoardLogger(save_dir=str(root), name=options.experiment_name))
    return loggers


def _callbacks(options: TrainOptions, run_folder: RunFolder, has_ema: bool, has_logger: bool) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = [*checkpoint_callbacks(run_folder, ema=has_ema)]
    if has_logger:
        callbacks.append(pl_callbacks.LearningRateMonitor())
    on_cluster = options.nodes is not None or _on_slurm()
    refresh_rate = options.refresh_rate or (20 if on_cluster else 5)
    if importlib.util.find_spec("rich") is not None and not on_cluster:
        callbacks.append(pl_callbacks.RichProgressBar(refresh_rate=refresh_rate))
    else:
        callbacks.append(pl_callbacks.TQDMProgressBar(refresh_rate=refresh_rate))
    callbacks.append(MetricsTracker())
    if options.explanation_logging:
        every = options.explanation_logging_every_n_epochs
        rank_zero_info(f"Explanations are logged every {every} epoch(s).")
        callbacks.append(ExplanationsLogger(log_every_n_epochs=every))
    return callbacks


def _archive_previous_run(run_folder: RunFolder) -> Path | None:
    """Move the checkpoints, metrics, config and explanations of an earlier run aside."""
    path = run_folder.path
    leftovers = [*run_folder.checkpoints()]
    leftovers += [path / name for name in (METRICS_DIRNAME, CONFIG_FILENAME, EXPLANATIONS_DIRNAME) if (path / name).exists()]
    if not leftovers:
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    archive = path / ARCHIVE_DIRNAME / stamp
    archive.mkdir(parents=True, exist_ok=False)
    for item in leftovers:
        shutil.move(str(item), str(archive / item.name))
    return archive


def _check_resumable(checkpoint: Path) -> Any:
    try:
        return safe_load(checkpoint, mmap=True)  # the same safe reading as every other checkpoint
    except CheckpointError as error:
        raise CheckpointError(
            f"cannot resume: {error}; or pass --force-no-resume to start the run over"
        ) from error


def _processes_summary(trainer: pl.Trainer, layout: ProcessLayout | None) -> dict[str, Any]:
    return {
        "world_size": trainer.world_size,
        "devices_per_node": trainer.num_devices,
        "nodes": trainer.num_nodes,
        "accelerator": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
        "strategy": type(trainer.strategy).__name__,
        "started_by": layout.launcher if layout is not None else "train.py",
    }


def _write_config(run_folder: RunFolder, options: TrainOptions, config: Mapping[str, Any],
                  trainer_config: Mapping[str, Any], processes: Mapping[str, Any], resumed_from: Path | None) -> None:
    resolved = {
        "run": {
            "dataset": options.dataset,
            "base_network": options.base_network,
            "experiment_name": options.experiment_name,
            "run_folder": str(run_folder.path),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "resumed_from": str(resumed_from) if resumed_from else None,
            "seed": config.get("seed", DEFAULT_SEED),
            "processes": dict(processes),
            "versions": {"bcos": bcos.__version__, "torch": torch.__version__, "lightning": lightning.__version__},
        },
        "options": dataclasses.asdict(options),
        **{key: value for key, value in config.items() if key != "trainer"},
        "trainer": dict(trainer_config),
    }
    atomic_write_text(run_folder.config_file, config_to_text(resolved))


def run_training(args: Any) -> pl.Trainer:
    """Train one experiment; returns the Lightning trainer after ``fit``.

    Raises:
        UnknownNameError / ConfigError: unknown experiment, bad option or config value.
        ConfigError: another training holds the run folder.
        CheckpointError: ``last.ckpt`` exists but cannot be resumed from (damaged, or another architecture).
        ConfigError: the optimizer or schedule changed since ``last.ckpt`` was saved
            (``--force-no-resume`` starts over).
        OutputError: a file could not be written (disk full, read-only folder).
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
        TrainingTerminated: SIGTERM stopped the run (``last.ckpt`` of the last finished epoch is kept).
        TrainingInterrupted: Ctrl-C (SIGINT) stopped the run (likewise).
    """
    options = TrainOptions.from_namespace(args)
    layout = launcher_layout()
    is_rank_zero = global_rank_from_env() == 0
    # names, config and options are checked before any file is touched; a submitit job or spawned
    # process imports --datamodule itself (the parent's registration does not travel with the options)
    if options.datamodule is not None:
        options = dataclasses.replace(options, dataset=dataset_of_datamodule(options.dataset, options.datamodule))
    experiment = Experiment(options.dataset, options.base_network, options.experiment_name, options.base_directory)
    config = experiment.config
    trainer_config, track_grad_norm = _trainer_config(options, config, layout)
    # never Lightning's own sync_batchnorm: it would turn the uncentred norms into centred ones
    sync_batchnorm = bool(trainer_config.pop("sync_batchnorm", False))
    run_folder = experiment.run_folder

    lock = RunFolderLock(run_folder) if is_rank_zero else contextlib.nullcontext()
    with lock:
        if is_rank_zero:  # half-written files of a killed earlier run; nobody else writes here now
            remove_stale_temporaries(
                run_folder.path, run_folder.metrics_dir, run_folder.path / EXPLANATIONS_DIRNAME,
                *run_folder.csv_logs_dir.glob("version_*"),
            )  # fmt: skip
        resume = options.resume and not options.fast_dev_run
        ckpt_path = run_folder.last_checkpoint if resume and run_folder.last_checkpoint.exists() else None
        resumed = None
        if ckpt_path is not None:
            resumed = _check_resumable(ckpt_path)
            rank_zero_info(f"Resuming from {ckpt_path}")
        elif is_rank_zero and not options.resume and not options.fast_dev_run:
            archive = _archive_previous_run(run_folder)
            if archive is not None:
                rank_zero_info(f"--force-no-resume: the earlier run's files were moved to {archive}")

        seed = config.get("seed", DEFAULT_SEED)
        pl.seed_everything(seed, workers=True)
        keep_freed_memory_if_requested()  # opt-in (BCOS_KEEP_FREED_MEMORY=1): no page faults on every step
        module = ClassificationLitModel(
            options.dataset,
            options.base_network,
            options.experiment_name,
            base_directory=options.base_directory,
            channels_last=options.channels_last,
            track_grad_norm=track_grad_norm,
        )
        if resumed is not None:  # one line instead of a resume that hides a changed config or model
            check_resume_fits(ckpt_path, resumed, module)
            del resumed
        if sync_batchnorm:
            check_syncable(module.model)
        _transform_model(module, options)
        n_params = sum(p.numel() for p in module.model.parameters())
        rank_zero_info(f"Model {config['model'].get('name', '?')}: {n_params:,} parameters; run folder {run_folder.path}")

        loggers = _loggers(options, run_folder)
        callbacks = _callbacks(options, run_folder, has_ema=module.ema is not None, has_logger=bool(loggers))
        callbacks.append(RandomStateCheckpoint())  # a resumed run shuffles and augments as an uninterrupted one
        if config.get("b_schedule") is not None:  # B-cosified models: B raised from its start value (bcosify)
            callbacks.append(BSchedule.from_config(config["b_schedule"]))
        overrides = {"cache_dataset": options.cache_dataset} if options.cache_dataset else {}
        datamodule = module.experiment.get_datamodule(**overrides)

        plugins: list[Any] = list(trainer_config.pop("plugins", None) or [])
        plugins.append(AtomicCheckpointIO())
        if sync_batchnorm:
            plugins.append(SyncBatchNormPlugin())
        if _on_slurm() and "SLURM_NTASKS" in os.environ:
            plugins.append(SLURMEnvironment(auto_requeue=False))  # submitit requeues the job

        trainer = pl.Trainer(
            default_root_dir=str(run_folder.path),
            logger=loggers if loggers else False,
            callbacks=callbacks,
            plugins=plugins,
            **trainer_config,
        )
        stop_cleanly_on_sigterm(trainer)
        processes = _processes_summary(trainer, layout)
        if processes["world_size"] > 1:
            rank_zero_info(
                f"{processes['world_size']} processes ({processes['devices_per_node']} per node on "
                f"{processes['nodes']} node(s), {processes['accelerator']}); the config's batch size "
                f"{config['data'].get('batch_size')} is per process"
            )
        # a --fast_dev_run smoke test never touches the records of a run that has checkpoints
        if is_rank_zero and not (options.fast_dev_run and any(run_folder.checkpoints())):
            run_folder.path.mkdir(parents=True, exist_ok=True)
            _write_config(run_folder, options, config, {**trainer_config, "sync_batchnorm": sync_batchnorm},
                          processes, ckpt_path)  # fmt: skip
        try:
            with warnings.catch_warnings():
                # the lock file and config.txt are always there; earlier runs' checkpoints are
                # either resumed or archived, so this warning of Lightning's says nothing here
                warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
                trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
        except NonFiniteLossError as error:
            last = run_folder.last_checkpoint
            kept = f"kept {last}" if last.exists() else "no checkpoint had been written yet"
            raise NonFiniteLossError(f"{error} [{kept}]") from None
        except SIGTERMException:
            raise TrainingTerminated(_stopped_by("SIGTERM", trainer, run_folder)) from None
        except SystemExit:
            if not trainer.interrupted:
                raise
            # Lightning ends a KeyboardInterrupt with exit(1); a job chain must see 130, as from a shell
            raise TrainingInterrupted(_stopped_by("Ctrl-C (SIGINT)", trainer, run_folder)) from None
    return trainer


def _stopped_by(signal_name: str, trainer: pl.Trainer, run_folder: RunFolder) -> str:
    last = run_folder.last_checkpoint
    kept = f"{last} is the resume point" if last.exists() else "no checkpoint had been written yet"
    return f"training stopped by {signal_name} at epoch {trainer.current_epoch}; {kept}: run the same command again to continue"


def _transform_model(module: ClassificationLitModel, options: TrainOptions) -> None:
    """Apply --channels_last and --compile to the wrapped model (state-dict keys unchanged)."""
    if options.channels_last:
        module.model = module.model.to(memory_format=torch.channels_last)
    if options.compile:
        module.model.compile()  # in place: the state-dict keys stay those of the plain model
        rank_zero_info("The model is compiled with torch.compile (--compile).")
