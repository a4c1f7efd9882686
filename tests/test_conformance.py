"""The conformance vectors of ../shared/conformance, run through the config system: each vector names a
config ("Dataset/collection/experiment"); the model comes from that collection's ``get_model``, gets
the deterministic weights, and must give the reference's logits, explained class, contribution maps,
W(x) (CIFAR) and RGBA explanation (tolerances of ../shared/conformance/README.md).

The 224x224 ImageNet vectors cost seconds each on a CPU and are marked slow. Explanations use one
batched pass for the predicted class and class 3.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bcos.experiments.utils import get_configs_and_model_factory

CONFORMANCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance"
VECTORS = sorted(CONFORMANCE.glob("vectors/*.pt"))

if not VECTORS:
    pytest.skip(f"conformance vectors not found in {CONFORMANCE}", allow_module_level=True)

sys.path.insert(0, str(CONFORMANCE))
conformance = importlib.import_module("conformance")

try:
    from bcos.explain.contributions import explain
except ImportError as error:  # written by another engineer
    explain = None
    EXPLAIN_MISSING = f"bcos.explain.contributions.explain is not available yet: {error}"

TOLERANCE = 1e-3


def test_every_vector_is_listed_in_the_manifest():
    manifest = json.loads((CONFORMANCE / "vectors" / "manifest.json").read_text())
    assert sorted(manifest) == [path.name for path in VECTORS]


def build(spec: str) -> torch.nn.Module:
    dataset, base_network, experiment_name = spec.split("/")
    configs, get_model = get_configs_and_model_factory(dataset, base_network)
    return get_model(configs[experiment_name]["model"])


def check_rgba(ours: np.ndarray, reference: np.ndarray, weights: torch.Tensor, strict: bool) -> None:
    """RGBA within 1e-3. Not strict: except at weak entries, where the weights behind the entry (a
    colour channel and its inverse channel; for alpha, the pixel's) are below 5% of the image's
    largest weight. A colour is a ratio of two such weights, which float32 round-off in a deep
    network (a relative error of ~1e-5 of the largest weight) can change, or even flip from 0 to 1
    when a nearly-zero weight changes sign. Such entries must stay rare."""
    wrong = np.abs(ours - reference) > TOLERANCE
    if strict:
        assert not wrong.any(), f"{wrong.sum()} RGBA entries differ by more than {TOLERANCE}"
        return
    magnitude = weights.abs() / weights.abs().max()
    colour_pairs = torch.maximum(magnitude[:3], magnitude[3:])
    strength = torch.cat([colour_pairs, magnitude.amax(0, keepdim=True)]).permute(1, 2, 0).numpy()
    assert not (wrong & (strength >= 0.05)).any(), "RGBA differs at a well-conditioned entry"
    assert wrong.mean() < 5e-4


def check_vector(path: Path, explain_it: bool = True) -> None:
    vec = conformance.load_vector(path)
    model = build(vec["spec"])
    conformance.fill_weights(model, vec["buffers"])  # also sets eval mode
    error = conformance.compare_logits(model, vec)
    assert error is None or error < TOLERANCE
    if not (vec["is_bcos"] and (explain_it or error is None)):
        return
    if explain is None:
        pytest.skip(EXPLAIN_MISSING)

    # one pass for both explained classes of input 1
    x = conformance.make_input(vec["hw"], 1, True)
    result = explain(model, torch.cat([x, x]), [int(vec["pred_class"]), int(vec["class3_class"])])
    assert int(result.prediction[0]) == int(vec["pred_class"])
    for row, prefix in enumerate(("pred", "class3")):
        assert int(result.explained_class_idx[row]) == int(vec[f"{prefix}_class"])
        assert float(result.explained_logit[row]) == pytest.approx(float(vec[f"{prefix}_logit"]), rel=TOLERANCE, abs=1e-4)
        assert conformance.rel_err(result.contribution_map[row], vec[f"{prefix}_contribution_map"]) < TOLERANCE
        if f"{prefix}_dynamic_linear_weights" in vec:
            weights = vec[f"{prefix}_dynamic_linear_weights"]
            assert conformance.rel_err(result.dynamic_linear_weights[row], weights) < TOLERANCE
    check_rgba(
        result.explanation[0],
        vec["pred_explanation_rgba"].numpy(),
        result.dynamic_linear_weights[0],
        strict=vec["spec"].startswith("CIFAR10"),
    )


@pytest.mark.parametrize("path", [p for p in VECTORS if p.name.startswith("CIFAR10")], ids=lambda p: p.stem)
def test_cifar10_vectors(path):
    check_vector(path)


# Explanations of the large models are a property of the model, which the logits already pin down;
# their maps are also checked in test_models_cnn.py. Explained here: the cheap ones, and VGG, whose
# logits are too flat to compare.
EXPLAINED_IMAGENET = ("bcos_final__resnet_18", "bcos_final__vgg_11_bnu", "vit_final__bcos_")


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in VECTORS if not p.name.startswith("CIFAR10")], ids=lambda p: p.stem)
def test_imagenet_vectors(path):
    check_vector(path, explain_it=any(part in path.name for part in EXPLAINED_IMAGENET))
