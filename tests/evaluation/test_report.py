"""Pictures and the HTML page of an evaluation report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dsifn.evaluation.report import (
    ReportWriter,
    error_map,
    mask_to_gray,
    safe_name,
)
from dsifn.evaluation.results import EvaluationResult, Prediction
from dsifn.evaluation.scoring import image_result
from dsifn.io.pictures import display_stretch, write_png


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


def test_display_stretch_shows_both_dates_alike_and_masks_as_grey():
    bright = np.zeros((3, 2, 2), np.float32)
    bright[0, 0, 0], bright[1, 0, 1], bright[2, 1, 0] = 1.0, 0.5, 1.0
    shown = display_stretch([bright])[0]  # bright enough: as it is
    assert shown[0, 0].tolist() == [255, 0, 0] and shown[0, 1].tolist() == [0, 128, 0]
    before = np.zeros((4, 10, 10), np.float32)
    before[0] = np.linspace(0.0, 0.1, 100).reshape(10, 10)  # dark, 16-bit-like: stretched
    after = before.copy()
    after[1] = 0.05
    pictures = display_stretch([before, after], [np.ones((10, 10), bool)] * 2)
    assert [p.shape for p in pictures] == [(10, 10, 3)] * 2 and pictures[0].dtype == np.uint8
    assert pictures[0][..., 0].max() == 255 and pictures[0][..., 0].min() == 0
    np.testing.assert_array_equal(pictures[0][..., 0], pictures[1][..., 0])  # one stretch
    grey = display_stretch([np.arange(4, dtype=np.float32).reshape(1, 2, 2)])[0]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert mask_to_gray(torch.tensor([[[0.0, 1.0]]])).tolist() == [[0, 255]]


def test_png_pixels_without_data_are_transparent(tmp_path):
    pixels = np.array([[0, 255], [255, 0]], np.uint8)
    write_png(tmp_path / "all.png", pixels, valid=np.ones((2, 2), bool))
    assert Image.open(tmp_path / "all.png").mode == "L"  # no alpha when all pixels have data
    write_png(tmp_path / "some.png", pixels, valid=np.array([[1, 1], [0, 1]], bool))
    with Image.open(tmp_path / "some.png") as image:
        assert image.mode == "LA"
        assert np.asarray(image)[..., 1].tolist() == [[255, 255], [0, 255]]
    with pytest.raises(FileExistsError):
        write_png(tmp_path / "all.png", pixels)


def test_safe_name():
    assert safe_name("../a b/c") == "_a_b_c"
    assert safe_name("tile_01.x") == "tile_01.x"


def _prediction(name, pred, ref):
    pred_t = torch.tensor(pred, dtype=torch.bool)[None]
    mask, valid = torch.tensor(ref, dtype=torch.float32)[None], torch.ones_like(pred_t)
    return Prediction(
        name=name,
        image=torch.rand(2, 3, *pred_t.shape[-2:]),
        mask=mask,
        valid=valid,
        has_data=torch.ones_like(pred_t),
        probability=pred_t.float(),
        prediction=pred_t,
        result=image_result(name, pred_t.float(), mask, valid, 0.5),
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
