"""The comparison's table, picture and pair choice, on records made by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dsifn.compare.figures import plot_comparison
from dsifn.compare.page import choose_pairs
from dsifn.compare.table import Spread, csv_text, json_data, markdown, summarise


def _record(model: str, seed: int, f1: float, steps: int) -> dict[str, Any]:
    scores = dict.fromkeys(("precision", "recall", "iou", "oa", "kappa"), 0.5) | {"f1": f1}
    return {
        "model": model,
        "title": model.upper(),
        "seed": seed,
        "config": {"not": "shown"},
        "threshold": 0.5,
        "scores": scores,
        "parameters": 1_000_000,
        "flops_per_pair": 2_000_000_000,
        "flops_size": 64,
        "training": {"steps": steps, "pairs_per_second": 10.0},
        "inference": {"pairs_per_second": 100.0},
        # Thresholds 0, 0.5, 1: all predicted changed, half the change found, nothing.
        "pr": {"tp": [10, 5, 0], "fp": [90, 5, 0], "fn": [0, 5, 10], "tn": [0, 85, 90]},
    }


def test_a_spread_is_the_mean_and_sample_deviation_over_seeds() -> None:
    assert Spread.of([0.8, 0.9]) == Spread(
        pytest.approx(0.85), pytest.approx(0.0707, abs=1e-4), (0.8, 0.9)
    )
    one = Spread.of([0.8])
    assert one.std is None and one.percent() == "80.00"
    assert Spread.of([0.8, 0.9]).percent() == "85.00 ± 7.07"


def test_summaries_pool_the_seeds_of_each_network_in_order() -> None:
    records = [_record("b", 0, 0.8, 10), _record("a", 0, 0.6, 20), _record("b", 1, 0.9, 12)]
    b, a = summarise(records)
    assert (b.model, b.seeds, a.seeds) == ("b", (0, 1), (0,))
    assert b.scores["f1"].mean == pytest.approx(0.85) and a.scores["f1"].std is None
    assert b.steps.mean == 11
    # Pooled counts: at threshold 1 nothing is predicted, so that point has no precision.
    assert b.pr_curve == ((1.0, 0.5), (0.1, 0.5))
    table = markdown([b, a], ["a note"]).splitlines()
    assert table[0].startswith("| Network | Parameters | GFLOPs/pair (64²) | F1 % |")
    assert table[2].startswith("| B | 1.00 M | 2.0 | 85.00 ± 7.07 | 50.00 ± 0.00 |")
    assert table[2].endswith("| 0.500 | 11 ± 1 | 10.0 | 100.0 |")
    assert table[3].startswith("| A | 1.00 M | 2.0 | 60.00 | 50.00 |") and table[-1] == "- a note"
    rows = csv_text([b, a]).splitlines()
    assert rows[0].startswith("model,title,seeds,f1_mean,f1_std,precision_mean")
    assert rows[2].startswith("a,A,0,0.6,,0.5,,")
    data = json_data([b, a], records, {"details": {"x": math.nan}})
    assert data["details"] == {"x": None} and data["models"][1]["test_f1"]["std"] is None
    assert "config" not in data["runs"][0]


def test_the_picture_is_drawn(tmp_path: Path) -> None:
    summaries = summarise([_record("b", 0, 0.8, 10), _record("b", 1, 0.9, 12)])
    path = plot_comparison(summaries, tmp_path / "c.png", title="t")
    with Image.open(path) as picture:
        assert picture.format == "PNG"


def test_pairs_are_chosen_evenly_among_those_with_change() -> None:
    counts = {f"p{i}": ([1, 0, 0, 9] if i % 2 else [0, 1, 0, 9]) for i in range(10)}
    assert choose_pairs(counts, 3) == ["p1", "p5", "p9"]  # the odd ones hold change
    assert choose_pairs(counts, 0) == []
    assert choose_pairs({"a": [0, 0, 0, 1], "b": [0, 0, 1, 0]}, 2) == ["a", "b"]  # too few
