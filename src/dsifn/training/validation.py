"""Validation during training: the validation split scored by the model being trained.

Each process scores its shard through the scoring core that ``dsifn evaluate`` uses, and the
counts are summed across processes. Images larger than a training tile (whole OSCD cities)
are tiled and blended as ``dsifn predict`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor

from dsifn.contract import InputContract
from dsifn.distributed import DistContext, all_reduce_sum
from dsifn.evaluation.scoring import score_batches
from dsifn.progress import progress_bar
from dsifn.training.step import TrainStep

__all__ = ["validate"]


def validate(
    step: TrainStep,
    batches: Iterable[Mapping[str, Any]],
    contract: InputContract,
    *,
    threshold: float,
    ctx: DistContext,
    progress: bool,
) -> tuple[dict[str, float], float]:
    """Scores and mean loss of the validation split, each process scoring its shard.

    ``step.model`` runs in eval mode and is put back in training mode afterwards.

    Args:
        step: The run's training step; its ``model`` is scored as it is.
        batches: This process's validation batches (its loader).
        contract: The run's input contract; its tile size decides which images are tiled.
        threshold: Probability above which a pixel is change.
        ctx: This process's place in the run.
        progress: Show a progress bar.

    Returns:
        The scores over every process's shard, and the mean loss over the images that were
        not tiled (NaN if every image was: the loss is not defined on tiled outputs).
    """
    model = step.model
    model.eval()
    loss_sum, count = 0.0, 0
    runner = step.runner(contract)  # tiles large images as predict does

    def predict(batch: Mapping[str, Any]) -> Tensor:
        nonlocal loss_sum, count
        prob, loss = step.evaluate_tiled(batch, runner)
        if math.isfinite(float(loss)):
            loss_sum += float(loss) * int(prob.shape[0])
            count += int(prob.shape[0])
        return prob

    bar = progress_bar(
        enabled=progress, unit="batch", iterable=batches, desc="validation", leave=False
    )
    try:
        result = score_batches(bar, predict, threshold=threshold, ctx=ctx)
    finally:
        bar.close()
        model.train()
    loss_sum, count_f = all_reduce_sum(ctx, [loss_sum, float(count)])
    return result.scores, loss_sum / count_f if count_f else math.nan
