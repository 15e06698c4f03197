"""Pictures and the HTML page of an evaluation report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dsifn.evaluation.report import (
    ReportWriter,
    error_map,
    image_to_rgb,
    mask_to_gray,
    safe_name,
)
from dsifn.evaluation.results import EvaluationResult, Prediction


def test_error_map_colours_on_a_hand_made_case():
    pred = np.array([[1, 1, 0, 0, 1]], bool)
    ref = np.array([[1, 0, 1, 0, 1]], bool)
    valid = np.array([[1, 1, 1, 1, 0]], bool)
    rgb = error_map(pred, ref, valid)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 5, 3)
    assert rgb[0].tolist() == [
        [255, 255, 255],  # true positive: white
        [255, 0, 0],  # false positive: red
        [0, 255, 0],  # false negative: green
        [0, 0, 0],  # true negative: black
        [128, 128, 128],  # not labelled: grey
    ]


def test_error_map_accepts_tensors_with_a_channel_axis():
    pred = torch.tensor([[[True, False], [False, True]]])
    ref = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    rgb = error_map(pred, ref)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [0, 255, 0]
    assert rgb[1, 0].tolist() == [0, 0, 0]
    assert rgb[1, 1].tolist() == [255, 0, 0]
    with pytest.raises(ValueError, match="differ in shape"):
        error_map(np.zeros((2, 2)), np.zeros((3, 3)))


def test_image_to_rgb_and_masks():
    image = torch.zeros(4, 2, 2)
    image[0, 0, 0], image[1, 0, 1], image[2, 1, 0] = 1.0, 0.5, 1.0
    image[3] = 0.7
    rgb = image_to_rgb(image)
    assert rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[0, 1].tolist() == [0, 128, 0]
    assert rgb[1, 0].tolist() == [0, 0, 255]
    gray = image_to_rgb(torch.full((1, 2, 2), 0.5))  # one band: grey
    assert gray[0, 0].tolist() == [128, 128, 128]
    dark = torch.linspace(0.0, 0.1, 100).reshape(1, 10, 10)  # 16-bit-like: stretched
    stretched = image_to_rgb(dark)
    assert stretched.max() == 255 and stretched.min() == 0
    assert mask_to_gray(torch.tensor([[[0.0, 1.0]]])).tolist() == [[0, 255]]


def test_safe_name():
    assert safe_name("../a b/c") == "_a_b_c"
    assert safe_name("tile_01.x") == "tile_01.x"


def _prediction(name, pred, ref):
    pred_t = torch.tensor(pred, dtype=torch.bool)[None]
    return Prediction(
        name=name,
        image=torch.rand(2, 3, *pred_t.shape[-2:]),
        mask=torch.tensor(ref, dtype=torch.float32)[None],
        valid=torch.ones_like(pred_t),
        probability=pred_t.float(),
        prediction=pred_t,
    )


def test_report_writer_sorts_worst_first(tmp_path):
    writer = ReportWriter(tmp_path, report=True)
    good = _prediction("good", [[1, 0], [0, 0]], [[1, 0], [0, 0]])  # F1 1
    bad = _prediction("bad", [[0, 1], [1, 0]], [[1, 0], [0, 0]])  # F1 0
    half = _prediction("half", [[1, 1], [0, 0]], [[1, 0], [0, 0]])  # F1 2/3
    for item in (good, bad, half):
        writer(item)
    result = EvaluationResult(
        scores=dict.fromkeys(("precision", "recall", "f1", "iou", "oa", "kappa"), 0.5),
        tp=2, fp=3, fn=1, tn=6, threshold=0.5, images=3,
    )  # fmt: skip
    page = writer.write_html(result, details={"split": "test"}, comparison=[("other", result)])
    text = page.read_text()
    assert text.index("bad_before") < text.index("half_before") < text.index("good_before")
    assert "<b>split</b>: test" in text and "other" in text
    for name in ("good", "bad", "half"):
        for kind in ("before", "after", "reference"):
            assert (tmp_path / "report" / f"{name}_{kind}.png").is_file()
        errors = np.asarray(Image.open(tmp_path / "errors" / f"{name}.png"))
        assert errors.shape == (2, 2, 3)
    bad_errors = np.asarray(Image.open(tmp_path / "errors" / "bad.png"))
    assert bad_errors[0, 0].tolist() == [0, 255, 0] and bad_errors[0, 1].tolist() == [255, 0, 0]
    with pytest.raises(FileExistsError):
        writer.write_html(result)  # no overwrite without asking


def test_report_writer_keeps_names_that_sanitise_alike_apart(tmp_path):
    writer = ReportWriter(tmp_path, masks=True)
    writer(_prediction("a/b", [[1]], [[1]]))
    writer(_prediction("a_b", [[0]], [[1]]))
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["a_b.png", "a_b_2.png"]
    assert not (tmp_path / "errors").exists() and not (tmp_path / "report").exists()
