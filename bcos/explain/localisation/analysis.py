"""The localisation analysis as a library function: options in, scores and result files out.

    from bcos.explain.localisation import LocalisationOptions, run_localisation

    result = run_localisation(LocalisationOptions(
        save_path="experiments/CIFAR10/norm_ablations_final/resnet_20_bnu-linear-nomaxout",
        analysis_config="500_3x3", explainer_name="Ours", smooth=1,
    ))
    result.summary.mean, result.output_dir

The model is a training run (``save_path``, with ``reload``/``ema`` or ``weights``) or a registry
model (``model``, with its published or local ``weights``). Results go to
``<run>/localisation_analysis/<checkpoint>/<config>/<explainer>/smooth-<s>/<explainer_config>/``
(for a registry model the run folder is ``output_dir``, default ``experiments/pretrained/<name>``):
``localisation_metric.np`` (every score, ``np.savetxt``), ``summary.json``, ``config.log`` and
``scores.png``. Every folder name is keyed by what changes the numbers, so an analysis never
replaces another one's results: ``<checkpoint>`` is ``epoch_<E>``, ``epoch_<E>_ema``,
``pretrained`` or ``weights-<file stem>`` followed by ``-<sha256 prefix of the weights>`` (two
checkpoints of one epoch stay apart); ``<config>`` gets ``+sample_size=<N>`` when the sample size
is not the config's own; ``<explainer_config>`` gets ``+<option>=<value>,...`` for the explainer
options. Option values and file names are reduced to safe names
(:func:`bcos.atomic_io.safe_path_component`), so none can lead outside the run folder. The
confidence ranking is cached per checkpoint as ``<run>/localisation_analysis/<checkpoint>/confidences.json``
and used only for the same weights and data. Every file is written atomically, and a results
folder holds an ``INCOMPLETE`` marker until all four files are written.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bcos.atomic_io import atomic_open, atomic_write_text, results_folder, safe_path_component
from bcos.errors import ConfigError, InputError
from bcos.experiments.utils.datasets import dataset_of_datamodule, resolve_datamodule
from bcos.explain.localisation.pointing_game import (
    ConfidenceRanking,
    LocalisationConfig,
    LocalisationSummary,
    evaluate_grids,
    get_localisation_config,
    grid_blocks,
    plot_scores,
    rank_by_confidence,
    ranking_from_plain,
    ranking_to_plain,
    smooth_attributions,
)

__all__ = [
    "CONFIDENCES_FILENAME",
    "DEFAULT_PRETRAINED_DIR",
    "LocalisationOptions",
    "LocalisationResult",
    "LoadedSubject",
    "load_subject",
    "run_localisation",
    "weights_identity",
]

CONFIDENCES_FILENAME = "confidences.json"
DEFAULT_PRETRAINED_DIR = Path("experiments") / "pretrained"


@dataclass
class LocalisationOptions:
    """One localisation analysis (the options of ``bcos localise``, one value each).

    Attributes:
        save_path: a training run folder ``<base>/<dataset>/<base_network>/<experiment_name>``
            (exactly one of ``save_path`` and ``model``).
        reload: checkpoint of the run: ``last``, ``best``, ``best_any`` or ``epoch_<N>``.
        ema: use the run's EMA weights.
        model: a registered model name (``bcos.list_models()``).
        weights: a weights file to load instead (with ``model`` or ``save_path``).
        dataset: the data set for ``model`` (default: the one its weights were trained on).
        datamodule: ``MODULE:CLASS`` of a datamodule defined outside bcos, imported first
            (``--datamodule``; for ``model`` the data set defaults to its name).
        output_dir: the folder for ``model`` results (default ``experiments/pretrained/<name>``).
        analysis_config: the grid set-up, e.g. ``500_3x3`` or ``250_2x2_rescale``.
        explainer_name, explainer_config: the explanation method and its named configuration.
        explainer_options: overrides of single explainer options (e.g. ``{"n": 2000}`` for RISE).
        smooth: odd smoothing window of the attributions (1: none).
        batch_size: images per forward pass (data and explainer batches).
        sample_size: number of grids (default: the analysis config's).
        force_confidence_calculation: recompute the cached confidences.
        num_workers: data loader workers (default: the config's).
        device: ``cpu``, ``cuda``, ``cuda:1``, ... (default: cuda when available).
        log: where progress lines go (default: ``print``).
    """

    smooth: int
    save_path: str | Path | None = None
    reload: str = "last"
    ema: bool = False
    model: str | None = None
    weights: str | Path | None = None
    dataset: str | None = None
    datamodule: str | None = None
    output_dir: str | Path | None = None
    analysis_config: str = "500_3x3"
    explainer_name: str = "Ours"
    explainer_config: str = "default"
    explainer_options: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    sample_size: int | None = None
    force_confidence_calculation: bool = False
    num_workers: int | None = None
    device: str | None = None
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True), repr=False, compare=False)


@dataclass
class LocalisationResult:
    """What one analysis found and where its files are."""

    summary: LocalisationSummary
    scores: np.ndarray
    output_dir: Path
    config: LocalisationConfig
    grids: int


# ------------------------------------------------------------------------------------ model and data
@dataclass
class LoadedSubject:
    """The model under analysis, where its results go, and how to build its evaluation data."""

    model: torch.nn.Module
    base_dir: Path
    checkpoint_label: str
    dataset: str
    data_config: dict[str, Any]
    description: str
    weights_sha256: str = ""


def _checkpoint_label_of_file(path: Path, ema: bool) -> str:
    from bcos.checkpoint_io import load_checkpoint_file

    epoch = load_checkpoint_file(path).get("epoch")
    if isinstance(epoch, int):
        return f"epoch_{epoch + 1}" + ("_ema" if ema else "")
    return safe_path_component(f"weights-{Path(path).stem}")


def weights_identity(model: torch.nn.Module) -> str:
    """The sha256 of ``model``'s state (names, dtypes, shapes and values): equal only for equal weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _keyed_by_weights(subject: LoadedSubject) -> LoadedSubject:
    """The subject with its checkpoint label followed by the short weights identity."""
    subject.weights_sha256 = weights_identity(subject.model)
    subject.checkpoint_label = f"{subject.checkpoint_label}-{subject.weights_sha256[:10]}"
    return subject


def load_subject(options: LocalisationOptions) -> LoadedSubject:
    """Load the model the options name (a run folder, or a registry model) and its data config."""
    if (options.save_path is None) == (options.model is None):
        raise ConfigError("pass either --save_path RUN_FOLDER or --model NAME")
    if options.datamodule is not None:
        from bcos.data.datamodule_sources import import_datamodule

        if options.model is not None:
            options = replace(options, dataset=dataset_of_datamodule(options.dataset, options.datamodule))
        else:
            import_datamodule(options.datamodule)  # the run folder names the data set
    if options.model is not None:
        return _keyed_by_weights(_load_registry_model(options))

    from bcos.experiments.utils.experiment import Experiment

    save_path = Path(options.save_path)
    if not save_path.is_dir():
        raise ConfigError(f"--save_path '{save_path}' is not a folder; pass a run folder <base>/<dataset>/<base_network>/<experiment_name>")
    experiment = Experiment(save_path)
    if options.weights is not None:
        model = experiment.load_model_from_weights(options.weights, ema=options.ema)
        label = _checkpoint_label_of_file(Path(options.weights), options.ema)
        description = f"{experiment!r} with weights '{options.weights}'"
    else:
        loaded = experiment.load_trained_model(
            reload=options.reload, ema=options.ema, return_training_ckpt_if_possible=True
        )
        model, checkpoint = loaded["model"], loaded["ckpt"]
        if checkpoint is not None and isinstance(checkpoint.get("epoch"), int):
            label = f"epoch_{checkpoint['epoch'] + 1}" + ("_ema" if options.ema else "")
        else:
            label = "pretrained"
        description = f"{experiment!r} reload={options.reload} ema={options.ema}"
    return _keyed_by_weights(LoadedSubject(
        model=model,
        base_dir=save_path,
        checkpoint_label=label,
        dataset=experiment.dataset,
        data_config=dict(experiment.config["data"]),
        description=description,
    ))


def _load_registry_model(options: LocalisationOptions) -> LoadedSubject:
    from bcos.data.presets import eval_transform
    from bcos.models import registry

    config = registry.get_pretrained_config(options.model)
    if options.ema:
        raise ConfigError("--ema applies to training runs (--save_path); drop it for --model")
    model = registry.create_model(options.model, pretrained=options.weights is None, weights=options.weights)
    label = "pretrained" if options.weights is None else _checkpoint_label_of_file(Path(options.weights), False)
    return LoadedSubject(
        model=model,
        base_dir=Path(options.output_dir) if options.output_dir is not None else DEFAULT_PRETRAINED_DIR / options.model,
        checkpoint_label=label,
        dataset=options.dataset or config.source.dataset,
        data_config={"test_transform": eval_transform(model), "batch_size": options.batch_size, "num_workers": 0},
        description=f"registry model {options.model!r}" + (f" with weights '{options.weights}'" if options.weights else ""),
    )


def _eval_datamodule(subject: LoadedSubject, options: LocalisationOptions, rescale_by: int | None):
    config = dict(subject.data_config)
    config["batch_size"] = options.batch_size
    if options.num_workers is not None:
        config["num_workers"] = options.num_workers
    if rescale_by is not None:
        transform = config.get("test_transform")
        if not callable(getattr(transform, "rescaled", None)):
            raise ConfigError(
                f"the _rescale analysis configs need a test transform with rescaled(); {type(transform).__name__} has none "
                "(use an evaluation preset from bcos.data.presets or a config without _rescale)"
            )
        config["test_transform"] = transform.rescaled(rescale_by)
    datamodule = resolve_datamodule(subject.dataset)(config)
    datamodule.setup("test")
    return datamodule


# ------------------------------------------------------------------------------------ confidences
def _load_or_rank(
    subject: LoadedSubject, datamodule: Any, device: torch.device, force: bool, log: Callable[[str], None]
) -> ConfidenceRanking:
    """The confidence ranking of the subject's weights: from its cache when it fits weights and data, else computed."""
    path = subject.base_dir / "localisation_analysis" / subject.checkpoint_label / CONFIDENCES_FILENAME
    dataset_size = len(datamodule.eval_dataset)
    if path.is_file() and not force:
        try:
            content = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            content = None
        fits = (
            isinstance(content, dict)
            and content.get("weights_sha256") == subject.weights_sha256
            and content.get("dataset_size") == dataset_size
            and content.get("num_classes") == datamodule.num_classes
        )
        if fits:
            log(f"Loading stored confidences from '{path}'")
            return ranking_from_plain(content["ranking"])
        log(f"Stored confidences in '{path}' do not match the weights or the data; recalculating")
    else:
        log("Calculating confidences" + (" (forced)" if force and path.is_file() else ""))
    ranking = rank_by_confidence(subject.model, datamodule.test_dataloader(), datamodule.num_classes, device=device)
    content = {
        "dataset": subject.dataset,
        "dataset_size": dataset_size,
        "num_classes": datamodule.num_classes,
        "checkpoint": subject.checkpoint_label,
        "weights_sha256": subject.weights_sha256,
        "ranking": ranking_to_plain(ranking),
    }
    atomic_write_text(path, json.dumps(content))
    return ranking


# ------------------------------------------------------------------------------------ running
def _git_commit() -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        output = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        )
    except (subprocess.CalledProcessError, OSError):
        return None
    return output.stdout.strip() or None


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown --device {name!r}; use cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but CUDA is not available; use --device cpu")
    return device


def _folder_name_of_config(config_name: str, options: Mapping[str, Any]) -> str:
    """One safe folder name for a named configuration and its overridden options."""
    if not options:
        return safe_path_component(config_name)
    return safe_path_component(config_name + "+" + ",".join(f"{k}={options[k]}" for k in sorted(options)), max_length=120)


def _check(options: LocalisationOptions) -> tuple[LocalisationConfig, int]:
    """Every option that can be checked without loading anything; returns the config and the grid count."""
    from bcos.explain.methods import get_explainer_config

    config = get_localisation_config(options.analysis_config)
    smooth_attributions(torch.zeros(1, 1), options.smooth)  # validates smooth
    if options.batch_size < 1:
        raise ConfigError(f"--batch_size must be at least 1, got {options.batch_size}")
    sample_size = config.sample_size if options.sample_size is None else options.sample_size
    if sample_size < 1:
        raise ConfigError(f"--sample_size must be at least 1, got {sample_size}")
    get_explainer_config(options.explainer_name, options.explainer_config)  # unknown names suggest the closest
    return config, sample_size


def _write_results(
    out: Path,
    scores: np.ndarray,
    summary: LocalisationSummary,
    record: Mapping[str, Any],
    config_lines: Mapping[str, Any],
    title: str,
) -> None:
    text = io.StringIO()
    np.savetxt(text, scores.reshape(-1))
    atomic_write_text(out / "localisation_metric.np", text.getvalue())
    atomic_write_text(out / "summary.json", json.dumps(dict(record), indent=2) + "\n")
    atomic_write_text(out / "config.log", "".join(f"{k}: {v}\n" for k, v in config_lines.items()))
    figure = plot_scores(scores, summary, title=title)
    with atomic_open(out / "scores.png", "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)


def run_localisation(options: LocalisationOptions) -> LocalisationResult:
    """Run one localisation analysis and write its result files (see the module docstring).

    Raises:
        ConfigError / UnknownNameError: a bad option (checked before any model or data is loaded).
        InputError: no grid can be built from the confidently and correctly classified images.
        CheckpointError, DataNotFoundError: the model's weights or the data cannot be read.
    """
    from bcos.explain.methods import explainer_options, get_explainer

    config, sample_size = _check(options)
    log = options.log
    device = _device(options.device)
    extra_options = dict(options.explainer_options)

    started = time.perf_counter()
    subject = load_subject(options)
    model = subject.model.eval().to(device)
    log(
        f"Localisation analysis {config.name} of {subject.description} ({subject.checkpoint_label}) "
        f"with {options.explainer_name} ({options.explainer_config})"
    )

    overrides = dict(extra_options)
    if "batch_size" in explainer_options(options.explainer_name):
        overrides.setdefault("batch_size", options.batch_size)  # as the reference: the analysis batch size wins
    explainer = get_explainer(model, options.explainer_name, options.explainer_config, **overrides)

    # confidences always come from the images at their own size (as in the reference)
    datamodule = _eval_datamodule(subject, options, None)
    ranking = _load_or_rank(subject, datamodule, device, options.force_confidence_calculation, log)
    blocks = grid_blocks(ranking, config.grid_size, config.conf_thresh, max_grids=sample_size)
    if len(blocks) < sample_size:
        log(
            f"Only {len(blocks)} grids of {config.n_imgs} distinct, confidently and correctly classified classes "
            f"are available (asked for {sample_size})"
        )
    if not blocks:
        raise InputError(
            f"no {config.grid_size}x{config.grid_size} grid can be built: fewer than {config.n_imgs} classes have correctly "
            f"classified images with confidence > {config.conf_thresh}; try a _noconfthresh or 2x2 config"
        )
    if config.do_rescale:
        datamodule = _eval_datamodule(subject, options, config.grid_size)
    grids_per_batch = max(1, options.batch_size // config.n_imgs)

    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) < grids_per_batch:
            log(f"  grids {done}/{total}")

    scores = evaluate_grids(
        explainer,
        datamodule.eval_dataset,
        blocks,
        config.grid_size,
        smooth=options.smooth,
        device=device,
        grids_per_batch=grids_per_batch,
        on_progress=report,
    )
    summary = LocalisationSummary.from_scores(scores, config.grid_size)

    out = (
        subject.base_dir
        / "localisation_analysis"
        / subject.checkpoint_label
        / _folder_name_of_config(config.name, {} if sample_size == config.sample_size else {"sample_size": sample_size})
        / safe_path_component(options.explainer_name)
        / f"smooth-{options.smooth}"
        / _folder_name_of_config(options.explainer_config, extra_options)
    )
    record = {
        "analysis_config": config.name,
        "explainer_name": options.explainer_name,
        "explainer_config": options.explainer_config,
        "explainer_options": {k: repr(v) for k, v in extra_options.items()},
        "smooth": options.smooth,
        "checkpoint": subject.checkpoint_label,
        "weights_sha256": subject.weights_sha256,
        "grids": len(blocks),
        "requested_grids": sample_size,
        **summary.to_dict(),
    }
    config_lines = {
        "model": subject.description,
        "dataset": subject.dataset,
        **{k: v for k, v in config.to_dict().items() if k != "name"},
        "analysis_config": config.name,
        "sample_size": sample_size,
        "explainer_name": options.explainer_name,
        "explainer_config": options.explainer_config,
        "explainer": repr(explainer),
        "explainer_options": extra_options,
        "smooth": options.smooth,
        "batch_size": options.batch_size,
        "checkpoint": subject.checkpoint_label,
        "weights_sha256": subject.weights_sha256,
        "device": str(device),
        "grids": len(blocks),
        "git_commit": _git_commit(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    title = f"{options.explainer_name} on {subject.dataset} {config.name} (smooth {options.smooth})"
    with results_folder(out):
        _write_results(out, scores, summary, record, config_lines, title)
    return LocalisationResult(summary=summary, scores=scores, output_dir=out, config=config, grids=len(blocks))

