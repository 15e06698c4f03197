"""``dsifn evaluate``: scores of a checkpoint on a dataset split, with optional pictures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dsifn.cli.options import (
    add_device_options,
    add_model_file_options,
    add_offset_option,
    add_overwrite_option,
    finite_float,
)

if TYPE_CHECKING:
    from dsifn.evaluation.report import ReportWriter
    from dsifn.evaluation.workflow import CheckpointEvaluation, PreparedEvaluation

NAME = "evaluate"
HELP = "score a checkpoint on a dataset split: metrics table, metrics.json, masks, HTML report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``evaluate``'s options."""
    add_model_file_options(parser)
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--split", default="test", help="split to score [test]")
    parser.add_argument("--layout", default="auto", help="dataset layout [auto: detect it]")
    parser.add_argument(
        "--threshold",
        type=finite_float,
        default=None,
        help="decision threshold on the change probability [the checkpoint's, else 0.5]",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="pairs per forward pass [1]")
    parser.add_argument(
        "--tile-size",
        type=int,
        help="tile images larger than this as dsifn predict does [predict's: the tile size the "
        "model trained on, else 512]",
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="processes reading the images [0: in the main one]"
    )
    add_offset_option(parser)
    add_device_options(parser)
    parser.add_argument("--out", default=None, help="folder for metrics.json and pictures")
    parser.add_argument(
        "--save-masks", action="store_true", help="write predicted masks (PNG 0/255) to OUT/masks"
    )
    parser.add_argument(
        "--save-errors",
        action="store_true",
        help="write error maps to OUT/errors (TP white, FP red, FN green, TN black)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="write OUT/report.html: every pair, worst F1 first, with its pictures",
    )
    parser.add_argument(
        "--tune-threshold",
        action="store_true",
        help="choose the F1-best threshold on the val split, store it in the checkpoint, use it",
    )
    add_overwrite_option(parser)


def run(args: argparse.Namespace) -> int:
    """Check everything, evaluate (tuning first if asked), then write every output at once.

    Every output (metrics, pictures, report, and the checkpoint a tuned threshold goes into)
    is checked before the model runs and written staged: a failure anywhere leaves every
    file as it was.
    """
    from dsifn.data import detect_layout
    from dsifn.evaluation.workflow import prepare_evaluation
    from dsifn.io.atomic import staged

    out = _check(args)
    layout = detect_layout(args.data, args.layout)
    print(layout.describe())
    if args.tune_threshold and args.split == "val":
        print("note: tuning and evaluating on the same split (val) flatters the scores")
    prepared = prepare_evaluation(
        args.checkpoint,
        args.data,
        split=args.split,
        layout=layout,
        threshold=args.threshold,
        tune=args.tune_threshold,
        runtime=args.runtime,
        device=args.device,
        precision=args.precision,
        offset=args.offset,
    )
    writer = _writer(args, out)
    finals, overwrite = _outputs(args, out, writer, prepared.dataset.names)
    with staged(finals, overwrite=overwrite) as paths:
        where = dict(zip(finals, paths, strict=True))
        if writer is not None:
            writer.stage(where)
        found = prepared.run(
            batch_size=args.batch_size,
            workers=args.workers,
            per_image=out is not None,
            on_prediction=writer,
            tile_size=args.tile_size,
        )
        _write(args, prepared, found, out, writer, where)
    _report(args, found, out, writer)
    return 0


def _outputs(
    args: argparse.Namespace, out: Path | None, writer: ReportWriter | None, names: list[str]
) -> tuple[list[Path], list[bool]]:
    """Every file the command writes, and whether each may be replaced (checked by staging)."""
    finals = [] if out is None else [out / "metrics.json"]
    if writer is not None:
        finals += writer.planned(names)
    overwrite = [args.overwrite] * len(finals)
    if args.tune_threshold:  # the checkpoint is rewritten with the tuned threshold
        finals.append(Path(args.checkpoint))
        overwrite.append(True)
    return finals, overwrite


def _write(
    args: argparse.Namespace,
    prepared: PreparedEvaluation,
    found: CheckpointEvaluation,
    out: Path | None,
    writer: ReportWriter | None,
    where: dict[Path, Path],
) -> None:
    """Write the metrics, the report and the tuned checkpoint at their staged places."""
    from dsifn.evaluation.report import write_json

    result = found.result
    if out is not None:
        data = _details(args) | result.to_dict()
        write_json(where[out / "metrics.json"], data, overwrite=True)
    if writer is not None and args.report:
        writer.write_html(result, details=_details(args))
    if found.tuned is not None:
        prepared.store_tuned(found.tuned[0], out=where[Path(args.checkpoint)])


def _details(args: argparse.Namespace) -> dict[str, str]:
    return {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split}


def _check(args: argparse.Namespace) -> Path | None:
    """Refuse bad options and outputs that exist before any work; the output folder, if any."""
    from dsifn.errors import ConfigError, InputError
    from dsifn.evaluation.scoring import resolve_threshold
    from dsifn.io.atomic import check_output_path

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1; got {args.batch_size}")
    if args.workers < 0:
        raise InputError(f"--workers must be at least 0; got {args.workers}")
    if args.threshold is not None:
        resolve_threshold(args.threshold)  # refuse a bad value before any work
        if args.tune_threshold:
            raise ConfigError("give either --threshold or --tune-threshold, not both")
    out = Path(args.out) if args.out else None
    if out is None and _pictures(args):
        raise ConfigError("--save-masks, --save-errors and --report need --out")
    if out is not None:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} exists and is not a folder")
        check_output_path(out / "metrics.json", overwrite=args.overwrite)
        if args.report:
            check_output_path(out / "report.html", overwrite=args.overwrite)
    if args.tune_threshold:  # it will be rewritten: it must be a file in a writable folder
        check_output_path(args.checkpoint, overwrite=True)
    return out


def _pictures(args: argparse.Namespace) -> bool:
    return bool(args.save_masks or args.save_errors or args.report)


def _writer(args: argparse.Namespace, out: Path | None) -> ReportWriter | None:
    from dsifn.evaluation.report import ReportWriter

    if out is None or not _pictures(args):
        return None
    return ReportWriter(
        out,
        masks=args.save_masks,
        errors=args.save_errors,
        report=args.report,
        overwrite=args.overwrite,
    )


def _report(
    args: argparse.Namespace,
    found: CheckpointEvaluation,
    out: Path | None,
    writer: ReportWriter | None,
) -> None:
    """Print the scores (and a tuned threshold) and what was written."""
    from dsifn.evaluation.results import format_table

    if found.tuned is not None:
        threshold, scores = found.tuned
        print(
            f"tuned threshold {threshold:.4g} (val F1 {100 * scores['f1']:.2f} %), "
            f"stored in {args.checkpoint}"
        )
    result = found.result
    print(format_table(result, title=f"{args.checkpoint} on {args.split} ({found.pairs} pairs)"))
    if out is not None:
        print(f"wrote {out / 'metrics.json'}")
    if out is not None and args.report:  # a report needs --out
        print(f"wrote {out / 'report.html'}")
