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
    from dsifn.evaluation.workflow import CheckpointEvaluation

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
    """Check the outputs, evaluate (tuning the threshold first if asked), print, write."""
    from dsifn.data import detect_layout
    from dsifn.evaluation.workflow import evaluate_checkpoint

    out = _check(args)
    layout = detect_layout(args.data, args.layout)
    print(layout.describe())
    if args.tune_threshold and args.split == "val":
        print("note: tuning and evaluating on the same split (val) flatters the scores")
    writer = _writer(args, out)
    found = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        split=args.split,
        layout=layout,
        threshold=args.threshold,
        tune=args.tune_threshold,
        runtime=args.runtime,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        workers=args.workers,
        per_image=out is not None,
        on_prediction=writer,
        tile_size=args.tile_size,
        offset=args.offset,
    )
    _report(args, found, out, writer)
    return 0


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
    """Print the scores (and a tuned threshold); write metrics.json and the report if asked."""
    from dsifn.evaluation.report import write_json
    from dsifn.evaluation.results import format_table

    if found.tuned is not None:
        threshold, scores = found.tuned
        print(
            f"tuned threshold {threshold:.4g} (val F1 {100 * scores['f1']:.2f} %), "
            f"stored in {args.checkpoint}"
        )
    result = found.result
    print(format_table(result, title=f"{args.checkpoint} on {args.split} ({found.pairs} pairs)"))
    details = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split}
    if out is not None:
        write_json(out / "metrics.json", details | result.to_dict(), overwrite=args.overwrite)
        print(f"wrote {out / 'metrics.json'}")
    if writer is not None and args.report:
        print(f"wrote {writer.write_html(result, details=details)}")
