"""Explanations as pictures (bcos.explain.report): records, PNGs, the self-contained HTML report,
and the report rendered in headless Chromium."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from bcos.errors import InputError
from bcos.explain.report import HOW_TO_READ, explain_images, render_png, write_html_report
from bcos.models.resnet import cifar10_resnet20

CATEGORIES = [f"category_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return cifar10_resnet20().eval()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    rgb = torch.rand(2, 3, 32, 32)
    return torch.cat([rgb, 1 - rgb], dim=1)


@pytest.fixture(scope="module")
def items(model, batch):
    return explain_images(model, batch, ["a.png", "<script>c</script>.png"], CATEGORIES, top_k=2)


@pytest.fixture(scope="module")
def pngs(items):
    return [render_png(item, panel_size=1.6, dpi=60) for item in items]


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ------------------------------------------------------------------------------------ records
def test_records_hold_top_k_predictions_and_exact_contributions(model, batch, items):
    logits = model(batch).detach()
    assert [item.name for item in items] == ["a.png", "<script>c</script>.png"]
    for i, item in enumerate(items):
        expected = logits[i].topk(2).indices.tolist()
        assert [p.class_index for p in item.predictions] == expected
        assert [e.class_index for e in item.explanations] == expected
        assert item.predictions[0].class_name == CATEGORIES[expected[0]]
        # B-cos models map logits to probabilities with a sigmoid (trained with BCE)
        assert item.predictions[0].probability == pytest.approx(torch.sigmoid(logits[i, expected[0]]).item(), rel=1e-5)
        for explanation in item.explanations:
            assert explanation.logit == pytest.approx(logits[i, explanation.class_index].item(), abs=1e-5)
            assert explanation.completeness_error < 1e-4
            assert explanation.explanation.shape == (32, 32, 4)
            assert explanation.contribution_map.shape == (32, 32)
        np.testing.assert_allclose(item.image, batch[i, :3].permute(1, 2, 0).numpy(), atol=1e-6)


def test_target_explains_one_class_for_every_image(model, batch):
    items = explain_images(model, batch, ["a", "b"], top_k=3, target=7)
    for item in items:
        assert len(item.predictions) == 3
        assert [e.class_index for e in item.explanations] == [7]
        assert item.explanations[0].class_name == "class 7"  # no categories given


def test_without_pixels_keeps_the_numbers(items):
    light = items[0].without_pixels()
    assert light.image.size == 0 and light.explanations[0].explanation.size == 0
    assert light.predictions == items[0].predictions
    assert light.explanations[0].contribution_sum == items[0].explanations[0].contribution_sum


def test_bad_inputs_are_reported(model, batch):
    with pytest.raises(InputError, match="6, H, W"):
        explain_images(model, batch[:, :3], ["a", "b"])
    with pytest.raises(InputError, match="one name per image"):
        explain_images(model, batch, ["a"])
    with pytest.raises(InputError, match="top_k"):
        explain_images(model, batch, ["a", "b"], top_k=0)
    with pytest.raises(InputError, match="at least one"):
        write_html_report([], "unused.html")


# ------------------------------------------------------------------------------------ PNG
def test_png_shows_input_explanation_and_map_side_by_side(items, pngs, tmp_path):
    image = _png(pngs[0])
    height, width, _ = image.shape
    assert width > height  # two rows (top-2) of three panels
    data = render_png(explain_images_one_row(items[0]), tmp_path / "sub" / "a.png", panel_size=1.6, dpi=60)
    assert (tmp_path / "sub" / "a.png").read_bytes() == data
    one_row = _png(data)
    assert one_row.shape[1] > 2 * one_row.shape[0]  # three panels side by side
    assert one_row.shape[0] < height  # one row per explained class
    # the panels are not empty: many distinct colours (input noise, explanation, colour map)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 500


def explain_images_one_row(item):
    from dataclasses import replace

    return replace(item, explanations=item.explanations[:1])


# ------------------------------------------------------------------------------------ HTML
def test_html_report_is_self_contained_and_escaped(items, pngs, tmp_path):
    path = write_html_report(items, tmp_path / "report.html", title="Tiny <model>", details={"model": "resnet20"}, pngs=pngs)
    text = path.read_text(encoding="utf-8")
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(embedded) == len(items)
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", text)  # nothing fetched from elsewhere
    assert "<script>" not in text and "&lt;script&gt;c&lt;/script&gt;.png" in text
    assert "Tiny &lt;model&gt;" in text and "resnet20" in text
    assert "category_" in text and "How to read this" in text
    assert HOW_TO_READ.split(":")[0] in text
    # the numbers in the completeness line match the record
    first = items[0].explanations[0]
    assert f"logit {first.logit:.3f}" in text


def test_html_report_renders_missing_pngs(items, pngs, tmp_path):
    path = write_html_report(items[:1], tmp_path / "own.html")
    assert len(re.findall(r"data:image/png;base64,", path.read_text())) == 1
    path = write_html_report([item.without_pixels() for item in items], tmp_path / "r.html", pngs=pngs)
    text = path.read_text()
    import base64

    assert base64.b64encode(pngs[1]).decode() in text
    with pytest.raises(InputError, match="one per image"):
        write_html_report(items, tmp_path / "x.html", pngs=pngs[:1])


# ------------------------------------------------------------------------------------ Chromium
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_headless_chromium(items, pngs, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")
    report = write_html_report(items, tmp_path / "report.html", title="Chromium check", pngs=pngs)
    screenshot = tmp_path / "shot.png"
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}", "--window-size=1200,900",
        f"file://{report}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert screenshot.is_file(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    image = np.asarray(Image.open(screenshot).convert("RGB")).astype(np.int16)
    assert image.shape[:2] == (900, 1200)
    background = np.array([250, 250, 250])  # the page's background colour
    differs = np.abs(image - background).sum(axis=2) > 30
    assert differs.mean() > 0.05, "the screenshot is (almost) blank"
    # the embedded explanation images were decoded and drawn: many distinct colours on the page
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 1000
