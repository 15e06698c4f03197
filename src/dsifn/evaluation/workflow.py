"""Scoring a model file on a dataset: read the data as its contract says, tune, evaluate.

:func:`evaluate_checkpoint` scores a model file; ``dsifn evaluate`` runs its two halves,
:func:`prepare_evaluation` (every check and read that can fail, before any output is touched)
and :meth:`PreparedEvaluation.run`, so that it can check and stage its outputs in between.
:func:`store_threshold` records a tuned threshold in a checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dsifn.contract import (
    CONTRACT_KEY,
    InputContract,
)
from dsifn.data import ChangeDetectionDataset, DetectedLayout, detect_layout, reading_config
from dsifn.errors import InputError
from dsifn.evaluation.results import EvaluationResult, Prediction
from dsifn.evaluation.scoring import evaluate, tune_threshold
from dsifn.inference.loading import load_runner, runtime_for
from dsifn.inference.runner import TileRunner
from dsifn.metrics import ThresholdSweep
from dsifn.models.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint

__all__ = [
    "CheckpointEvaluation",
    "PreparedEvaluation",
    "evaluate_checkpoint",
    "prepare_evaluation",
    "store_threshold",
]


def store_threshold(
    path: str | os.PathLike[str],
    threshold: float,
    *,
    note: str | None = None,
    out: str | os.PathLike[str] | None = None,
) -> None:
    """Record a decision threshold in a checkpoint's input contract, rewriting it atomically.

    The threshold lives in one place, the contract; a checkpoint written before that rule loses
    its old ``meta["threshold"]`` entry here. Every other entry of the checkpoint (weights,
    configuration, training state, meta) is kept.

    Args:
        path: A dsifn checkpoint.
        threshold: The new threshold.
        note: Where the threshold came from, stored as ``meta["threshold_source"]``.
        out: Write the updated checkpoint here instead of over ``path`` (a staged path).
    """
    payload = read_checkpoint(path)
    model = model_from_checkpoint(payload, source=str(path))
    meta = dict(payload.get("meta") or {})
    contract = InputContract.from_meta(meta, model.config)
    meta.pop("threshold", None)
    meta[CONTRACT_KEY] = contract.replace(threshold=float(threshold)).to_dict()
    if note:
        meta["threshold_source"] = note
    own = {"format", "format_version", "dsifn_version", "model_config", "state_dict", "meta"}
    extra = {k: v for k, v in payload.items() if k not in own}
    save_checkpoint(out or path, model, meta=meta, overwrite=True, **extra)


def _training_validation(found: DetectedLayout, meta: Mapping[str, Any]) -> DetectedLayout:
    # A val split carved from train pairs (OSCD) is the one the model was validated on, and
    # OSCD's images are the ones it trained on (imgs_*_rect, or the raw band files).
    training = meta.get("training")
    data = training.get("data") if isinstance(training, Mapping) else None
    if not isinstance(data, Mapping):
        return found
    if found.name == "oscd" and data.get("oscd_rect") is False:
        found = detect_layout(found.root, "oscd", oscd_rect=False)
    return found.with_validation(data.get("val_cities"), data.get("val_fraction"))


def _checked_layout(
    checkpoint: str | os.PathLike[str],
    root: str | os.PathLike[str],
    split: str,
    layout: str | DetectedLayout,
    threshold: float | None,
    tune: bool,
    runtime: str,
) -> DetectedLayout:
    """The dataset's layout, with the splits asked for; problems found before the model is read."""
    if tune and threshold is not None:
        raise InputError("give either a threshold or tune it, not both")
    if tune and runtime_for(checkpoint, runtime) != "torch":
        raise InputError("a tuned threshold is stored in a dsifn checkpoint; tune before export")
    # Data problems are found before the (slower) model is read.
    found = layout if isinstance(layout, DetectedLayout) else detect_layout(str(root), layout)
    found.split(split)
    if tune:
        found.split("val")
    return found


@dataclass(frozen=True)
class CheckpointEvaluation:
    """What :func:`evaluate_checkpoint` found."""

    result: EvaluationResult  # the scores of the split
    pairs: int  # pairs in the split
    tuned: tuple[float, dict[str, float]] | None  # threshold and val scores, when tuned


@dataclass(frozen=True)
class PreparedEvaluation:
    """A model file and the splits it will be scored on, read before anything is written.

    Build it with :func:`prepare_evaluation`; :meth:`run` scores it.
    """

    checkpoint: str  # the model file
    root: str  # the dataset folder
    runner: TileRunner  # the model, loaded
    contract: InputContract  # how the data is read, with the threshold asked for
    dataset: ChangeDetectionDataset  # the split to score
    val: ChangeDetectionDataset | None  # the split to tune the threshold on, when asked

    def run(
        self,
        *,
        batch_size: int = 1,
        workers: int = 0,
        per_image: bool = False,
        on_prediction: Callable[[Prediction], None] | None = None,
        progress: bool = True,
        tile_size: int | None = None,
        sweep: ThresholdSweep | None = None,
    ) -> CheckpointEvaluation:
        """Tune the threshold on val if asked, then score the split; writes nothing.

        Args:
            batch_size: Pairs per forward pass.
            workers: DataLoader worker processes reading the pairs.
            per_image: Also return each image's counts and scores.
            on_prediction: Called with every image's :class:`Prediction`.
            progress: Show progress bars.
            tile_size: Tiles of images larger than one, as ``dsifn predict`` cuts them.
            sweep: Also accumulate the split's counts at every threshold here (a
                precision-recall curve).
        """
        options: dict[str, Any] = {
            "batch_size": batch_size,
            "workers": workers,
            "progress": progress,
            "tile_size": tile_size,
        }
        tuned, threshold = None, self.contract.threshold
        if self.val is not None:
            tuned = tune_threshold(self.runner, self.val, **options)
            threshold = tuned[0]
        result = evaluate(
            self.runner,
            self.dataset,
            threshold=threshold,
            per_image=per_image,
            on_prediction=on_prediction,
            sweep=sweep,
            **options,
        )
        return CheckpointEvaluation(result=result, pairs=len(self.dataset), tuned=tuned)

    def store_tuned(self, threshold: float, *, out: str | os.PathLike[str] | None = None) -> None:
        """Record a threshold tuned on this evaluation's val split in its checkpoint.

        Args:
            threshold: The threshold :meth:`run` chose (``CheckpointEvaluation.tuned[0]``).
            out: Write the updated checkpoint here instead of over it (a staged path).
        """
        note = f"F1-best on the val split of {self.root}"
        store_threshold(self.checkpoint, threshold, note=note, out=out)


def prepare_evaluation(
    checkpoint: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    split: str = "test",
    layout: str | DetectedLayout = "auto",
    threshold: float | None = None,
    tune: bool = False,
    runtime: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    offset: float | None = None,
) -> PreparedEvaluation:
    """Check the options and the data, load the model and open the splits; write nothing.

    Args:
        checkpoint: A dsifn checkpoint or an exported model (any runtime of ``load_runner``).
        root: The dataset folder.
        split: The split to score.
        layout: The dataset layout (``"auto"`` detects it), or one already detected.
        threshold: Decision threshold; None: the recorded one.
        tune: Also open the val split, to choose the F1-best threshold on (a dsifn
            checkpoint only; :meth:`PreparedEvaluation.run` chooses it, the caller stores it).
        runtime: ``"auto"`` (by the file) or a runtime name (:data:`dsifn.devices.Runtime`).
        device: Where to run.
        precision: Numeric precision (torch).
        offset: Digital numbers added to every file's first, replacing the offsets the files
            state (:mod:`dsifn.io.radiometry`); None: theirs.

    Raises:
        InputError: If the options contradict each other or the splits are missing.
        CheckpointError, DataError: If the model or the data cannot be read.
    """
    found = _checked_layout(checkpoint, root, split, layout, threshold, tune, runtime)
    runner = load_runner(checkpoint, runtime=runtime, device=device, precision=precision)
    found = _training_validation(found, runner.meta)
    contract = runner.contract.resolve(str(checkpoint), threshold=threshold)
    data = reading_config(contract, str(root), offset=offset)  # read through `found`
    val = ChangeDetectionDataset(data, "val", layout=found) if tune else None
    dataset = ChangeDetectionDataset(data, split, layout=found)
    return PreparedEvaluation(str(checkpoint), str(root), runner, contract, dataset, val)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    batch_size: int = 1,
    workers: int = 0,
    per_image: bool = False,
    on_prediction: Callable[[Prediction], None] | None = None,
    progress: bool = True,
    tile_size: int | None = None,
    sweep: ThresholdSweep | None = None,
    **options: Any,
) -> CheckpointEvaluation:
    """Score a model file on a dataset split, reading the data as its input contract says.

    Example:
        >>> evaluate_checkpoint("run/best.pt", "LEVIR-CD", split="test")  # doctest: +SKIP

    Args:
        checkpoint: A dsifn checkpoint or an exported model (any runtime of ``load_runner``).
        root: The dataset folder.
        batch_size: Pairs per forward pass.
        workers: DataLoader worker processes reading the pairs.
        per_image: Also return each image's counts and scores.
        on_prediction: Called with every image's :class:`Prediction`.
        progress: Show progress bars.
        tile_size: Tiles of images larger than one, as ``dsifn predict`` cuts them; None:
            predict's default (the tile size the model trained on, else 512).
        sweep: Also accumulate the split's counts at every threshold here (a
            precision-recall curve).
        **options: What :func:`prepare_evaluation` takes: ``split`` ("test"), ``layout``
            ("auto" detects it, or a layout already detected), ``threshold`` (None: the
            recorded one), ``tune`` (first choose the F1-best threshold on the val split, and
            once the split is scored store it in the checkpoint), ``runtime``, ``device``,
            ``precision``, ``offset``.

    Returns:
        The scores, the split's size and the tuned threshold, if any.
    """
    prepared = prepare_evaluation(checkpoint, root, **options)
    found = prepared.run(
        batch_size=batch_size,
        workers=workers,
        per_image=per_image,
        on_prediction=on_prediction,
        progress=progress,
        tile_size=tile_size,
        sweep=sweep,
    )
    if found.tuned is not None:
        prepared.store_tuned(found.tuned[0])
    return found
