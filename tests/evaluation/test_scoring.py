"""Evaluation end to end through the CLI, on a tiny generated LEVIR-style folder."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsifn import DSIFN, load_checkpoint, save_checkpoint
from dsifn.cli.main import main
from dsifn.contract import InputContract
from dsifn.data import ChangeDetectionDataset, DataConfig
from dsifn.evaluation.report import error_map
from dsifn.evaluation.results import image_f1
from dsifn.evaluation.scoring import (
    difference_scores,
    evaluate,
    evaluate_scorer,
    resolve_threshold,
    score_batches,
)
from dsifn.metrics import ThresholdSweep
from fixtures.datasets import write_levir

SIZE = 32
PAIRS = {"train": 1, "val": 2, "test": 2}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("eval")
    counts = (PAIRS["train"], PAIRS["val"], PAIRS["test"])
    data = write_levir(base / "levir", size=SIZE, counts=counts, noise=0)
    torch.manual_seed(0)
    model = DSIFN(encoder_weights=None, dropout=0.0).eval()
    # An untrained net predicts nearly the same logit everywhere: stretch its finest head so
    # that probabilities spread on both sides of 0.5 and every confusion count is non-zero.
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        logits = model(x, x.flip(0)).stride1
        head = model.heads[-1]
        head.weight.mul_(2.0 / logits.std())
        head.bias.mul_(2.0 / logits.std())
        head.bias.sub_(model(x, x.flip(0)).stride1.median())
    checkpoint = save_checkpoint(
        base / "model.pt", model, meta={"source": "test"}, optimizer={"step": 7}
    )
    return {"base": base, "data": data, "checkpoint": checkpoint, "model": model}


def reference_probabilities(model: DSIFN, data: Path, split: str) -> list[tuple]:
    """(probability, reference) per pair, computed independently: PIL reads, plain forward."""
    norm = model.config.input_normalization
    pairs = []
    for path in sorted((data / split / "A").glob("*.png")):
        t1 = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
        t2 = np.asarray(Image.open(data / split / "B" / path.name).convert("RGB"), np.float32) / 255
        ref = np.asarray(Image.open(data / split / "label" / path.name)) > 0
        x1 = torch.from_numpy(t1).permute(2, 0, 1)[None]
        x2 = torch.from_numpy(t2).permute(2, 0, 1)[None]
        with torch.no_grad():
            prob = torch.sigmoid(model(norm(x1), norm(x2)).stride1)[0, 0].numpy()
        pairs.append((prob, ref))
    return pairs


def scores_at(pairs: list[tuple], threshold: float) -> dict:
    """Confusion counts and scores of the change class, by their textbook formulas."""
    tp = fp = fn = tn = 0
    for prob, ref in pairs:
        pred = prob > threshold
        tp += int((pred & ref).sum())
        fp += int((pred & ~ref).sum())
        fn += int((~pred & ref).sum())
        tn += int((~pred & ~ref).sum())
    n = tp + fp + fn + tn
    out = {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "f1": 2 * tp / max(2 * tp + fp + fn, 1)}
    if tp + fp and tp + fn:
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        oa = (tp + tn) / n
        expected = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n**2
        out |= {
            "precision": precision,
            "recall": recall,
            "iou": tp / (tp + fp + fn),
            "oa": oa,
            "kappa": (oa - expected) / (1 - expected),
        }
    return out


def run_cli(*args: str) -> int:
    return main(["evaluate", "--device", "cpu", "--precision", "fp32", *args])


@pytest.fixture(scope="module")
def full_run(workspace) -> dict:
    """One CLI evaluation with every output, shared by the tests that read its files."""
    out = workspace["base"] / "full"
    argv = [
        "--checkpoint", str(workspace["checkpoint"]), "--data", str(workspace["data"]),
        "--split", "test", "--out", str(out), "--threshold", "0.45",
        "--report", "--save-masks", "--save-errors", "--batch-size", "2",
    ]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = run_cli(*argv)
    probs = reference_probabilities(workspace["model"], workspace["data"], "test")
    return {"code": code, "out": out, "argv": argv, "probs": probs, "printed": printed.getvalue()}


def test_metrics_json_matches_independent_computation(full_run):
    assert full_run["code"] == 0
    metrics = json.loads((full_run["out"] / "metrics.json").read_text())
    ref = scores_at(full_run["probs"], 0.45)
    assert ref["tp"] > 0 and ref["fp"] > 0 and ref["fn"] > 0  # a non-trivial case
    assert metrics["threshold"] == 0.45
    assert metrics["confusion"] == {k: ref[k] for k in ("tp", "fp", "fn", "tn")}
    for key in ("precision", "recall", "f1", "iou", "oa", "kappa"):
        assert metrics["scores"][key] == pytest.approx(ref[key], abs=1e-9), key
    assert metrics["images"] == PAIRS["test"]
    assert metrics["pixels"] == PAIRS["test"] * SIZE * SIZE
    assert len(metrics["per_image"]) == PAIRS["test"]
    assert sum(r["tp"] for r in metrics["per_image"]) == ref["tp"]


def test_printed_table(full_run):
    printed = full_run["printed"]
    ref = scores_at(full_run["probs"], 0.45)
    assert "found LEVIR-CD" in printed
    assert f"{'F1':<10} {100 * ref['f1']:7.2f} %" in printed
    assert f"{'kappa':<10} {100 * ref['kappa']:7.2f} %" in printed
    assert f"{ref['tp']:,d}" in printed and f"{ref['tn']:,d}" in printed
    assert "threshold  0.45" in printed


def test_report_masks_and_error_maps(full_run, workspace):
    out = full_run["out"]
    page = (out / "report.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    for (prob, ref), name in zip(full_run["probs"], ("test_0", "test_1"), strict=True):
        mask = np.asarray(Image.open(out / "masks" / f"{name}.png"))
        np.testing.assert_array_equal(mask, np.where(prob > 0.45, 255, 0))
        errors = np.asarray(Image.open(out / "errors" / f"{name}.png"))
        np.testing.assert_array_equal(errors, error_map(prob > 0.45, ref))
        for kind in ("before", "after", "reference"):
            picture = f"report/{name}_{kind}.png"
            assert (out / picture).is_file()
            assert f'src="{picture}"' in page
        assert f'src="errors/{name}.png"' in page and f'src="masks/{name}.png"' in page
    before = np.asarray(Image.open(out / "report" / "test_0_before.png"))
    t1 = np.asarray(Image.open(workspace["data"] / "test" / "A" / "test_0.png"))
    np.testing.assert_array_equal(before, t1)
    # Rows sorted from the worst F1 to the best.
    by_f1 = sorted(
        metrics["per_image"], key=lambda r: (image_f1(r["tp"], r["fp"], r["fn"]), r["name"])
    )
    positions = [page.index(f'src="report/{r["name"]}_before.png"') for r in by_f1]
    assert positions == sorted(positions)
    assert f"{100 * metrics['scores']['f1']:.2f}" in page


def test_refuses_to_overwrite_without_flag(full_run, capsys):
    out = full_run["out"]
    before = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert run_cli(*full_run["argv"]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (out / "metrics.json").read_bytes() == before


def test_default_threshold_comes_from_checkpoint(workspace, full_run, tmp_path):
    checkpoint = save_checkpoint(
        tmp_path / "with_threshold.pt", workspace["model"], meta={"threshold": 0.55}
    )
    out = tmp_path / "eval"
    args = ["--checkpoint", str(checkpoint), "--data", str(workspace["data"]), "--out", str(out)]
    assert run_cli(*args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threshold"] == 0.55
    assert metrics["confusion"]["fp"] == scores_at(full_run["probs"], 0.55)["fp"]


def test_tune_threshold_is_stored_in_checkpoint(workspace, tmp_path, capsys):
    checkpoint = tmp_path / "tuned.pt"
    checkpoint.write_bytes(workspace["checkpoint"].read_bytes())
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("old")
    code = run_cli(
        "--checkpoint", str(checkpoint), "--data", str(workspace["data"]), "--out", str(out),
        "--tune-threshold", "--overwrite",
    )  # fmt: skip
    assert code == 0
    model = load_checkpoint(checkpoint)
    tuned = InputContract.of(model).threshold
    assert model.checkpoint_meta["source"] == "test"  # other meta kept
    assert "val split" in model.checkpoint_meta["threshold_source"]
    assert torch.load(checkpoint, weights_only=True)["optimizer"] == {"step": 7}  # extras kept
    for key, value in workspace["model"].state_dict().items():
        assert torch.equal(value, model.state_dict()[key])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "tuned.pt"]  # no temp file
    assert f"tuned threshold {tuned:.4g}" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["threshold"] == tuned  # --overwrite
    # It is the F1-best on the validation split: no threshold of a fine grid beats it.
    val = reference_probabilities(model, workspace["data"], "val")
    best = scores_at(val, tuned)["f1"]
    assert best > 0
    for other in np.linspace(0.01, 0.99, 99):
        assert best >= scores_at(val, float(other))["f1"] - 1e-12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "nosuch"], "split 'nosuch' not found"),
        (["--threshold", "1.5"], "threshold must be in [0, 1]"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--report"], "need --out"),
        (["--tune-threshold", "--threshold", "0.3"], "not both"),
    ],
)
def test_bad_options_give_one_line(workspace, capsys, args, message):
    base = ["--checkpoint", str(workspace["checkpoint"]), "--data", str(workspace["data"])]
    assert run_cli(*base, *args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsifn evaluate: error:")
    assert message in lines[0]


def test_bad_checkpoint_and_missing_data(workspace, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    assert run_cli("--checkpoint", str(junk), "--data", str(workspace["data"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a file written by torch.save" in err[0]
    assert run_cli("--checkpoint", str(tmp_path / "none.pt"), "--data", str(workspace["data"])) == 2
    assert "does not exist" in capsys.readouterr().err
    missing = tmp_path / "nodata"
    assert run_cli("--checkpoint", str(workspace["checkpoint"]), "--data", str(missing)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]


def test_band_mismatch_is_one_line(workspace, tmp_path, capsys):
    gray = tmp_path / "gray"
    for folder in ("A", "B", "label"):
        (gray / "test" / folder).mkdir(parents=True)
        Image.new("L", (SIZE, SIZE)).save(gray / "test" / folder / "x.png")
    assert run_cli("--checkpoint", str(workspace["checkpoint"]), "--data", str(gray)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "1 band(s) per image but the model takes 3" in err[0]


def test_evaluate_api_per_image_counts_add_up(workspace):
    model = workspace["model"]
    dataset = ChangeDetectionDataset(DataConfig(root=str(workspace["data"])), "test")
    seen = []
    result = evaluate(
        model, dataset, device="cpu", precision="fp32", batch_size=2, progress=False,
        per_image=True, on_prediction=seen.append,
    )  # fmt: skip
    assert result.threshold == 0.5 and result.images == 2
    assert [r.name for r in result.per_image] == ["test_0", "test_1"]
    for key in ("tp", "fp", "fn", "tn"):
        assert sum(getattr(r, key) for r in result.per_image) == getattr(result, key)
    assert [p.name for p in seen] == ["test_0", "test_1"]
    first = seen[0]
    assert first.probability.shape == (1, SIZE, SIZE)
    assert torch.equal(first.prediction, first.probability > 0.5)
    assert result.per_image[0].tp == int((first.prediction & (first.mask > 0)).sum())


def test_difference_baseline_scores_change():
    images = torch.zeros(1, 2, 3, 4, 4)
    images[0, 1, :, 1, 2] = 0.9  # one pixel changes in all bands
    images[0, 1, 0, 3, 3] = 0.3  # another changes in one band only
    scores = difference_scores(images)
    assert scores.shape == (1, 1, 4, 4)
    assert scores[0, 0, 1, 2] == pytest.approx(0.9)
    assert scores[0, 0, 3, 3] == pytest.approx(0.1)
    assert scores.sum() == pytest.approx(1.0)


def test_difference_baseline_is_perfect_on_clean_data(workspace):
    # In the fixture T2 differs from T1 only where the label says change.
    dataset = ChangeDetectionDataset(DataConfig(root=str(workspace["data"])), "test")
    result = evaluate_scorer(difference_scores, dataset, threshold=0.001, progress=False)
    assert result.fp == 0 and result.fn == 0 and result.scores["f1"] == 1.0


def test_resolve_threshold_order():
    model = DSIFN(encoder_weights=None)
    assert resolve_threshold(None, model) == 0.5
    model.checkpoint_meta = {"threshold": 0.3}
    assert resolve_threshold(None, model) == 0.3
    assert resolve_threshold(0.7, model) == 0.7


def test_evaluation_reads_the_data_as_an_older_checkpoint_trained():
    from dsifn.contract import InputContract
    from dsifn.data import reading_config

    config = DSIFN(encoder_weights=None).config
    defaults = InputContract.from_meta({}, config)
    assert defaults.origin == "defaults"
    assert reading_config(defaults, "x").scaling_rule().rule == "dtype"
    meta = {"training": {"data": {"bands": [3, 2, 1], "scale": 4095.0, "nodata": None}}}
    older = InputContract.from_meta(meta, config)
    data = reading_config(older, "x")
    assert older.origin == "training config"
    assert (data.bands, data.scale, data.nodata) == ((3, 2, 1), 4095.0, None)


def test_scoring_core_counts_once_for_matrix_sweep_and_images():
    generator = torch.Generator().manual_seed(0)
    batches = []
    for first in (0, 2):
        batches.append(
            {
                "image": torch.rand(2, 2, 3, 8, 8, generator=generator),
                "mask": (torch.rand(2, 1, 8, 8, generator=generator) > 0.5).float(),
                "valid": torch.rand(2, 1, 8, 8, generator=generator) > 0.2,
                "name": [f"p{first}", f"p{first + 1}"],
            }
        )
    seen = []
    sweep = ThresholdSweep(bins=100)
    result = score_batches(
        batches,
        lambda batch: batch["image"][:, 1, :1],  # a "probability" that is T2's first band
        threshold=0.3,
        per_image=True,
        on_prediction=seen.append,
        sweep=sweep,
    )
    # The textbook counts over the valid pixels of each image.
    pixels = [
        (b["image"][i, 1, 0][b["valid"][i, 0]].numpy(), (b["mask"][i, 0] > 0)[b["valid"][i, 0]])
        for b in batches
        for i in range(2)
    ]
    expected = scores_at([(prob, truth.numpy()) for prob, truth in pixels], 0.3)
    assert expected["tp"] > 0 and expected["fp"] > 0 and expected["fn"] > 0
    assert (result.tp, result.fp, result.fn, result.tn) == tuple(
        expected[k] for k in ("tp", "fp", "fn", "tn")
    )
    assert result.images == 4 and [r.name for r in result.per_image] == ["p0", "p1", "p2", "p3"]
    assert sum(r.fp for r in result.per_image) == result.fp
    assert sweep.counts_at(0.3) == (result.tp, result.fp, result.fn, result.tn)
    assert [p.name for p in seen] == ["p0", "p1", "p2", "p3"]
    assert torch.equal(seen[3].prediction, seen[3].probability > 0.3)
