"""Validation during training: the model being trained, scored as ``dsifn evaluate`` scores.

Each process scores its shard of the validation split through the evaluation core
(:func:`dsifn.evaluation.scoring.score_batches`), predicting with a
:class:`~dsifn.inference.runner.TorchRunner` of the model as it is through the one rule of
batched prediction (:func:`dsifn.inference.pipeline.predict_images`): images larger than a
training tile (whole OSCD cities) are tiled and blended as ``dsifn predict`` does. The counts
are summed across processes. The loss is the training step's loss without its backward
(:meth:`~dsifn.training.step.TrainStep.loss`), on the images that fit one tile: the
deep-supervision loss is defined on whole outputs, which tiling never makes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from dsifn.contract import CONTRACT_KEY, InputContract
from dsifn.distributed import DistContext, all_reduce_sum
from dsifn.evaluation.scoring import score_batches
from dsifn.inference.pipeline import fits_one_tile, predict_images
from dsifn.inference.runner import TorchRunner
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
        not tiled (NaN if every image was).
    """
    model = step.model
    meta = {CONTRACT_KEY: contract.to_dict()}
    # The network as it is (no folded copy): the runner sets eval mode, as validation needs.
    runner = TorchRunner(
        model, device=str(step.device), precision=step.precision, meta=meta, fast=False
    )
    loss_sum, count = 0.0, 0

    def predict(batch: Mapping[str, Any]) -> Tensor:
        nonlocal loss_sum, count
        images = batch["image"].float().cpu().numpy()
        if fits_one_tile(runner, *images.shape[-2:]):
            loss_sum += float(step.loss(batch)) * images.shape[0]
            count += images.shape[0]
        return torch.from_numpy(predict_images(runner, images))

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
