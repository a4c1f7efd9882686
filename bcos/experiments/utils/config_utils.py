"""Tools for config dicts: derive configs from others, make them plain data, render them as text.

A config is a nested dict of plain values and small objects (transforms, losses, optimizer and
scheduler factories, layer classes and factories); see ``docs/architecture.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from bcos.errors import ConfigError

__all__ = [
    "copy_config",
    "update_config",
    "create_configs_with_different_seeds",
    "sanitize_config",
    "describe_value",
    "config_to_text",
    "ALLOWED_SANITIZED_DATA_TYPES",
]

ALLOWED_SANITIZED_DATA_TYPES = (str, int, float, bool, type(None))


def copy_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` whose dicts and lists are new, sharing every other value.

    Configs treat their objects (transforms, losses, optimizer / scheduler factories, layer
    classes and factories) as immutable values, so sharing them is safe and keeps building
    hundreds of configs cheap. Use :func:`copy.deepcopy` for a copy that shares nothing.
    """
    return {key: _copy_value(value) for key, value in config.items()}


def _copy_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return copy_config(value)
    if isinstance(value, list):
        return [_copy_value(v) for v in value]
    return value


def update_config(old_config: Mapping[str, Any], new_config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``old_config`` with ``new_config`` merged into it recursively.

    Sub-dicts are merged key by key; any other value replaces the old one. Neither argument is
    changed, and the result shares no dict or list with them (other values are shared, see
    :func:`copy_config`). Replacing a sub-dict by something that is not a dict raises
    :class:`ConfigError` (set its keys one by one instead).
    """
    result = copy_config(old_config)
    _merge_into(result, new_config, path="")
    return result


def _merge_into(target: dict[str, Any], new: Mapping[str, Any], path: str) -> None:
    for key, value in new.items():
        where = f"{path}{key}"
        if isinstance(target.get(key), dict):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key {where!r} holds a dict and cannot be replaced by {value!r}; "
                    "update its entries instead"
                )
            _merge_into(target[key], value, path=f"{where}.")
        else:
            target[key] = _copy_value(value)


def create_configs_with_different_seeds(
    configs: Mapping[str, Mapping[str, Any]], seeds: int | Iterable[int]
) -> dict[str, dict[str, Any]]:
    """For every seed, a copy of every config named ``"<name>-seed=<seed>"`` with ``seed`` set.

    Example: ``{"resnet_20": cfg}`` with seeds ``[420, 1337]`` gives ``resnet_20-seed=420`` and
    ``resnet_20-seed=1337``. The input is not changed; the copies share no dict or list with it
    (see :func:`copy_config`).
    """
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    result: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seeds must be integers, got {seed!r}")
        for name, config in configs.items():
            new_config = copy_config(config)
            new_config["seed"] = seed
            result[f"{name}-seed={seed}"] = new_config
    return result


def describe_value(value: Any) -> str:
    """A short readable text for a config value: qualified names for classes and functions,
    ``partial(...)`` spelt out, ``repr`` for everything else."""
    if isinstance(value, functools.partial):
        parts = [describe_value(value.func)]
        parts += [describe_value(arg) for arg in value.args]
        parts += [f"{k}={describe_value(v)}" for k, v in value.keywords.items()]
        return f"partial({', '.join(parts)})"
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        module = getattr(value, "__module__", None)
        qualname = value.__qualname__
        return f"{module}.{qualname}" if module and module != "builtins" else qualname
    return repr(value)


def sanitize_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as plain data (for hyper-parameter logging and checkpoints).

    Recursively: dicts stay dicts, lists and tuples keep their type with sanitised items, str /
    int / float / bool / None stay, objects with ``__to_config__()`` become the (sanitised) dict it
    returns, and anything else becomes its :func:`describe_value` text.
    """
    return {str(key): _sanitize_value(value) for key, value in config.items()}


def _sanitize_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return sanitize_config(value)
    if isinstance(value, ALLOWED_SANITIZED_DATA_TYPES):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_sanitize_value(v) for v in value)
    if hasattr(value, "__to_config__") and not isinstance(value, type):
        return sanitize_config(value.__to_config__())
    return describe_value(value)


def config_to_text(config: Mapping[str, Any], indent: int = 2) -> str:
    """The config as indented ``key: value`` lines (for ``config.txt`` in run folders).

    It is meant for reading, not for parsing back: values are shown with :func:`describe_value`,
    multi-line representations are indented under their key.
    """
    lines: list[str] = []
    _render(config, lines, level=0, indent=indent)
    return "\n".join(lines) + "\n"


def _render(config: Mapping[str, Any], lines: list[str], level: int, indent: int) -> None:
    pad = " " * (level * indent)
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{key}:")
            _render(value, lines, level + 1, indent)
            continue
        text = describe_value(value).splitlines() or [""]
        lines.append(f"{pad}{key}: {text[0]}")
        continuation = " " * ((level + 1) * indent)
        lines.extend(f"{continuation}{line}" for line in text[1:])
