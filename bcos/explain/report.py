"""Explanations as pictures: one PNG per image and a self-contained HTML report.

:func:`explain_images` turns a batch into :class:`ExplainedImage` records (predictions, and for each
explained class the RGBA explanation, the contribution map and the completeness numbers).
:func:`render_png` draws one record as a PNG with the input, the explanation and the contribution
map side by side (one row per explained class); :func:`write_html_report` writes a gallery of
records into a single HTML file with every picture embedded (base64), so it opens offline and can
be sent as one attachment.

    >>> from bcos.explain.report import explain_images, render_png, write_html_report
    >>> items = explain_images(model, batch, names=["cat.jpg", "dog.jpg"], top_k=2)  # doctest: +SKIP
    >>> write_html_report(items, "report.html", title="My model")                    # doctest: +SKIP

Matplotlib is used through its object-oriented API only (no pyplot, no global backend change).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import io
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor, nn

from bcos.atomic_io import atomic_write_bytes, atomic_write_text
from bcos.errors import InputError
from bcos.explanation.contributions import explain, find_logit_layer
from bcos.explanation.visualize import plot_contribution_map

__all__ = [
    "Prediction",
    "ClassExplanation",
    "ExplainedImage",
    "explain_images",
    "render_png",
    "write_html_report",
    "written_by_report",
    "GENERATOR",
    "HOW_TO_READ",
]

#: the name every PNG (its ``Software`` text chunk) and HTML report (its ``generator`` meta tag) carries
GENERATOR = "bcos explain"

#: the legend printed in every report (the most asked question about B-cos explanations)
HOW_TO_READ = (
    "The network is a dynamic linear map: each logit is W(x)·x + b. "
    "Explanation: each pixel is coloured by the direction of its weight vector W(x) (the colour that "
    "would raise the logit most) and made opaque by its strength, shown only where the pixel adds to "
    "the logit. Contribution map: x ⊙ W(x) summed over channels; red pixels raise the logit, blue "
    "ones lower it. For B-cos CNNs the contributions plus the logit bias add up to the logit exactly."
)


@dataclass(frozen=True)
class Prediction:
    """One of the top-k classes of an image."""

    class_index: int
    class_name: str
    probability: float
    logit: float


@dataclass
class ClassExplanation:
    """The explanation of one class for one image.

    Attributes:
        explanation: RGBA image [H, W, 4] in [0, 1] (see :func:`bcos.explain.gradient_to_image`).
        contribution_map: [H, W] per-pixel contributions ``Σ_c x ⊙ W(x)``.
        contribution_sum: the sum of the contribution map.
        logit_bias: the constant the network adds after the contributions (0 without a LogitLayer).
    """

    class_index: int
    class_name: str
    probability: float
    logit: float
    explanation: np.ndarray
    contribution_map: np.ndarray
    contribution_sum: float
    logit_bias: float

    @property
    def completeness_error(self) -> float:
        """``|contribution_sum + logit_bias - logit|``: about 0 for B-cos CNNs (not for ViTs)."""
        return abs(self.contribution_sum + self.logit_bias - self.logit)


@dataclass
class ExplainedImage:
    """An image, the model's top predictions and the explanations of the explained classes."""

    name: str
    image: np.ndarray  # [H, W, 3] in [0, 1], as the model saw it (after resizing and cropping)
    predictions: list[Prediction]
    explanations: list[ClassExplanation] = field(default_factory=list)

    def without_pixels(self) -> ExplainedImage:
        """A copy without the image and maps (enough for the report once the PNG is rendered)."""
        empty = np.zeros((0, 0), dtype=np.float32)
        return ExplainedImage(
            name=self.name,
            image=np.zeros((0, 0, 3), dtype=np.float32),
            predictions=list(self.predictions),
            explanations=[dataclasses.replace(e, explanation=empty, contribution_map=empty) for e in self.explanations],
        )


def _class_name(categories: Sequence[str] | None, index: int) -> str:
    if categories is not None and 0 <= index < len(categories):
        return str(categories[index])
    return f"class {index}"


def _probabilities(model: nn.Module, logits: Tensor) -> Tensor:
    # B-cos models are trained with binary cross-entropy: their mixin maps logits with a sigmoid
    to_probabilities: Callable[[Tensor], Tensor] | None = getattr(model, "to_probabilities", None)
    if to_probabilities is None:
        return logits.softmax(dim=1)
    return to_probabilities(logits)


def explain_images(
    model: nn.Module,
    inputs: Tensor,
    names: Sequence[str],
    categories: Sequence[str] | None = None,
    top_k: int = 1,
    target: int | None = None,
    smooth: int = 15,
) -> list[ExplainedImage]:
    """Predict and explain a batch of B-cos inputs ``[N, 6, H, W]``.

    Args:
        model: a B-cos model in eval mode.
        inputs: the batch in the ``[x, 1-x]`` encoding (6 channels).
        names: one display name per image.
        categories: class names in label order (None: ``class <i>``).
        top_k: how many of the top predicted classes to list and explain (at least 1).
        target: explain this class for every image instead of the top-k predictions.
        smooth: box-filter size of the explanation's opacity (0 disables smoothing).

    Returns:
        one :class:`ExplainedImage` per input. Costs one forward and backward per explained class.
    """
    if not isinstance(inputs, Tensor) or inputs.dim() != 4 or inputs.shape[1] != 6:
        shape = list(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise InputError(
            f"explain_images needs a batch [N, 6, H, W] in the [x, 1-x] encoding, got {shape}; "
            "use a B-cos model's transform (it ends with AddInverse)"
        )
    if len(names) != inputs.shape[0]:
        raise InputError(f"got {len(names)} names for {inputs.shape[0]} images; pass one name per image")
    if top_k < 1:
        raise InputError(f"top_k must be at least 1, got {top_k}")

    layer = find_logit_layer(model)
    bias = getattr(layer, "logit_bias", None)
    logit_bias = 0.0 if bias is None else float(bias)

    first = explain(model, inputs, target, smooth=smooth)
    logits = first.logits.float()
    probabilities = _probabilities(model, logits)
    k = min(top_k, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # [N, k]

    # explanations[j] explains, for every sample, its j-th class to explain
    if target is not None:
        explanations = [first]
    else:
        explanations = [first] + [explain(model, inputs, top[:, j], smooth=smooth) for j in range(1, k)]

    images = inputs[:, :3].detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    results = []
    for i, name in enumerate(names):
        predictions = [
            Prediction(
                class_index=int(c),
                class_name=_class_name(categories, int(c)),
                probability=float(probabilities[i, c]),
                logit=float(logits[i, c]),
            )
            for c in top[i].tolist()
        ]
        explained = []
        for expl in explanations:
            c = int(expl.explained_class_idx[i])
            contribution_map = expl.contribution_map[i].float().cpu().numpy()
            explained.append(
                ClassExplanation(
                    class_index=c,
                    class_name=_class_name(categories, c),
                    probability=float(probabilities[i, c]),
                    logit=float(expl.explained_logit[i]),
                    explanation=expl.explanation[i],
                    contribution_map=contribution_map,
                    contribution_sum=float(contribution_map.astype(np.float64).sum()),
                    logit_bias=logit_bias,
                )
            )
        results.append(ExplainedImage(name=name, image=images[i], predictions=predictions, explanations=explained))
    return results


def _on_black(rgba: np.ndarray) -> np.ndarray:
    """Composite an RGBA explanation on black (how B-cos explanations are usually shown)."""
    return np.clip(rgba[..., :3] * rgba[..., 3:4], 0.0, 1.0)


def render_png(item: ExplainedImage, path: str | os.PathLike | None = None, panel_size: float = 2.6, dpi: int = 100) -> bytes:
    """Draw ``item`` as a PNG: input | explanation | contribution map, one row per explained class.

    Args:
        item: the explained image.
        path: also write the PNG there (parent folders are created).
        panel_size: size of one panel in inches.
        dpi: resolution.

    Returns:
        the PNG file's bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = max(1, len(item.explanations))
    figure = Figure(figsize=(3 * panel_size + 0.6, rows * panel_size + 0.5), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 3, squeeze=False)
    top = item.predictions[0] if item.predictions else None
    heading = item.name if top is None else f"{item.name}: {top.class_name} ({top.probability:.1%})"
    figure.suptitle(heading, fontsize=10)
    for row, expl in enumerate(item.explanations or [None]):
        image_ax, explanation_ax, map_ax = axes[row]
        image_ax.imshow(item.image)
        image_ax.set_title("input", fontsize=9)
        if expl is None:
            explanation_ax.axis("off")
            map_ax.axis("off")
        else:
            explanation_ax.imshow(_on_black(expl.explanation))
            explanation_ax.set_title(f"explanation: {expl.class_name}", fontsize=9)
            _, shown = plot_contribution_map(expl.contribution_map, ax=map_ax)
            figure.colorbar(shown, ax=map_ax, fraction=0.046, pad=0.04)
            map_ax.set_title(f"contributions (logit {expl.logit:.2f})", fontsize=9)
        for ax in (image_ax, explanation_ax, map_ax):
            ax.set_xticks([])
            ax.set_yticks([])
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": GENERATOR})
    data = buffer.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; background: #fafafa; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 4px; }
.meta { color: #555; font-size: 0.9em; }
.meta td { padding: 1px 12px 1px 0; }
.legend { background: #eef3fb; border-left: 4px solid #3a6fd8; padding: 8px 12px; margin: 16px 0; max-width: 1100px; font-size: 0.92em; }
.gallery { display: flex; flex-wrap: wrap; gap: 16px; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px; width: 560px; max-width: 100%; }
.card img { width: 100%; display: block; }
.card h2 { font-size: 1em; margin: 0 0 6px 0; word-break: break-all; }
table.preds { border-collapse: collapse; font-size: 0.88em; margin-top: 6px; }
table.preds th, table.preds td { border-bottom: 1px solid #eee; padding: 2px 10px 2px 0; text-align: left; }
.num { font-variant-numeric: tabular-nums; text-align: right !important; }
.check { font-size: 0.85em; color: #444; margin-top: 4px; }
"""


def _card(index: int, item: ExplainedImage, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    rows = "".join(
        f"<tr><td>{rank}</td><td>{html.escape(p.class_name)}</td><td class='num'>{p.class_index}</td>"
        f"<td class='num'>{p.probability:.2%}</td><td class='num'>{p.logit:.3f}</td></tr>"
        for rank, p in enumerate(item.predictions, start=1)
    )
    checks = "".join(
        f"<div class='check'>{html.escape(e.class_name)}: Σ contributions {e.contribution_sum:.3f} + logit bias "
        f"{e.logit_bias:.3f} = {e.contribution_sum + e.logit_bias:.3f}; logit {e.logit:.3f} "
        f"(difference {e.completeness_error:.2g})</div>"
        for e in item.explanations
    )
    return (
        f"<div class='card' id='image-{index}'>"
        f"<h2>{html.escape(item.name)}</h2>"
        f"<img alt='input, explanation and contribution map of {html.escape(item.name, quote=True)}' "
        f"src='data:image/png;base64,{data}'>"
        "<table class='preds'><tr><th>#</th><th>class</th><th class='num'>index</th>"
        f"<th class='num'>probability</th><th class='num'>logit</th></tr>{rows}</table>"
        f"{checks}</div>"
    )


def write_html_report(
    items: Sequence[ExplainedImage],
    path: str | os.PathLike,
    title: str = "B-cos explanations",
    details: Mapping[str, str] | None = None,
    pngs: Sequence[bytes] | None = None,
) -> Path:
    """Write a self-contained HTML gallery of ``items`` (pictures embedded as base64 PNG).

    Args:
        items: the explained images, in display order.
        path: the HTML file to write (parent folders are created).
        title: the page title.
        details: extra facts shown under the title (model, weights, date, ...).
        pngs: the already rendered PNG of each item (rendered with :func:`render_png` when None).

    Returns:
        the path written.
    """
    if not items:
        raise InputError("the report needs at least one explained image")
    if pngs is not None and len(pngs) != len(items):
        raise InputError(f"got {len(pngs)} PNGs for {len(items)} images; pass one per image or none")
    facts = {"images": str(len(items)), "written": datetime.datetime.now().isoformat(timespec="seconds")}
    facts.update(details or {})
    meta = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    cards = "".join(_card(i, item, pngs[i] if pngs is not None else render_png(item)) for i, item in enumerate(items))
    document = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta name='generator' content='{GENERATOR}'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table class='meta'>{meta}</table>"
        f"<div class='legend'><b>How to read this.</b> {html.escape(HOW_TO_READ)}</div>"
        f"<div class='gallery'>{cards}</div></body></html>\n"
    )
    path = Path(path)
    atomic_write_text(path, document)
    return path


def written_by_report(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a PNG or HTML report that :func:`render_png` / :func:`write_html_report` wrote.

    Commands that write into a user's folder replace only such files (never a user's picture).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    if head.startswith(b"\x89PNG"):
        from PIL import Image

        try:
            with Image.open(path) as image:
                return image.info.get("Software") == GENERATOR
        except Exception:  # noqa: BLE001 - an unreadable picture is not ours
            return False
    return re.search(rb"<meta name='generator' content='" + GENERATOR.encode() + rb"'>", head) is not None
