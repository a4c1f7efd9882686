"""Export and deployment of every family of the zoo (small widths, same layers and structure):
``torch.export`` with a dynamic batch, ``torch.compile`` without a graph per batch size, ONNX
through the dynamo exporter reproduced by onnxruntime, and the ``bcos.deploy`` helpers."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch._dynamo.testing import CompileCounter

from bcos import deploy
from bcos.errors import InputError
from bcos.models.base import BcosSequential
from bcos.models.convnext import convnext_atto
from bcos.models.densenet import BcosDenseNet
from bcos.models.resnet import cifar10_resnet20
from bcos.models.vgg import BcosVGG, make_layers
from bcos.models.vit import SimpleViT
from bcos.modules import BcosConv2d, LogitLayer


def _vgg() -> nn.Module:
    """A small VGG: the family's layers and structure, with a narrow classifier (the real one is a
    512->4096 7x7 convolution, 100M parameters, which would dominate these tests' time)."""
    model = BcosVGG(make_layers([8, "M", 16, "M", 512, "M"]), num_classes=10, init_weights=False)
    model.classifier = nn.Sequential(
        BcosConv2d(512, 16, kernel_size=7, padding=3), BcosConv2d(16, 16, kernel_size=1), BcosConv2d(16, 10, kernel_size=1)
    )
    return model


def _vit(conv_stem: list[int] | None) -> nn.Module:
    image_size, patch_size = (4, 1) if conv_stem else (16, 8)
    vit = SimpleViT(
        image_size=image_size, patch_size=patch_size, num_classes=10, dim=32, depth=2, heads=2, mlp_dim=64,
        conv_stem=conv_stem,
    )  # fmt: skip
    return BcosSequential(vit, LogitLayer(logit_bias=-math.log(9)))


# family -> (builder of a small eval-mode model, image size): the smallest images each architecture
# takes keep the tests fast (the ViT-C stem takes 16px to 4x4 tokens)
FAMILIES = {
    "resnet": (lambda: cifar10_resnet20(num_classes=10), 8),
    "densenet": (lambda: BcosDenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=10), 16),
    "vgg": (_vgg, 8),
    "convnext": (lambda: convnext_atto(num_classes=10), 32),
    "simple_vit": (lambda: _vit(None), 16),
    "vitc": (lambda: _vit([8, 16]), 16),
}


def _model(family: str) -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    build, size = FAMILIES[family]
    model = build().eval()
    with torch.no_grad():  # non-trivial running statistics, so eval-mode norms matter
        for module in model.modules():
            if getattr(module, "running_var", None) is not None:
                module.running_var.uniform_(0.5, 2.0)
    return model, size


def _inputs(n: int, size: int) -> torch.Tensor:
    rgb = torch.rand(n, 3, size, size)
    return torch.cat([rgb, 1 - rgb], 1)


@pytest.fixture(autouse=True)
def _quiet_exporters():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("family", FAMILIES)
def test_torch_export_with_a_dynamic_batch_matches_eager_for_any_batch_size(family):
    model, size = _model(family)
    program = torch.export.export(
        model, (_inputs(2, size),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    )
    exported = program.module()
    with torch.no_grad():
        for n in (1, 3, 10):
            x = _inputs(n, size)
            torch.testing.assert_close(exported(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_export_with_a_dynamic_batch_is_reproduced_by_onnxruntime(family, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model, size = _model(family)
    path = deploy.export_onnx(model, _inputs(2, size), tmp_path / f"{family}.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (input_name,) = [i.name for i in session.get_inputs()]
    with torch.no_grad():
        for n in (1, 5):
            x = _inputs(n, size)
            (logits,) = session.run(None, {input_name: x.numpy()})
            torch.testing.assert_close(torch.from_numpy(logits), model(x), rtol=1e-4, atol=1e-4)


def _graphs_over_batch_sizes(model: nn.Module, size: int) -> int:
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    torch._dynamo.reset()
    with torch.no_grad():
        for n in range(1, 33):
            compiled(_inputs(n, size) if size else torch.rand(n, 3, 16, 16))
    return counter.frame_count


@pytest.fixture(scope="module")
def torchvision_resnet18_graphs() -> int:
    return _graphs_over_batch_sizes(torchvision.models.resnet18(num_classes=10).eval(), 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_torch_compile_builds_no_more_graphs_over_batch_sizes_than_torchvision(family, torchvision_resnet18_graphs):
    model, size = _model(family)
    assert _graphs_over_batch_sizes(model, size) <= torchvision_resnet18_graphs


def test_a_portable_program_has_no_bcos_operators_and_runs_without_bcos(tmp_path):
    model, size = _model("resnet")
    direct = torch.export.export(model, (_inputs(2, size),))
    assert any(str(node.target).startswith("bcos.") for node in direct.graph.nodes)
    program = deploy.export_program(model, _inputs(2, size))
    assert not any(str(node.target).startswith("bcos.") for node in program.graph.nodes)
    path = deploy.save_program(program, tmp_path / "resnet.pt2")
    x = _inputs(3, size)
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch\n"
        f"program = torch.export.load({str(path)!r})\n"
        f"out = program.module()(torch.load({str(tmp_path / 'x.pt')!r}))\n"
        "assert 'bcos' not in sys.modules\n"
        f"torch.save(out, {str(tmp_path / 'out.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "out.pt"), model(x), rtol=1e-4, atol=1e-5)


def test_deploy_refuses_training_mode_and_never_replaces_a_file(tmp_path):
    model, size = _model("resnet")
    with pytest.raises(InputError, match=r"model\.eval\(\)"):
        deploy.export_program(model.train(), _inputs(2, size))
    model.eval()
    existing = tmp_path / "model.onnx"
    existing.write_text("mine")
    with pytest.raises(InputError, match="exists.*overwrite=True"):
        deploy.export_onnx(model, _inputs(2, size), existing)
    assert existing.read_text() == "mine"
    with pytest.raises(InputError, match="is a folder"):
        deploy.export_onnx(model, _inputs(2, size), tmp_path)
    program = deploy.export_program(model, _inputs(2, size))
    with pytest.raises(InputError, match="does not exist"):
        deploy.save_program(program, tmp_path / "missing" / "model.pt2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporaries left


def test_bcos_export_writes_an_onnx_file_and_a_program_that_reproduce_the_model(tmp_path, monkeypatch, capsys):
    onnxruntime = pytest.importorskip("onnxruntime")
    from bcos.cli.main import main
    from bcos.models.registry import create_model
    from helpers_tiny_model import TINY_NAME, register_tiny_model, save_tiny_weights

    register_tiny_model(monkeypatch)
    weights = save_tiny_weights(tmp_path / "tiny.pth")
    model = create_model(TINY_NAME, weights=weights).eval()
    x = _inputs(3, 32)
    with torch.no_grad():
        expected = model(x)
    common = ["export", "--model", TINY_NAME, "--weights", str(weights)]
    assert main([*common, "--output", str(tmp_path / "tiny.onnx")]) == 0
    assert "input [N, 6, 32, 32]" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-4)
    assert main([*common, "--output", str(tmp_path / "tiny.pt2")]) == 0
    torch.testing.assert_close(torch.export.load(tmp_path / "tiny.pt2").module()(x), expected, rtol=1e-4, atol=1e-5)

    capsys.readouterr()
    assert main([*common, "--output", str(tmp_path / "tiny.onnx")]) == 2  # never replaces a file unasked
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "exists" in error and "--overwrite" in error
    assert main([*common, "--output", str(tmp_path / "tiny.pt2"), "--overwrite"]) == 0
    assert main([*common, "--output", str(tmp_path / "tiny.zip")]) == 2
    assert "--output must end in .onnx or .pt2" in capsys.readouterr().err
