"""Confusion-matrix scores on hand-computed cases, conventions, sweeps and distributed sums."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dsifn.errors import ConfigError, DataError, InputError
from dsifn.metrics import ConfusionMatrix, ThresholdSweep, scores_from_confusion

# A 2x3 example worked out by hand.
PROB = torch.tensor([[[0.9, 0.2, 0.6], [0.4, 0.7, 0.1]]])  # (1, 2, 3)
TARGET = torch.tensor([[[1, 0, 0], [1, 1, 0]]])
VALID = torch.tensor([[[True, True, False], [True, True, False]]])


def row(values, dtype=None):
    return torch.tensor(values, dtype=dtype).view(1, 1, -1)


def approx(d):
    return {k: pytest.approx(v, rel=1e-12) for k, v in d.items()}


def random_batch(seed, shape=(2, 1, 17, 23)):
    gen = torch.Generator().manual_seed(seed)
    prob = torch.rand(shape, generator=gen)
    target = (torch.rand(shape, generator=gen) < 0.3).long()
    valid = torch.rand(shape, generator=gen) > 0.2
    return prob, target, valid


def test_hand_computed_example():
    cm = ConfusionMatrix(threshold=0.5)
    cm.update(PROB, TARGET)
    # Predicted changed: 0.9, 0.6, 0.7. TP = (0,0),(1,1); FP = (0,2); FN = (1,0); TN = 2.
    assert (cm.tp, cm.fp, cm.fn, cm.tn) == (2, 1, 1, 2)
    assert isinstance(cm.tp, int)
    # pe = (3*3 + 3*3) / 36 = 1/2, oa = 4/6, kappa = (2/3 - 1/2) / (1/2) = 1/3.
    expected = {
        "precision": 2 / 3,
        "recall": 2 / 3,
        "f1": 2 / 3,
        "iou": 2 / 4,
        "oa": 4 / 6,
        "kappa": 1 / 3,
    }
    assert cm.scores() == approx(expected)
    assert cm.as_dict() == {"threshold": 0.5, "tp": 2, "fp": 1, "fn": 1, "tn": 2} | approx(expected)


def test_hand_computed_valid_mask_and_shape_b1hw():
    cm = ConfusionMatrix()
    cm.update(PROB.unsqueeze(1), TARGET.unsqueeze(1), VALID.unsqueeze(1))
    # Column 2 (an FP and a TN) is masked out.
    assert (cm.tp, cm.fp, cm.fn, cm.tn) == (2, 0, 1, 1)
    # pe = (2*3 + 2*1) / 16 = 1/2, oa = 3/4, kappa = 1/2.
    expected = {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "iou": 2 / 3, "oa": 0.75}
    expected["kappa"] = 0.5
    assert cm.scores() == approx(expected)


def test_hand_computed_thresholds():
    cm = ConfusionMatrix(threshold=0.65)
    cm.update(PROB, TARGET)
    # Only 0.9 and 0.7 pass: TP 2, FP 0, FN 1, TN 3; pe = (2*3 + 4*3)/36 = 1/2.
    assert cm.counts == (2, 0, 1, 3)
    assert cm.scores()["kappa"] == pytest.approx((5 / 6 - 0.5) / 0.5)
    # Strictly greater: a probability equal to the threshold is not change (0.75 is exact in
    # float32; float32(0.6) would be slightly above 0.6 and count as change, correctly).
    cm = ConfusionMatrix(threshold=0.75)
    cm.update(row([0.75, 0.7500001]), row([1, 1]))
    assert cm.counts == (1, 0, 1, 0)
    cm = ConfusionMatrix(threshold=0.0)
    cm.update(row([0.0, 1e-7]), row([0, 0]))
    assert cm.counts == (0, 1, 0, 1)


def test_scores_from_confusion_larger_case():
    # N = 1000; pe = (40*50 + 960*950) / 1e6 = 0.914; kappa = (0.97 - 0.914) / 0.086.
    scores = scores_from_confusion(30, 10, 20, 940)
    expected = {
        "precision": 0.75,
        "recall": 0.6,
        "f1": 60 / 90,
        "iou": 0.5,
        "oa": 0.97,
        "kappa": 0.056 / 0.086,
    }
    assert scores == {k: pytest.approx(v, rel=1e-9) for k, v in expected.items()}


def test_zero_denominator_conventions():
    # No change in the reference and nothing predicted: perfect.
    assert scores_from_confusion(0, 0, 0, 5) == dict.fromkeys(
        ("precision", "recall", "f1", "iou", "oa", "kappa"), 1.0
    )
    # Nothing predicted but change in the reference: precision, recall, f1, iou all 0.
    s = scores_from_confusion(0, 0, 3, 5)
    assert (s["precision"], s["recall"], s["f1"], s["iou"]) == (0.0, 0.0, 0.0, 0.0)
    assert s["oa"] == 5 / 8 and s["kappa"] == 0.0
    # Change predicted where the reference has none: recall (0/0) is 0, not 1.
    s = scores_from_confusion(0, 2, 0, 5)
    assert (s["precision"], s["recall"], s["f1"], s["iou"]) == (0.0, 0.0, 0.0, 0.0)
    # Everything changed and found: pe == 1 and oa == 1 -> kappa 1.
    assert scores_from_confusion(4, 0, 0, 0)["kappa"] == 1.0
    # Empty matrix: NaN everywhere.
    assert all(math.isnan(v) for v in scores_from_confusion(0, 0, 0, 0).values())
    cm = ConfusionMatrix()
    cm.update(PROB, TARGET, torch.zeros_like(VALID))
    assert cm.total == 0 and math.isnan(cm.scores()["f1"])
    with pytest.raises(InputError):
        scores_from_confusion(-1, 0, 0, 0)


def test_counts_are_summed_not_averaged_per_batch():
    # One perfect empty batch and one bad batch: per-batch F1 mean would be (1 + 0) / 2.
    cm = ConfusionMatrix()
    cm.update(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))
    cm.update(row([0.9, 0.1, 0.1, 0.1]), row([0, 1, 1, 1]))
    assert cm.counts == (0, 1, 3, 4)
    assert cm.scores()["f1"] == 0.0


def test_merge_equals_accumulating_at_once():
    batches = [random_batch(seed) for seed in range(4)]
    together = ConfusionMatrix(0.4)
    together.update(*(torch.cat(parts) for parts in zip(*batches, strict=True)))
    first, second = ConfusionMatrix(0.4), ConfusionMatrix(0.4)
    for b in batches[:2]:
        first.update(*b)
    for b in batches[2:]:
        second.update(*b)
    assert first.merge(second).counts == together.counts
    assert together.total == sum(int(b[2].sum()) for b in batches)
    with pytest.raises(ConfigError, match="threshold"):
        first.merge(ConfusionMatrix(0.5))
    first.reset()
    assert first.counts == (0, 0, 0, 0)


def test_bad_inputs():
    cm = ConfusionMatrix()
    with pytest.raises(InputError, match="sigmoid"):
        cm.update(PROB * 4 - 2, TARGET)
    with pytest.raises(InputError, match="0/255"):
        cm.update(PROB, TARGET * 255)
    with pytest.raises(InputError, match="differs"):
        cm.update(PROB, TARGET[..., :2])
    with pytest.raises(InputError, match="float"):
        cm.update(TARGET, TARGET)
    with pytest.raises(InputError, match="sigmoid"):
        cm.update(torch.full((1, 2, 2), float("nan")), torch.zeros(1, 2, 2))
    with pytest.raises(ConfigError):
        ConfusionMatrix(threshold=1.5)
    with pytest.raises(ConfigError):
        ThresholdSweep(bins=0)


def brute_force_best(batches, thresholds, metric):
    best_value, best_thresholds = -math.inf, []
    for t in thresholds:
        cm = ConfusionMatrix(t)
        for b in batches:
            cm.update(*b)
        value = cm.scores()[metric]
        if value > best_value:
            best_value, best_thresholds = value, [t]
        elif value == best_value:
            best_thresholds.append(t)
    return best_value, best_thresholds


@pytest.mark.parametrize("metric", ["f1", "iou", "kappa"])
def test_sweep_agrees_with_brute_force(metric):
    bins = 40
    batches = [random_batch(seed) for seed in (10, 11)]
    # Probabilities on grid points and at the ends, where > and >= would differ.
    grid = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 0.1, 0.3, 0.7])
    batches.append((grid.view(1, 1, 2, 4), torch.tensor([0, 1, 1, 1, 1, 0, 1, 0]).view(1, 1, 2, 4)))
    sweep = ThresholdSweep(bins=bins)
    for b in batches:
        sweep.update(*b)
    thresholds = [k / bins for k in range(bins + 1)]
    assert sweep.thresholds == thresholds
    confusion = sweep.confusion()
    for t, counts in zip(thresholds, confusion, strict=True):
        cm = ConfusionMatrix(t)
        for b in batches:
            cm.update(*b)
        assert counts == cm.counts, t
    value, winners = brute_force_best(batches, thresholds, metric)
    threshold, scores = sweep.best(metric)
    assert threshold in winners
    assert scores[metric] == pytest.approx(value)
    assert sweep.counts_at(threshold) == confusion[round(threshold * bins)]


def test_sweep_separable_data_picks_middle_of_plateau():
    # Unchanged pixels all below 0.2, changed all above 0.8: every threshold in [0.2, 0.8)
    # is perfect; the middle of that run is returned.
    prob = row([0.05, 0.1, 0.2, 0.85, 0.9, 0.95])
    target = row([0, 0, 0, 1, 1, 1])
    sweep = ThresholdSweep(bins=10)
    sweep.update(prob, target)
    threshold, scores = sweep.best("f1")
    assert scores["f1"] == 1.0
    assert threshold == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="metric"):
        sweep.best("accuracy")  # type: ignore[arg-type]
    with pytest.raises(DataError):
        ThresholdSweep().best()


def test_sweep_merge_and_valid_mask():
    a, b = random_batch(20), random_batch(21)
    merged = ThresholdSweep(bins=16)
    merged.update(*a)
    other = ThresholdSweep(bins=16)
    other.update(*b)
    merged.merge(other)
    together = ThresholdSweep(bins=16)
    together.update(*(torch.cat(p) for p in zip(a, b, strict=True)))
    assert merged.confusion() == together.confusion()
    assert sum(together.confusion()[0]) == int(a[2].sum() + b[2].sum())
    with pytest.raises(ConfigError):
        merged.merge(ThresholdSweep(bins=8))


def test_all_reduce_is_a_no_op_without_distributed():
    cm = ConfusionMatrix()
    cm.update(PROB, TARGET)
    cm.all_reduce()
    assert cm.counts == (2, 1, 1, 2)


def _distributed_worker(rank, tmp):
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=2)
    try:
        cm = ConfusionMatrix()
        sweep = ThresholdSweep(bins=10)
        batch = random_batch(100 + rank)
        cm.update(*batch)
        sweep.update(*batch)
        cm.all_reduce()
        sweep.all_reduce()
        with open(f"{tmp}/rank{rank}.json", "w") as f:
            json.dump({"counts": cm.counts, "sweep": sweep.confusion()}, f)
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_over_two_processes(tmp_path):
    mp.spawn(_distributed_worker, args=(str(tmp_path),), nprocs=2, join=True)
    expected_cm = ConfusionMatrix()
    expected_sweep = ThresholdSweep(bins=10)
    for rank in range(2):
        expected_cm.update(*random_batch(100 + rank))
        expected_sweep.update(*random_batch(100 + rank))
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert tuple(result["counts"]) == expected_cm.counts
        assert [tuple(c) for c in result["sweep"]] == expected_sweep.confusion()
