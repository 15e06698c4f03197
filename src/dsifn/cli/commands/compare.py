"""``dsifn compare``: DSIFN and the paper's baselines, same data, same budget, one table."""

from __future__ import annotations

import argparse
from pathlib import Path

from dsifn.cli.flags import set_param
from dsifn.cli.options import add_overwrite_option, comma_separated, finite_float
from dsifn.models.registry import MODEL_NAMES

NAME = "compare"
HELP = (
    "train DSIFN, FC-EF, FC-Siam-conc, FC-Siam-diff and CDNet for the same budget on the same "
    "data; write a table, a picture and an HTML page"
)

EPILOG = """\
examples:
  dsifn compare --data /data/LEVIR-CD --minutes 60 --seeds 0,1,2 --out cmp/levir
  dsifn compare --data D --models fc_ef,fc_siam_diff --steps 2000 --out cmp/fc --config levir
  torchrun --nproc-per-node 4 -m dsifn.cli.main compare --data D --minutes 30 --out cmp/d

Every run is an ordinary training run in OUT/runs/<model>-s<seed>/ (the recipe: --config and
KEY=VALUE overrides as for dsifn train; model.* keys set the model section of the network the
config names, the others start from their defaults). Run it again with the same options to
resume: finished runs are kept, an interrupted one continues from its last.pt.
"""


def _seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``."""
    try:
        return tuple(int(seed) for seed in comma_separated(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``compare``'s options."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    set_param(
        parser.add_argument("--data", metavar="PATH", help="dataset folder (sets data.root)"),
        "data.root",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the comparison")
    parser.add_argument(
        "--models",
        type=comma_separated,
        default=MODEL_NAMES,
        help=f"networks, comma-separated, in the table's order [{','.join(MODEL_NAMES)}]",
    )
    parser.add_argument("--seeds", type=_seeds, default=(0,), help="one run per seed [0]")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--minutes", type=finite_float, help="wall-clock training budget of every run"
    )
    budget.add_argument("--steps", type=int, help="or: optimiser steps of every run")
    parser.add_argument(
        "--pairs", type=int, default=4, help="test pairs the page shows for every network [4]"
    )
    parser.add_argument(
        "--config",
        help="the recipe: YAML file or bundled config (default, levir, dsifn_cd) [default]",
    )
    add_overwrite_option(parser)
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars or per-round lines"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


def run(args: argparse.Namespace) -> int:
    """Resolve the recipe, check, train and score every run, write the outputs."""
    from dsifn.compare import CompareSettings, run_compare
    from dsifn.distributed import this_process
    from dsifn.training.config import apply_overrides, load_config, parse_overrides

    settings = CompareSettings(
        models=args.models,
        seeds=args.seeds,
        minutes=args.minutes,
        steps=args.steps,
        pairs=args.pairs,
    )
    overrides = parse_overrides(args.overrides)
    if args.data is not None:
        overrides["data.root"] = args.data
    config = apply_overrides(load_config(args.config or "default"), overrides)
    main_process = this_process().is_main
    if main_process and config.data.root:
        from dsifn.data import resolve_layout

        print(resolve_layout(config.data).describe())
    run_compare(
        config,
        settings,
        Path(args.out),
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    return 0
