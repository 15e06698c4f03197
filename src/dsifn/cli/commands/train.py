"""``dsifn train``: train a DSIFN from a YAML config with ``key=value`` overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

from dsifn.cli.flags import set_param
from dsifn.cli.options import add_overwrite_option

NAME = "train"
HELP = "train a DSIFN on a change-detection dataset (single process or torchrun)"

EPILOG = """\
examples:
  dsifn train --config levir --data /data/LEVIR-CD --run-dir runs/levir
  dsifn train --config my.yaml optim.lr=3e-4 schedule.epochs=50 run.batch_size=4
  dsifn train --run-dir runs/levir --resume
  torchrun --nproc-per-node 4 -m dsifn.cli.main train --config levir --data /data/LEVIR-CD

overrides are KEY=VALUE with dotted keys of the config sections (model, data, loss, optim,
schedule, validation, run); a key naming a field of one section only may drop the section
(epochs=2 is schedule.epochs=2). Bundled configs: default (the paper), levir, dsifn_cd.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``train``'s options."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--config",
        help="YAML config file or bundled config name (default, levir, dsifn_cd) [default; "
        "with --resume: the run's config.yaml]",
    )
    # Messages of the library that name `data.root` name --data here.
    set_param(
        parser.add_argument("--data", metavar="PATH", help="dataset folder (sets data.root)"),
        "data.root",
    )
    parser.add_argument(
        "--run-dir", metavar="DIR", help="folder for checkpoints and logs [runs/<config name>]"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its last.pt"
    )
    add_overwrite_option(parser)
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars or per-epoch lines"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


def run(args: argparse.Namespace) -> int:
    """Resolve the config, report the data layout, train."""
    from dsifn.distributed import this_process
    from dsifn.errors import CheckpointError, ConfigError
    from dsifn.training.config import apply_overrides, load_config, parse_overrides
    from dsifn.training.engine import train

    main_process = this_process().is_main
    if args.resume and args.run_dir is None:
        raise ConfigError("--resume needs --run-dir: the run to continue")
    source = args.config
    if source is None and args.resume:
        source = Path(args.run_dir) / "config.yaml"
        if not source.is_file():
            raise CheckpointError(f"nothing to resume in {args.run_dir}: it has no config.yaml")
    overrides = parse_overrides(args.overrides)
    config = load_config(source if source is not None else "default")
    if args.data is not None:
        overrides["data.root"] = args.data
    config = apply_overrides(config, overrides)
    if args.data is not None:
        from dsifn.data import resolve_layout

        layout = resolve_layout(config.data)
        if main_process:
            print(layout.describe())
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / _config_name(args.config)
    result = train(
        config,
        run_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if main_process:
        scores = result.best_scores
        best = (
            f"best validation F1 {scores['f1']:.4f} (IoU {scores['iou']:.4f}) after epoch "
            f"{result.best_epoch}"
            if result.best_scored
            else f"no validation round gave a finite F1 (does split {config.validation.split!r} "
            "have labelled pixels?)"
        )
        print(f"{best}; stopped: {result.stop_reason}")
        kind = "best" if result.best_scored else "unscored: the last round's model"
        print(f"checkpoints: {result.best_checkpoint} ({kind}), {result.last_checkpoint} (last)")
    return 0


def _config_name(config: str | None) -> str:
    if config is None:
        return "default"
    return Path(config).stem or "default"
