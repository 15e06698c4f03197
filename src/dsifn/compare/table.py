"""The comparison's table: each network's scores over the seeds, its size, cost and speed.

:func:`summarise` turns the runs' ``result.json`` records into one :class:`Summary` per
network (mean and spread over seeds: the sample standard deviation, none for one seed; the
precision-recall curve of the test counts pooled over seeds); :func:`markdown`,
:func:`csv_text` and :func:`json_data` write it out.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dsifn.metrics import SCORE_NAMES, scores_from_confusion

__all__ = ["METRICS", "Spread", "Summary", "csv_text", "json_data", "markdown", "summarise"]

# The scores of the table, in its order; the F1 first, as the papers' tables have it.
METRICS = ("f1", "precision", "recall", "iou", "oa", "kappa")
_LABELS = {
    "f1": "F1",
    "precision": "Precision",
    "recall": "Recall",
    "iou": "IoU",
    "oa": "OA",
    "kappa": "Kappa",
}


@dataclass(frozen=True)
class Spread:
    """A value over seeds: its mean, sample standard deviation (None for one seed), values."""

    mean: float
    std: float | None
    values: tuple[float, ...]  # one per seed, in the seeds' order

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (NaN ones included: they make the mean NaN)."""
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, tuple(values))

    def percent(self) -> str:
        """``"85.21 ± 0.43"`` (of a fraction), ``"85.21"`` for one seed."""
        if self.std is None:
            return f"{100 * self.mean:.2f}"
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}"


@dataclass(frozen=True)
class Summary:
    """One network over its seeds."""

    model: str  # model.name
    title: str  # "FC-Siam-diff"
    seeds: tuple[int, ...]
    scores: dict[str, Spread]  # test scores at the threshold tuned on val, by METRICS name
    threshold: Spread  # the tuned thresholds
    parameters: int
    flops_per_pair: int  # forward FLOPs of one pair of flops_size x flops_size
    flops_size: int
    steps: Spread  # optimiser steps each run had
    train_pairs_per_second: Spread
    inference_pairs_per_second: Spread
    pr_curve: tuple[tuple[float, ...], tuple[float, ...]]  # (recall, precision), seeds pooled


def summarise(records: Sequence[Mapping[str, Any]]) -> list[Summary]:
    """One summary per network, in the order the records name them first."""
    order: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        order.setdefault(str(record["model"]), []).append(record)
    return [_summary(runs) for runs in order.values()]


def _summary(runs: Sequence[Mapping[str, Any]]) -> Summary:
    first = runs[0]

    def spread(*path: str) -> Spread:
        values = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value[key]
            values.append(math.nan if value is None else float(value))
        return Spread.of(values)

    return Summary(
        model=str(first["model"]),
        title=str(first["title"]),
        seeds=tuple(int(r["seed"]) for r in runs),
        scores={name: spread("scores", name) for name in METRICS},
        threshold=spread("threshold"),
        parameters=int(first["parameters"]),
        flops_per_pair=int(first["flops_per_pair"]),
        flops_size=int(first["flops_size"]),
        steps=spread("training", "steps"),
        train_pairs_per_second=spread("training", "pairs_per_second"),
        inference_pairs_per_second=spread("inference", "pairs_per_second"),
        pr_curve=_pooled_curve(runs),
    )


def _pooled_curve(runs: Sequence[Mapping[str, Any]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(recall, precision) at each recorded threshold, test counts summed over the seeds.

    Thresholds at which no pixel is predicted changed have no precision and are left out.
    """
    points = range(len(runs[0]["pr"]["tp"]))
    counts = [[sum(r["pr"][k][i] for r in runs) for k in ("tp", "fp", "fn", "tn")] for i in points]
    recall, precision = [], []
    for tp, fp, fn, tn in counts:
        if tp + fp == 0:
            continue
        scores = scores_from_confusion(tp, fp, fn, tn)
        recall.append(scores["recall"])
        precision.append(scores["precision"])
    return tuple(recall), tuple(precision)


def _speed(spread: Spread) -> str:
    return f"{spread.mean:.1f}" if math.isfinite(spread.mean) else "-"


def _steps(spread: Spread) -> str:
    if not spread.std:  # one seed, or the same steps in every run
        return f"{spread.mean:.0f}"
    return f"{spread.mean:.0f} ± {spread.std:.0f}"


def _row(summary: Summary) -> list[str]:
    return [
        summary.title,
        f"{summary.parameters / 1e6:.2f} M",
        f"{summary.flops_per_pair / 1e9:.1f}",
        *(summary.scores[m].percent() for m in METRICS),
        f"{summary.threshold.mean:.3f}",
        _steps(summary.steps),
        _speed(summary.train_pairs_per_second),
        _speed(summary.inference_pairs_per_second),
    ]


def header(size: int) -> list[str]:
    """The table's column names (FLOPs counted on pairs of ``size`` x ``size``)."""
    return [
        "Network",
        "Parameters",
        f"GFLOPs/pair ({size}²)",
        *(f"{_LABELS[m]} %" for m in METRICS),
        "Threshold",
        "Steps",
        "Train pairs/s",
        "Infer pairs/s",
    ]


def rows(summaries: Sequence[Summary]) -> list[list[str]]:
    """The table's cells, one row per network, as text."""
    return [_row(s) for s in summaries]


def markdown(summaries: Sequence[Summary], notes: Sequence[str] = ()) -> str:
    """The table in Markdown, with ``notes`` (what was compared, how) below it."""
    head = header(summaries[0].flops_size if summaries else 0)
    rule = "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"
    lines = ["| " + " | ".join(head) + " |", rule]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(summaries)]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def csv_text(summaries: Sequence[Summary]) -> str:
    """One row per network: every mean and standard deviation in its own column."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    spreads = [*METRICS, "threshold", "steps", "train_pairs_per_second"]
    writer.writerow(
        ["model", "title", "seeds"]
        + [f"{name}_{part}" for name in spreads for part in ("mean", "std")]
        + ["inference_pairs_per_second", "parameters", "flops_per_pair", "flops_size"]
    )
    for s in summaries:
        values = [*(s.scores[m] for m in METRICS), s.threshold, s.steps, s.train_pairs_per_second]
        writer.writerow(
            [s.model, s.title, " ".join(map(str, s.seeds))]
            + [_number(v) for spread in values for v in (spread.mean, spread.std)]
            + [_number(s.inference_pairs_per_second.mean), s.parameters, s.flops_per_pair]
            + [s.flops_size]
        )
    return out.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(float(value))


def json_data(
    summaries: Sequence[Summary],
    records: Sequence[Mapping[str, Any]],
    details: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything the table and picture show, and each run's record, as plain data.

    NaN becomes None (JSON has no NaN).
    """
    models = []
    for s in summaries:
        spreads = {"threshold": s.threshold, "steps": s.steps}
        spreads |= {f"test_{m}": s.scores[m] for m in SCORE_NAMES if m in s.scores}
        spreads |= {
            "train_pairs_per_second": s.train_pairs_per_second,
            "inference_pairs_per_second": s.inference_pairs_per_second,
        }
        models.append(
            {
                "model": s.model,
                "title": s.title,
                "seeds": list(s.seeds),
                **{k: {"mean": _finite(v.mean), "std": _finite(v.std)} for k, v in spreads.items()},
                "parameters": s.parameters,
                "flops_per_pair": s.flops_per_pair,
                "flops_size": s.flops_size,
                "pr_curve": {"recall": list(s.pr_curve[0]), "precision": list(s.pr_curve[1])},
            }
        )
    runs = [{k: v for k, v in r.items() if k != "config"} for r in records]
    data: dict[str, Any] = _clean({**details, "models": models, "runs": runs})
    return data


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
