"""``dsifn compare`` from start to end: check, train and score every run, write the outputs.

:func:`run_compare` checks everything that can fail before any training (the options, outputs
that exist, runs of another configuration in the folder, the dataset's train, val and test
splits), then takes the runs one after the other, seed by seed: a finished run (one with its
``result.json``) is kept, an interrupted one resumes from its ``last.pt``, a new one starts.
Each is trained through :func:`dsifn.training.train` (DDP under ``torchrun``: every process
joins one process group for all the runs), then scored on one process
(:func:`dsifn.compare.runs.score_run`). The table, picture and page are written at the end,
by that process, the page last.

Files under ``out``: ``runs/<model>-s<seed>/`` (ordinary run directories, each with its
``result.json``), ``compare.md``, ``compare.csv``, ``compare.json``, ``compare.png``,
``pairs/`` (the page's pictures) and ``compare.html``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsifn.benchmark.hardware import environment
from dsifn.compare.figures import plot_comparison
from dsifn.compare.page import (
    PAIRS_FOLDER,
    choose_pairs,
    pair_picture_paths,
    render_page,
    write_pair_pictures,
)
from dsifn.compare.plan import CompareSettings, PlannedRun, RunState, plan_runs, run_state
from dsifn.compare.runs import read_result, score_run, train_run, write_result
from dsifn.compare.table import Summary, csv_text, header, json_data, markdown, rows, summarise
from dsifn.data import resolve_layout
from dsifn.devices import resolve_device
from dsifn.distributed import DistContext, on_main, setup_distributed
from dsifn.errors import ConfigError, OutputExistsError
from dsifn.io.atomic import check_output_path, staged
from dsifn.models.dsifn import DSIFNConfig
from dsifn.models.registry import model_entry
from dsifn.models.vgg import fetch_encoder_weights
from dsifn.training.config import TrainConfig
from dsifn.training.engine import Callback

__all__ = ["OUTPUTS", "CompareResult", "run_compare"]

# The comparison's own files under its folder, the page first (written last).
OUTPUTS = ("compare.html", "compare.md", "compare.csv", "compare.json", "compare.png")


@dataclass(frozen=True)
class CompareResult:
    """What :func:`run_compare` wrote (returned on every process)."""

    out: Path  # the comparison's folder
    summaries: list[Summary]  # one per network, in the table's order
    records: list[dict[str, Any]]  # each run's result.json record, in run order
    files: list[Path]  # the table, picture and page


def run_compare(
    base: TrainConfig,
    settings: CompareSettings,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    callbacks: Sequence[Callback] = (),
) -> CompareResult:
    """Train every network of ``settings`` on ``base``'s data and recipe; compare them.

    Args:
        base: The recipe every run shares (``data.root`` must be set).
        settings: Networks, seeds, budget and pairs shown.
        out: The comparison's folder.
        overwrite: Replace the table, picture, page and pairs' pictures, and runs of another
            configuration (runs of this one are kept: delete a run's folder to run it again).
        progress: Show progress bars.
        log: Where the messages go (on the writing process only).
        callbacks: Passed to every training run (called after each validation round).

    Raises:
        OutputExistsError: If an output, or a run of another configuration, is in the way.
        ConfigError, DataError: On a configuration or dataset that cannot be compared on.
    """
    folder = Path(out)
    device = resolve_device(base.run.device)
    ctx = setup_distributed(device)  # one group for every run; train() joins it
    try:
        if ctx.distributed and device.type == "cuda":
            torch.cuda.set_device(torch.device("cuda", ctx.local_rank))
        runs = plan_runs(base, settings, folder)
        states = on_main(ctx, lambda: _check(base, settings, folder, runs, overwrite=overwrite))
        say = log if ctx.is_main else _quiet
        records = [
            _one_run(run, state, i, len(runs), ctx, progress=progress, say=say, callbacks=callbacks)
            for i, (run, state) in enumerate(zip(runs, states, strict=True), start=1)
        ]
        return on_main(ctx, lambda: _write_outputs(base, settings, folder, records, overwrite, say))
    finally:
        ctx.close()


def _quiet(text: str) -> None:
    """Processes other than the first say nothing."""


def _check(
    base: TrainConfig,
    settings: CompareSettings,
    out: Path,
    runs: Sequence[PlannedRun],
    *,
    overwrite: bool,
) -> list[RunState]:
    """Everything that can fail before training, in the order it is met; each run's state."""
    if not base.data.root:
        raise ConfigError("no dataset given: pass `data.root=PATH`")
    for name in OUTPUTS:
        check_output_path(out / name, overwrite=overwrite)
    pairs = out / PAIRS_FOLDER
    if not overwrite and pairs.is_dir() and any(pairs.iterdir()):
        raise OutputExistsError(f"{pairs} holds pictures; pass `overwrite=True` to replace them")
    states = [run_state(run, overwrite=overwrite) for run in runs]
    # A DSIFN's pretrained encoder, fetched (or refused) now, not hours on: each file once, for
    # the runs that start from it (one resumed or finished has its weights in its checkpoint).
    sources: dict[str, None] = {}
    for run, state in zip(runs, states, strict=True):
        model = run.config.model
        if state in ("new", "restart") and isinstance(model, DSIFNConfig):
            if model.encoder_weights is not None:
                sources.setdefault(model.encoder_weights)
    for source in sources:
        fetch_encoder_weights(source)
    val = base.validation.split
    resolve_layout(base.data).require(
        ("train", val, "test"),
        f"a comparison trains on train, tunes its thresholds on {val} and scores test",
    )
    return states


def _one_run(
    run: PlannedRun,
    state: RunState,
    number: int,
    count: int,
    ctx: DistContext,
    *,
    progress: bool,
    say: Callable[[str], None],
    callbacks: Sequence[Callback],
) -> dict[str, Any]:
    """Train and score ``run`` unless it is finished; its record (on the writing process)."""
    what = f"[{number}/{count}] {run.label}: {model_entry(run.model).title}, seed {run.seed}"
    if state == "done":
        say(f"{what}: finished before, kept")
    else:
        verb = "resuming" if state == "resume" else "training"
        say(f"{what}: {verb}")
        train_run(run, state, progress=progress, callbacks=callbacks)
        on_main(
            ctx,
            lambda: write_result(run, score_run(run, processes=ctx.world_size, progress=progress)),
        )
    if not ctx.is_main:
        return {}
    record = read_result(run)
    scores, training = record["scores"], record["training"]
    say(
        f"      test F1 {100 * scores['f1']:.2f} % at threshold {record['threshold']:.3f} "
        f"(tuned on val), {training['steps']} steps, {training['pairs_per_second']:.1f} "
        f"training pairs/s, {record['inference']['pairs_per_second']:.1f} inference pairs/s"
    )
    return record


def _write_outputs(
    base: TrainConfig,
    settings: CompareSettings,
    out: Path,
    records: list[dict[str, Any]],
    overwrite: bool,
    say: Callable[[str], None],
) -> CompareResult:
    """The table (Markdown, CSV, JSON), the picture, the page and its pairs' pictures.

    All staged together and moved into place page last, so that a failure leaves none of them;
    when overwriting, an earlier comparison's pictures that the page no longer shows go.
    """
    summaries = summarise(records)
    details = _details(base, settings, records)
    notes = _notes(base, settings, records)
    title = f"dsifn compare: {Path(base.data.root).name or base.data.root}"
    first_seed = [r for r in records if r["seed"] == settings.seeds[0]]
    checkpoints = {
        r["model"]: out / "runs" / f"{r['model']}-s{r['seed']}" / "best.pt" for r in first_seed
    }
    names = choose_pairs(records[0]["per_image"], settings.pairs)
    pictures = [out / path for path in pair_picture_paths(names, list(checkpoints))]
    titles = {s.model: s.title for s in summaries}
    size = summaries[0].flops_size
    table = markdown(summaries, notes)
    finals = [out / name for name in OUTPUTS]
    # The pictures go with the other outputs, the page moved into place last: a failure
    # leaves none of them.
    with staged([*finals, *pictures], overwrite=overwrite) as paths:
        html, md, csv, js, png = paths[: len(finals)]
        pairs = write_pair_pictures(
            out,
            names,
            checkpoints,
            root=base.data.root,
            layout=base.data.layout,
            device=base.run.device,
            precision=base.run.precision,
            where=dict(zip(pictures, paths[len(finals) :], strict=True)),
        )
        page = render_page(
            title=title,
            details=details,
            header=header(size),
            rows=rows(summaries),
            notes=notes,
            picture="compare.png",
            titles=titles,
            pairs=pairs,
        )
        html.write_text(page, encoding="utf-8")
        md.write_text(f"# {title}\n\n" + table, encoding="utf-8")
        csv.write_text(csv_text(summaries), encoding="utf-8")
        js.write_text(_json(json_data(summaries, records, {"details": details, "notes": notes})))
        plot_comparison(summaries, png, title=f"{title}: {settings.budget()} per run")
    if overwrite:
        _remove_stale_pictures(out / PAIRS_FOLDER, pictures)
    say(table)
    say(f"wrote {', '.join(str(f) for f in finals)} and {out / PAIRS_FOLDER}/")
    return CompareResult(out, summaries, records, finals)


def _remove_stale_pictures(folder: Path, kept: Sequence[Path]) -> None:
    """Remove an earlier comparison's pictures that this one's page does not show."""
    if not folder.is_dir():
        return
    for picture in set(folder.glob("*.png")) - set(kept):
        if picture.is_file():
            picture.unlink()


def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def _details(
    base: TrainConfig, settings: CompareSettings, records: Sequence[dict[str, Any]]
) -> dict[str, str]:
    """The page's key/value lines: what was compared, how long, where."""
    machine = environment(resolve_device(base.run.device))
    where = machine.get("gpu") or machine["cpu"]
    return {
        "data": f"{base.data.root} (layout {base.data.layout})",
        "networks": ", ".join(model_entry(m).title for m in settings.models),
        "seeds": ", ".join(map(str, settings.seeds)),
        "budget": f"{settings.budget()} of training per run",
        "test pairs": str(records[0]["test_pairs"]),
        "machine": f"{where} ({machine['device']}, {machine['threads']} threads), torch "
        f"{machine['torch']}, dsifn {machine['dsifn']}, {machine['date_utc']}",
    }


def _notes(
    base: TrainConfig, settings: CompareSettings, records: Sequence[dict[str, Any]]
) -> list[str]:
    """What the table's numbers are, in a few lines under it."""
    run, speed = base.run, records[0]["inference"]
    crop = f"{base.data.crop_size}-pixel crops" if base.data.crop_size else "whole images"
    spread = "mean ± sample standard deviation" if len(settings.seeds) > 1 else "one seed"
    clock = " (validation rounds included)" if settings.minutes is not None else ""
    return [
        f"Every run trained for {settings.budget()}{clock} on the same {crop} in the same "
        f"order (batch {run.batch_size}, seed per run); loss, optimiser and schedule the same "
        "for every network.",
        "Scores on the test split at the decision threshold tuned for F1 on the "
        f"{base.validation.split} split, from one confusion matrix over all its pixels; "
        f"{spread} over seeds {', '.join(map(str, settings.seeds))}.",
        f"GFLOPs: one forward pass of a pair of {records[0]['flops_size']}² pixels. Train "
        "pairs/s: pairs trained per second of training, validation excluded. Infer pairs/s: "
        f"the model as dsifn predict runs it, batches of {speed['batch']} pairs of "
        f"{speed['size']}² on {speed['device']} ({speed['precision']}).",
    ]
