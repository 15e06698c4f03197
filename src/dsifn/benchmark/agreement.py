"""F1 agreement of the runtimes: each one scored on a dataset split as ``dsifn evaluate`` does."""

from __future__ import annotations

from collections.abc import Sequence

from dsifn.benchmark.inference import NamedRunner
from dsifn.data import ChangeDetectionDataset, reading_config
from dsifn.evaluation.scoring import evaluate

__all__ = ["f1_agreement"]


def f1_agreement(
    runners: Sequence[NamedRunner], data: str, split: str = "test"
) -> dict[str, dict[str, float]]:
    """Each runner's F1 on ``split`` of ``data``, read as its input contract says.

    Every runner decides with its own recorded threshold, as ``dsifn evaluate`` does.

    Returns:
        Runner name -> ``{"f1": ..., "f1_drop": ...}``, the drop in F1 points against the
        first runner (the baseline).
    """
    scores: dict[str, dict[str, float]] = {}
    for named in runners:
        runner = named.runner
        contract = runner.contract
        dataset = ChangeDetectionDataset(reading_config(contract, data), split)
        result = evaluate(runner, dataset, threshold=contract.threshold, progress=False)
        scores[named.name] = {"f1": result.scores["f1"]}
    baseline = scores[runners[0].name]["f1"]
    for entry in scores.values():
        entry["f1_drop"] = 100 * (baseline - entry["f1"])
    return scores
