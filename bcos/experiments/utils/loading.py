"""Safe checkpoint loading: one loader for training checkpoints, plain weights and run folders.

Every file is read with ``torch.load(..., weights_only=True)``: tensors and plain data only, so a
crafted pickle cannot run code. Three formats are understood:

* Lightning checkpoints: ``state_dict`` + ``epoch`` + ``pytorch-lightning_version``; the model's
  keys carry the prefix ``model.``, the EMA model's ``ema.module.``.
* "simple" training checkpoints: the model's weights under ``model_state_dict``.
* plain weights files (``<name>-<sha256[:10]>.pth``): a state dict of tensors.

``reload`` selects a checkpoint of a run folder: ``last``, ``best`` (best validation accuracy of the
plain or, with ``ema=True``, the EMA model), ``best_any`` (whichever of the two is better) or
``epoch_<N>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bcos.errors import CheckpointError, ConfigError, closest_match
from bcos.atomic_io import atomic_open
from bcos.experiments.utils.metrics import Metrics, MetricsNotFoundError
from bcos.experiments.utils.run_folder import RunFolder, parse_checkpoint_filename
from bcos.models.weights import safe_load

__all__ = [
    "ReloadTypes",
    "LoadedCheckpoint",
    "MODEL_PREFIX",
    "EMA_PREFIX",
    "load_checkpoint_file",
    "save_checkpoint_file",
    "sha256_of_file",
    "checkpoint_format",
    "extract_model_state_dict",
    "change_state_dict_keys",
    "load_state_dict_into",
    "load_checkpoint_from_run",
    "get_state_dict_and_training_ckpt_from_save_dir",
    "device_safe_load_state_dict_from_path",
]

StateDict = dict[str, Any]

MODEL_PREFIX = "model."
EMA_PREFIX = "ema.module."
SIMPLE_STATE_DICT_KEY = "model_state_dict"
_LIGHTNING_KEYS = ("state_dict", "epoch", "pytorch-lightning_version")


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


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint or weights file onto the CPU, refusing anything but tensors and plain data.

    The reading itself is :func:`bcos.models.weights.safe_load` (``weights_only=True``), the
    project's one safe-loading primitive; this adds the check that the file holds a dict.
    """
    content = safe_load(path)
    if not isinstance(content, dict):
        raise CheckpointError(f"'{path}' holds a {type(content).__name__}, not a dict of weights; save a state dict")
    return content


def device_safe_load_state_dict_from_path(path: str | Path) -> dict[str, Any]:
    """Reference name of :func:`load_checkpoint_file`."""
    return load_checkpoint_file(path)


def sha256_of_file(path: str | Path) -> str:
    """The hex SHA-256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint_file(content: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` atomically: write a temporary file next to ``path``, then rename it."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        torch.save(dict(content), handle)
    return path


def checkpoint_format(content: Mapping[str, Any]) -> str:
    """``"lightning"``, ``"simple"`` or ``"weights"`` (a plain state dict); raises for anything else."""
    is_lightning = all(key in content for key in _LIGHTNING_KEYS)
    is_simple = SIMPLE_STATE_DICT_KEY in content
    if is_lightning and is_simple:
        raise CheckpointError(
            f"ambiguous checkpoint: it has both Lightning keys and {SIMPLE_STATE_DICT_KEY!r}; keep only one format"
        )
    if is_lightning:
        return "lightning"
    if is_simple:
        return "simple"
    if content and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in content.items()):
        return "weights"
    keys = ", ".join(sorted(map(str, content))[:6]) or "nothing"
    raise CheckpointError(
        f"unsupported checkpoint format (top-level keys: {keys}); expected a Lightning checkpoint, "
        f"a dict with {SIMPLE_STATE_DICT_KEY!r}, or a plain state dict of tensors"
    )


def change_state_dict_keys(
    state_dict: Mapping[str, Any],
    prefix_filter: str | None = None,
    filter_fn: Callable[[str], bool] | None = None,
    remove_prefix: bool = True,
) -> StateDict:
    """Keep the keys starting with ``prefix_filter`` (stripping it) or those ``filter_fn`` accepts."""
    if prefix_filter is not None and filter_fn is not None:
        raise ValueError("pass only one of prefix_filter and filter_fn")
    if prefix_filter is not None:
        cut = len(prefix_filter) if remove_prefix else 0
        return {key[cut:]: value for key, value in state_dict.items() if key.startswith(prefix_filter)}
    if filter_fn is not None:
        return {key: value for key, value in state_dict.items() if filter_fn(key)}
    return dict(state_dict)


def extract_model_state_dict(content: Mapping[str, Any], ema: bool = False, source: str | Path = "checkpoint") -> StateDict:
    """The model's (or with ``ema=True`` the EMA model's) state dict inside a loaded checkpoint."""
    kind = checkpoint_format(content)
    if kind == "lightning":
        prefix = EMA_PREFIX if ema else MODEL_PREFIX
        state_dict = change_state_dict_keys(content["state_dict"], prefix_filter=prefix)
        if not state_dict:
            if ema:
                raise CheckpointError(
                    f"'{source}' has no EMA weights ('{EMA_PREFIX}*' keys); the run was trained without EMA: drop ema=True / --ema"
                )
            raise CheckpointError(f"'{source}' has no model weights ('{MODEL_PREFIX}*' keys); it is not a bcos training checkpoint")
        return state_dict
    if ema:
        raise CheckpointError(f"'{source}' holds a single set of weights without EMA; drop ema=True / --ema")
    if kind == "simple":
        return dict(content[SIMPLE_STATE_DICT_KEY])
    return dict(content)


def _shape(value: Any) -> list[int] | None:
    return list(value.shape) if isinstance(value, torch.Tensor) else None


def load_state_dict_into(model: torch.nn.Module, state_dict: Mapping[str, Any], source: str | Path = "checkpoint") -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with an error that says which keys or shapes differ."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        (key, _shape(state_dict[key]), _shape(expected[key]))
        for key in expected
        if key in state_dict and _shape(state_dict[key]) != _shape(expected[key])
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            shown = "; ".join(f"{key}: checkpoint {got} vs model {want}" for key, got, want in mismatched[:3])
            parts.append(f"{len(mismatched)} shape mismatch(es) ({shown})")
        raise CheckpointError(
            f"'{source}' does not fit the model: {', '.join(parts)}; "
            "load it into the architecture/config it was trained with"
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"'{source}' does not fit the model: {str(error).splitlines()[0]}") from None


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


def get_state_dict_and_training_ckpt_from_save_dir(
    save_dir: str | Path, reload: str = "last", ema: bool = False, verbose: bool = False
) -> tuple[StateDict, dict[str, Any]]:
    """Reference-compatible form of :func:`load_checkpoint_from_run`: ``(state_dict, checkpoint)``."""
    loaded = load_checkpoint_from_run(save_dir, reload=reload, ema=ema, verbose=verbose)
    return loaded.state_dict, loaded.checkpoint
