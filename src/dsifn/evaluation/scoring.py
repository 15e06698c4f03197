"""Scoring a change detector on a dataset split, threshold tuning and a simple baseline.

Scores follow the field's convention (as in the DSIFN, BIT and open-cd reports):
one confusion matrix accumulated over every valid pixel of the split, for the change class.
Models run through the runner interface prediction uses (:mod:`dsifn.inference.runner`), so
a checkpoint and an exported model score alike. A pixel is change when its probability is
above the threshold (the one given, else the recorded one, else 0.5).

Anything that scores pixels can be evaluated: :func:`evaluate` wraps a runner into a
:data:`Scorer` and hands it to :func:`evaluate_scorer`; the pixel-difference baseline
(:func:`difference_scores`) is another scorer. Evaluation, threshold tuning and validation
during training all count pixels in one place, :func:`score_batches`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from dsifn.contract import (
    DEFAULT_THRESHOLD,
    InputContract,
    check_threshold,
    is_change,
)
from dsifn.distributed import DistContext, all_reduce_sum
from dsifn.errors import DataError, InputError
from dsifn.evaluation.results import (
    EvaluationResult,
    ImageResult,
    Prediction,
)
from dsifn.inference.pipeline import predict_images
from dsifn.inference.runner import TileRunner, TorchRunner
from dsifn.metrics import ConfusionMatrix, ThresholdSweep, scores_from_confusion
from dsifn.models.registry import ChangeNetwork
from dsifn.progress import progress_bar

__all__ = [
    "Scorer",
    "as_runner",
    "check_compatible",
    "difference_scores",
    "evaluate",
    "evaluate_scorer",
    "image_result",
    "resolve_threshold",
    "runner_scorer",
    "score_batches",
    "sweep_scorer",
    "tune_threshold",
]

# Maps a batch of pairs (B, 2, C, H, W) in [0, 1] to change probabilities (B, 1, H, W).
Scorer = Callable[[Tensor], Tensor]
Sample = Mapping[str, Any]


def resolve_threshold(
    threshold: float | None, model: ChangeNetwork | TileRunner | None = None
) -> float:
    """The decision threshold: the one given, else the model's recorded one, else 0.5.

    Raises:
        ConfigError: If the threshold is not in [0, 1] (:func:`dsifn.contract.check_threshold`).
    """
    if threshold is not None:
        return check_threshold(threshold)
    if model is None:
        return DEFAULT_THRESHOLD
    if isinstance(model, TileRunner):
        return model.contract.threshold
    return InputContract.of(model).threshold


def check_compatible(runner: TileRunner, dataset: Dataset[Sample]) -> None:
    """Refuse a dataset the model cannot take: its band count (sizes are tiled as predict does).

    Raises:
        InputError: Naming what differs.
    """
    bands = getattr(dataset, "bands", None)
    if bands is None and len(dataset) > 0:  # type: ignore[arg-type]
        bands = int(dataset[0]["image"].shape[1])
    takes = runner.contract.band_count
    if bands is not None and bands != takes:
        raise InputError(f"the data has {bands} band(s) per image but the model takes {takes}")


def as_runner(
    model: ChangeNetwork | TileRunner, device: str | torch.device = "auto", precision: str = "auto"
) -> TileRunner:
    """A runner for ``model``: a network runs on a :class:`TorchRunner`, a runner as it is."""
    if isinstance(model, TileRunner):
        return model
    return TorchRunner(model, device=str(device), precision=precision)


def runner_scorer(runner: TileRunner, tile_size: int | None = None) -> Scorer:
    """Wrap a runner as a :data:`Scorer`: pairs in [0, 1] are predicted as ``dsifn predict`` does.

    Through :func:`~dsifn.inference.pipeline.predict_images`, the one rule of batched
    prediction: an image larger than a tile (``tile_size``, else the model's fixed size or the
    tile size it trained on, else 512) is tiled and blended exactly as a scene is, so
    evaluation scores the map ``dsifn predict`` writes; smaller images go through whole, a
    batch at a time.
    """

    def score(images: Tensor) -> Tensor:
        # images: (B, 2, C, H, W) in [0, 1]; the runner moves them where it runs.
        array = images.float().cpu().numpy()
        return torch.from_numpy(predict_images(runner, array, tile_size=tile_size))

    return score


def difference_scores(images: Tensor) -> Tensor:
    """The pixel-difference baseline: mean absolute difference of the dates over the bands.

    Args:
        images: (B, 2, C, H, W) pairs in [0, 1].

    Returns:
        (B, 1, H, W) scores in [0, 1]; higher means more likely changed.
    """
    return (images[:, 1] - images[:, 0]).abs().mean(dim=1, keepdim=True)


def _collate(samples: Sequence[Sample]) -> dict[str, Any]:
    shapes = {tuple(s["image"].shape) for s in samples}
    if len(shapes) > 1:
        raise DataError(
            f"images in one batch differ in size ({sorted(shapes)[:2]}); use batch size 1"
        )
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "valid": torch.stack([s["valid"] for s in samples]),
        "has_data": torch.stack([s.get("has_data", s["valid"]) for s in samples]),
        "name": [str(s["name"]) for s in samples],
    }


def _batches(
    dataset: Dataset[Sample], batch_size: int, workers: int, progress: bool, desc: str
) -> Iterator[dict[str, Any]]:
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1; got {batch_size}")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate, num_workers=workers
    )
    total = len(dataset)  # type: ignore[arg-type]
    # Not a terminal (logs, CI): a few plain lines instead of a redrawing bar.
    with progress_bar(total, desc, "pair", enabled=progress) as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch["name"]))


def score_batches(
    batches: Iterable[Mapping[str, Any]],
    predict: Callable[[Mapping[str, Any]], Tensor],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    per_image: bool = False,
    on_prediction: Callable[[Prediction], None] | None = None,
    sweep: ThresholdSweep | None = None,
    ctx: DistContext | None = None,
) -> EvaluationResult:
    """The scoring core: predict every batch and accumulate one confusion matrix.

    ``dsifn evaluate``, threshold tuning and validation during training all score here.

    Args:
        batches: ``{"image", "mask", "valid", "name"}`` batches (``name`` is needed for
            ``per_image`` and ``on_prediction`` only).
        predict: Maps a batch to its (B, 1, H, W) change probabilities, on any device; the
            reference is moved there.
        threshold: Probability above which a pixel is change.
        per_image: Also return each image's counts and scores.
        on_prediction: Called with every image's :class:`Prediction` (on the CPU).
        sweep: Also accumulate these histograms, for threshold tuning.
        ctx: Under DDP, each process scores its own shard; counts, the image count and the
            sweep are then summed over the processes (per-image results stay local).

    Returns:
        The scores, counts and threshold over all batches (of all processes).
    """
    total = ConfusionMatrix(threshold=threshold)
    counts = [0.0, 0.0, 0.0]  # images, pixels without data, pixels not labelled
    rows: list[ImageResult] = []
    for batch in batches:
        prob = predict(batch).float()
        mask = batch["mask"].to(prob.device, non_blocking=True)
        valid = batch["valid"].to(prob.device, non_blocking=True)
        total.update(prob, mask, valid)
        if sweep is not None:
            sweep.update(prob, mask, valid)
        has_data = batch.get("has_data", batch["valid"]).cpu()
        counts[0] += int(mask.shape[0])
        counts[1] += int((~has_data).sum())
        counts[2] += int((has_data & ~batch["valid"].cpu()).sum())
        if per_image or on_prediction is not None:
            rows += _each_image(batch, prob.cpu(), threshold, on_prediction)
    if ctx is not None and ctx.distributed:
        total.all_reduce()
        if sweep is not None:
            sweep.all_reduce()
        counts = all_reduce_sum(ctx, counts)
    return EvaluationResult(
        scores=total.scores(),
        tp=total.tp,
        fp=total.fp,
        fn=total.fn,
        tn=total.tn,
        threshold=threshold,
        images=int(counts[0]),
        per_image=rows if per_image else None,
        nodata=int(counts[1]),
        ignored=int(counts[2]),
    )


def _each_image(
    batch: Mapping[str, Any],
    prob: Tensor,
    threshold: float,
    on_prediction: Callable[[Prediction], None] | None,
) -> list[ImageResult]:
    """Per-image counts of a batch (``prob`` on the CPU), each handed to ``on_prediction``."""
    mask, valid = batch["mask"].cpu(), batch["valid"].cpu()
    has_data = batch.get("has_data", batch["valid"]).cpu()
    rows = []
    for i, name in enumerate(batch["name"]):
        rows.append(image_result(name, prob[i], mask[i], valid[i], threshold))
        if on_prediction is not None:
            on_prediction(
                Prediction(
                    name=name,
                    image=batch["image"][i].cpu(),
                    mask=mask[i],
                    valid=valid[i],
                    has_data=has_data[i],
                    probability=prob[i],
                    prediction=is_change(prob[i], threshold),
                    result=rows[-1],
                )
            )
    return rows


def image_result(
    name: str, probability: Tensor, mask: Tensor, valid: Tensor, threshold: float
) -> ImageResult:
    """One image's counts and scores, counted as the split's are (:class:`ConfusionMatrix`).

    Args:
        name: The pair's name.
        probability: (1, H, W) change probability.
        mask: (1, H, W) reference, 0/1.
        valid: (1, H, W) bool, False where the pixel is left out.
        threshold: Change where the probability is above it.
    """
    single = ConfusionMatrix(threshold=threshold)
    single.update(probability[None], mask[None], valid[None])
    counts = (single.tp, single.fp, single.fn, single.tn)
    return ImageResult(name, *counts, scores=scores_from_confusion(*counts))


def _scorer_predict(
    scorer: Scorer, device: torch.device | None
) -> Callable[[Mapping[str, Any]], Tensor]:
    """A batch's probabilities from a :data:`Scorer`, brought back to the CPU."""
    dev = device or torch.device("cpu")

    def predict(batch: Mapping[str, Any]) -> Tensor:
        return scorer(batch["image"].to(dev)).float().cpu()

    return predict


def evaluate_scorer(
    scorer: Scorer,
    dataset: Dataset[Sample],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    device: torch.device | None = None,
    batch_size: int = 1,
    workers: int = 0,
    progress: bool = True,
    per_image: bool = False,
    on_prediction: Callable[[Prediction], None] | None = None,
    sweep: ThresholdSweep | None = None,
    desc: str = "evaluate",
) -> EvaluationResult:
    """Score every pair of ``dataset`` with ``scorer`` and accumulate one confusion matrix.

    Args:
        scorer: Maps (B, 2, C, H, W) pairs in [0, 1] to (B, 1, H, W) probabilities.
        dataset: Yields ``{"image", "mask", "valid", "name"}`` samples.
        threshold: Probability above which a pixel is change.
        device: Where the pairs are sent before scoring (CPU if None).
        batch_size: Pairs per forward pass (pairs of one batch must share their size).
        workers: DataLoader worker processes reading the pairs (0: in this process).
        progress: Show a progress bar.
        per_image: Also return each image's counts and scores.
        on_prediction: Called with every image's :class:`Prediction` (for writing outputs).
        sweep: Also accumulate these histograms (the scores at every threshold: a
            precision-recall curve).
        desc: Label of the progress bar.

    Returns:
        The split's scores, counts and threshold.
    """
    return score_batches(
        _batches(dataset, batch_size, workers, progress, desc),
        _scorer_predict(scorer, device),
        threshold=threshold,
        per_image=per_image,
        on_prediction=on_prediction,
        sweep=sweep,
    )


def evaluate(
    model: ChangeNetwork | TileRunner,
    dataset: Dataset[Sample],
    *,
    threshold: float | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    batch_size: int = 1,
    workers: int = 0,
    progress: bool = True,
    per_image: bool = False,
    on_prediction: Callable[[Prediction], None] | None = None,
    tile_size: int | None = None,
    sweep: ThresholdSweep | None = None,
) -> EvaluationResult:
    """Evaluate a model on a dataset split, through the runner interface prediction uses.

    Args:
        model: The network (e.g. from :func:`dsifn.load_checkpoint`), run on a
            :class:`~dsifn.inference.runner.TorchRunner`, or any runner (an ONNX model).
        dataset: Yields ``{"image": (2, C, H, W) in [0, 1], "mask": (1, H, W), "valid":
            (1, H, W), "name"}`` samples, e.g. a :class:`dsifn.data.ChangeDetectionDataset`.
        threshold: Decision threshold; None takes the checkpoint's, else 0.5.
        device: For a network: ``"auto"``, ``"cpu"``, ``"cuda"``... or a
            :class:`torch.device`.
        precision: For a network: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        batch_size: Pairs per forward pass.
        workers: DataLoader worker processes reading the pairs (0: in this process).
        progress: Show a progress bar.
        per_image: Also return each image's counts and scores.
        on_prediction: Called with every image's :class:`Prediction`.
        tile_size: Tiles of larger images, as ``dsifn predict`` cuts them; None: predict's
            default (:func:`runner_scorer`).
        sweep: Also accumulate these histograms (every threshold's counts: a
            precision-recall curve).

    Returns:
        Scores from one confusion matrix over the whole split, with the threshold used.

    Raises:
        InputError: If the data's band count (or size, for fixed-size models) does not fit.
    """
    runner = as_runner(model, device, precision)
    check_compatible(runner, dataset)
    return evaluate_scorer(
        runner_scorer(runner, tile_size),
        dataset,
        threshold=resolve_threshold(threshold, runner),
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        per_image=per_image,
        on_prediction=on_prediction,
        sweep=sweep,
    )


def sweep_scorer(
    scorer: Scorer,
    dataset: Dataset[Sample],
    *,
    device: torch.device | None = None,
    batch_size: int = 1,
    workers: int = 0,
    progress: bool = True,
    bins: int = 1000,
    desc: str = "threshold sweep",
) -> tuple[float, dict[str, float]]:
    """The threshold that maximises F1 over a split, and the scores it reaches.

    Args:
        scorer: Maps (B, 2, C, H, W) pairs to (B, 1, H, W) scores in [0, 1].
        dataset: The split to tune on (validation, never test).
        device: Where the pairs are sent before scoring.
        batch_size: Pairs per forward pass.
        workers: DataLoader worker processes reading the pairs (0: in this process).
        progress: Show a progress bar.
        bins: Resolution of the threshold search.
        desc: Label of the progress bar.

    Returns:
        ``(threshold, scores)``.
    """
    sweep = ThresholdSweep(bins=bins)
    score_batches(
        _batches(dataset, batch_size, workers, progress, desc),
        _scorer_predict(scorer, device),
        sweep=sweep,
    )
    threshold, scores = sweep.best("f1")
    return float(threshold), dict(scores)


def tune_threshold(
    model: ChangeNetwork | TileRunner,
    dataset: Dataset[Sample],
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    batch_size: int = 1,
    workers: int = 0,
    progress: bool = True,
    bins: int = 1000,
    tile_size: int | None = None,
) -> tuple[float, dict[str, float]]:
    """Choose the F1-best decision threshold of a model on a (validation) split.

    Images are predicted as :func:`evaluate` predicts them (``tile_size`` as there).

    Returns:
        ``(threshold, scores at that threshold)``.
    """
    runner = as_runner(model, device, precision)
    check_compatible(runner, dataset)
    return sweep_scorer(
        runner_scorer(runner, tile_size),
        dataset,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        bins=bins,
        desc="tune threshold",
    )
