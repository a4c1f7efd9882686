"""Resume only a checkpoint that the current config would continue honestly.

Lightning restores the optimizer and the learning-rate scheduler from ``last.ckpt`` as they were
saved: a changed schedule or learning rate would be silently replaced by the old one (the cosine
schedule of a run whose epochs were raised climbs back up), and a checkpoint of another
architecture ends in a long ``load_state_dict`` traceback. :func:`check_resume_fits` compares the
checkpoint with the module about to be trained and stops with one line that names
``--force-no-resume`` instead.

Raising ``max_epochs`` alone is fine for a schedule counted in epochs (its length is the
scheduler's own ``epochs``); a schedule counted in steps is sized from ``max_epochs``, so there it
counts as a schedule change. The model's config is not compared as text (a class moved to another
module would look like a change): the model is checked by its tensors' names and shapes, and a
change that keeps them (a logit bias, say) is simply followed by the resumed run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bcos.errors import CheckpointError, ConfigError
from bcos.experiments.utils import sanitize_config
from bcos.training.trainer import plain_data

__all__ = ["check_resume_fits", "changed_settings"]

#: config entries whose change the resumed optimizer and scheduler state would hide
_RESTORED_SETTINGS = ("optimizer", "lr_scheduler")
_START_OVER = "pass --force-no-resume to start the run over (its files are archived, nothing is deleted)"


def changed_settings(saved: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The config entries that differ from the hyper-parameters ``saved`` in a checkpoint."""
    current = plain_data(sanitize_config({key: config[key] for key in _RESTORED_SETTINGS if key in config}))
    changed = [key for key in _RESTORED_SETTINGS if key in saved and key in current and saved[key] != current[key]]
    scheduler = current.get("lr_scheduler")
    if isinstance(scheduler, Mapping) and scheduler.get("interval") == "step":
        old, new = (dict(c.get("trainer") or {}).get("max_epochs") for c in (saved, config))
        if "trainer" in saved and old != new:
            changed.append("trainer.max_epochs (the step schedule's length)")
    return changed


def _check_epochs_within_schedule(checkpoint_path: str | Path, saved: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """A raised ``max_epochs`` past a cosine schedule's end would send the learning rate back up."""
    scheduler = plain_data(sanitize_config({"s": config.get("lr_scheduler")}))["s"]
    if not isinstance(scheduler, Mapping) or str(scheduler.get("name", "")).lower() != "cosineannealinglr":
        return
    old, new = (dict(c.get("trainer") or {}).get("max_epochs") for c in (saved, config))
    epochs = scheduler.get("epochs")
    if scheduler.get("interval", "epoch") == "epoch" and isinstance(new, int) and isinstance(epochs, int) and new != old and new > epochs:
        raise ConfigError(
            f"cannot resume from '{checkpoint_path}': max_epochs is now {new}, past the end of the cosine schedule's "
            f"{epochs} epochs, so the learning rate would climb back up; raise the lr_scheduler's epochs as well and "
            f"{_START_OVER}, or keep max_epochs at most {epochs}"
        )


def check_resume_fits(checkpoint_path: str | Path, content: Mapping[str, Any], module: Any) -> None:
    """Raise a one-line error when ``content`` (the loaded ``last.ckpt``) cannot be resumed honestly by ``module``."""
    saved_state = content.get("state_dict")
    if isinstance(saved_state, Mapping):
        own = {key: tuple(value.shape) for key, value in module.state_dict().items()}
        saved = {key: tuple(getattr(value, "shape", ())) for key, value in saved_state.items()}
        missing, unexpected = sorted(own.keys() - saved.keys()), sorted(saved.keys() - own.keys())
        reshaped = sorted(key for key in own.keys() & saved.keys() if own[key] != saved[key])
        if missing or unexpected or reshaped:
            example = (reshaped or missing or unexpected)[0]
            raise CheckpointError(
                f"cannot resume from '{checkpoint_path}': it holds another architecture ({len(missing)} missing, "
                f"{len(unexpected)} unexpected and {len(reshaped)} reshaped tensors, e.g. {example!r}); {_START_OVER}, "
                "or choose another --experiment_name"
            )
    saved_config = content.get("hyper_parameters")
    if isinstance(saved_config, Mapping):
        _check_epochs_within_schedule(checkpoint_path, saved_config, module.config)
        changed = changed_settings(saved_config, module.config)
        if changed:
            raise ConfigError(
                f"cannot resume from '{checkpoint_path}': the config's {', '.join(changed)} changed since it was saved, "
                f"and a resumed run would keep the old optimizer and learning-rate schedule; {_START_OVER}, "
                "or restore the old settings"
            )
