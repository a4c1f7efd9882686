"""Which checkpoint of a run folder to load: ``reload`` values and the run's checkpoint files.

``reload`` selects a checkpoint of a run folder: ``last``, ``best`` (best validation accuracy of the
plain or, with ``ema=True``, the EMA model), ``best_any`` (whichever of the two is better) or
``epoch_<N>``. Reading the file, picking the model's (or EMA model's) weights out of it and loading
them into a model is :mod:`bcos.checkpoint_io`'s job (``weights_only=True``, strict loading); its
names are re-exported here, where the reference's code imports them from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcos.checkpoint_io import (
    EMA_PREFIX,
    MODEL_PREFIX,
    change_state_dict_keys,
    checkpoint_format,
    extract_model_state_dict,
    load_checkpoint_file,
    load_state_dict_into,
)
from bcos.errors import CheckpointError, ConfigError, closest_match
from bcos.experiments.utils.metrics import Metrics, MetricsNotFoundError
from bcos.experiments.utils.run_folder import RunFolder, parse_checkpoint_filename

__all__ = [
    "ReloadTypes",
    "LoadedCheckpoint",
    "load_checkpoint_from_run",
    "get_state_dict_and_training_ckpt_from_save_dir",
    "device_safe_load_state_dict_from_path",
    # bcos.checkpoint_io's
    "MODEL_PREFIX",
    "EMA_PREFIX",
    "load_checkpoint_file",
    "checkpoint_format",
    "extract_model_state_dict",
    "change_state_dict_keys",
    "load_state_dict_into",
]

StateDict = dict[str, Any]


class ReloadTypes:
    """The values ``reload`` accepts: ``last``, ``best``, ``best_any`` and ``epoch_<N>``."""

    BEST = "best"
    BEST_ANY = "best_any"
    LAST = "last"
    EPOCH = "epoch_"  # a prefix: epoch_<N>

    @classmethod
    def validate(cls, value: str) -> bool:
        """Whether ``value`` is a valid reload value."""
        try:
            cls.parse(value)
        except ConfigError:
            return False
        return True

    @classmethod
    def parse(cls, value: str) -> tuple[str, int | None]:
        """Split ``value`` into its kind (``last``/``best``/``best_any``/``epoch_``) and epoch."""
        if value in (cls.LAST, cls.BEST, cls.BEST_ANY):
            return value, None
        if isinstance(value, str) and value.startswith(cls.EPOCH):
            number = value[len(cls.EPOCH) :]
            if number.isdigit():
                return cls.EPOCH, int(number)
        choices = [cls.LAST, cls.BEST, cls.BEST_ANY, "epoch_<N>"]
        suggestion = closest_match(str(value), choices)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        raise ConfigError(f"unknown reload {value!r}{hint} (choices: last, best, best_any, epoch_<N> such as epoch_42)")


@dataclass
class LoadedCheckpoint:
    """A model state dict with where it came from."""

    state_dict: StateDict
    checkpoint: dict[str, Any]
    path: Path
    epoch: int | None
    ema: bool


def _epoch_listing(run: RunFolder) -> str:
    epochs = run.available_epochs()
    names = [f"epoch_{epoch}" for epoch in epochs]
    if run.last_checkpoint.is_file():
        names.insert(0, "last")
    return ", ".join(names) if names else "none"


def _checkpoint_for_epoch(run: RunFolder, epoch: int, ema_first: bool) -> Path:
    candidates = run.epoch_checkpoints().get(epoch, [])
    if not candidates:
        raise CheckpointError(
            f"no checkpoint for epoch {epoch} in '{run.path}'; available: {_epoch_listing(run)}"
        )
    # Either file of an epoch holds both the plain and EMA weights; prefer the one chosen by the
    # accuracy we are after so the printed name matches.
    candidates = sorted(candidates, key=lambda p: (parse_checkpoint_filename(p.name).is_ema != ema_first, p.name))
    return candidates[0]


def _best_from_filenames(run: RunFolder, ema: bool) -> tuple[int, float] | None:
    best: tuple[int, float] | None = None
    for path in run.checkpoints():
        parsed = parse_checkpoint_filename(path.name)
        if parsed is None or parsed.is_ema != ema or not parsed.metric.startswith(("val_acc1", "eval_acc1")):
            continue
        if best is None or parsed.value > best[1]:
            best = (parsed.epoch, parsed.value)
    return best


def _best_epoch(run: RunFolder, ema: bool) -> tuple[int, float] | None:
    """Best (epoch, accuracy) from the metrics files, else from the checkpoint names, else None."""
    try:
        metrics = Metrics.from_experiment_dir(run.path)
        return metrics.get_best_epoch_and_accuracy_ema() if ema else metrics.get_best_epoch_and_accuracy()
    except MetricsNotFoundError:
        return _best_from_filenames(run, ema)


def _resolve_best(run: RunFolder, reload: str, ema: bool) -> tuple[int, bool]:
    if reload == ReloadTypes.BEST:
        best = _best_epoch(run, ema)
        if best is None:
            what = "EMA " if ema else ""
            raise CheckpointError(
                f"cannot find the best {what}epoch of '{run.path}': no metrics files and no best checkpoints; "
                f"use reload='last' or one of: {_epoch_listing(run)}"
            )
        return best[0], ema
    plain, averaged = _best_epoch(run, False), _best_epoch(run, True)
    if plain is None and averaged is None:
        raise CheckpointError(
            f"cannot find the best epoch of '{run.path}': no metrics files and no best checkpoints; "
            f"use reload='last' or one of: {_epoch_listing(run)}"
        )
    if averaged is not None and (plain is None or averaged[1] > plain[1]):
        return averaged[0], True
    return plain[0], False


def load_checkpoint_from_run(
    save_dir: str | Path | RunFolder, reload: str = "last", ema: bool = False, verbose: bool = False
) -> LoadedCheckpoint:
    """Load the model weights a ``reload`` value selects from a run folder.

    ``best_any`` ignores ``ema`` and picks whichever of the plain and EMA models validated best.
    """
    run = save_dir if isinstance(save_dir, RunFolder) else RunFolder(Path(save_dir))
    kind, epoch = ReloadTypes.parse(reload)
    if not run.checkpoints():
        raise CheckpointError(
            f"no checkpoints in '{run.path}'; train the experiment first (train.py) or pass weights (--weights PATH)"
        )
    if kind == ReloadTypes.LAST:
        path = run.last_checkpoint
        if not path.is_file():
            raise CheckpointError(f"no last.ckpt in '{run.path}'; use one of: {_epoch_listing(run)}")
    elif kind == ReloadTypes.EPOCH:
        path = _checkpoint_for_epoch(run, epoch, ema_first=ema)
    else:
        epoch, ema = _resolve_best(run, kind, ema)
        path = _checkpoint_for_epoch(run, epoch, ema_first=ema)

    content = load_checkpoint_file(path)
    state_dict = extract_model_state_dict(content, ema=ema, source=path)
    loaded_epoch = content.get("epoch")
    loaded = LoadedCheckpoint(
        state_dict=state_dict,
        checkpoint=content,
        path=path,
        epoch=int(loaded_epoch) if isinstance(loaded_epoch, int) else epoch,
        ema=ema,
    )
    if verbose:
        _print_loaded(run, loaded)
    return loaded


def _print_loaded(run: RunFolder, loaded: LoadedCheckpoint) -> None:
    suffix = " (EMA)" if loaded.ema else ""
    print(f"Loaded '{loaded.path.name}' (epoch {loaded.epoch}){suffix}")
    try:
        metrics = Metrics.from_experiment_dir(run.path)
    except MetricsNotFoundError:
        print("No validation accuracy recorded (no metrics files)")
        return
    key = metrics.validation_key(ema=loaded.ema)
    value = metrics.value_at_epoch(key, loaded.epoch) if key and loaded.epoch is not None else None
    if value is None:
        print(f"No validation accuracy recorded for epoch {loaded.epoch}")
    else:
        print(f"With validation accuracy: {value:.2%}")


def device_safe_load_state_dict_from_path(path: str | Path) -> dict[str, Any]:
    """Reference name of :func:`bcos.checkpoint_io.load_checkpoint_file`."""
    return load_checkpoint_file(path)


def get_state_dict_and_training_ckpt_from_save_dir(
    save_dir: str | Path, reload: str = "last", ema: bool = False, verbose: bool = False
) -> tuple[StateDict, dict[str, Any]]:
    """Reference-compatible form of :func:`load_checkpoint_from_run`: ``(state_dict, checkpoint)``."""
    loaded = load_checkpoint_from_run(save_dir, reload=reload, ema=ema, verbose=verbose)
    return loaded.state_dict, loaded.checkpoint
