"""The comparison's HTML page: the table, the picture, and test pairs predicted by every network.

:func:`choose_pairs` picks the test pairs to show, the same for every network: evenly spaced
over the split among those with change in their reference. :func:`pair_picture_paths` names
their pictures before any is made, and :func:`write_pair_pictures` writes them, staged with the
comparison's other outputs: each pair's dates and reference once, and each network's error map
of it (predicted by its first seed's ``best.pt`` at its tuned threshold, through the one
batched-prediction rule, :func:`dsifn.inference.pipeline.predict_images`); :func:`render_page`
is the page as text.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsifn.contract import is_change
from dsifn.data import ChangeDetectionDataset, reading_config
from dsifn.evaluation.report import (
    error_legend,
    error_map,
    mask_to_gray,
    page_head,
    safe_name,
)
from dsifn.evaluation.scoring import image_result
from dsifn.inference.loading import load_runner
from dsifn.inference.pipeline import predict_images
from dsifn.io.pictures import display_stretch, write_png

__all__ = [
    "PairPictures",
    "choose_pairs",
    "pair_picture_paths",
    "render_page",
    "write_pair_pictures",
]

PAIRS_FOLDER = "pairs"  # the pictures of the page's pairs, beside the page
_DATES = ("before", "after", "reference")  # each pair's pictures before the error maps
# Beyond the package's style: a wide picture, numbers on one line, a column per network.
_STYLE = """<style>
td { white-space: nowrap; }
figure img { max-width: 1100px; }
.pair img { width: 128px; }
</style>"""


@dataclass(frozen=True)
class PairPictures:
    """One test pair's pictures, as paths relative to the page, and each network's F1 on it."""

    name: str
    dates: dict[str, str]  # "before", "after", "reference" -> picture
    errors: dict[str, str]  # model.name -> its error map
    f1: dict[str, float]  # model.name -> its F1 on this pair


def choose_pairs(per_image: Mapping[str, Sequence[int]], count: int) -> list[str]:
    """``count`` test pairs, evenly spaced over the split, among those with change.

    Args:
        per_image: Name to (tp, fp, fn, tn) of every test pair (any network's: the reference
            change, tp + fn, is the same for all), in the split's order.
        count: How many to show.

    Returns:
        Pair names, in the split's order (all pairs when fewer have change than ``count``).
    """
    names = list(per_image)
    changed = [n for n in names if per_image[n][0] + per_image[n][2] > 0]
    pool = changed if len(changed) >= count else names
    if count <= 0 or not pool:
        return []
    picks = np.linspace(0, len(pool) - 1, min(count, len(pool))).round().astype(int)
    return [pool[i] for i in sorted(set(picks.tolist()))]


def pair_picture_paths(names: Sequence[str], models: Sequence[str]) -> list[str]:
    """Every picture :func:`write_pair_pictures` writes, relative to the page, in its order.

    Planned before anything is predicted, so that the pictures are checked and staged with
    the comparison's other outputs (:func:`dsifn.io.atomic.staged`).

    Args:
        names: The pairs to show.
        models: model.name of every network shown.
    """
    paths = []
    for name in names:
        stem = safe_name(name)
        paths += [f"{PAIRS_FOLDER}/{stem}_{kind}.png" for kind in (*_DATES, *models)]
    return paths


def write_pair_pictures(
    out: Path,
    names: Sequence[str],
    checkpoints: Mapping[str, Path],
    *,
    root: str,
    layout: str,
    device: str,
    precision: str,
    where: Mapping[Path, Path],
) -> list[PairPictures]:
    """Write each pair's dates, reference and every network's error map, staged.

    Args:
        out: The page's folder.
        names: The pairs to show.
        checkpoints: model.name -> the checkpoint that predicts them (its tuned threshold).
        root: The dataset.
        layout: Its layout (``"auto"`` detects it).
        device: Where the networks run.
        precision: In which precision.
        where: ``out / path`` of every picture of :func:`pair_picture_paths` -> the staged
            path it is written at.
    """
    if not names:
        return []
    runners = {
        m: load_runner(path, device=device, precision=precision) for m, path in checkpoints.items()
    }
    first = next(iter(runners.values()))
    test = ChangeDetectionDataset(reading_config(first.contract, root, layout), "test")
    found = []
    for name in names:
        sample = test[test.names.index(name)]
        stem = safe_name(name)
        dates = _write_dates(out, stem, sample, where)
        errors, f1 = {}, {}
        for model, runner in runners.items():
            probability = predict_images(runner, sample["image"].numpy()[None])[0]
            threshold = runner.contract.threshold
            predicted = is_change(probability, threshold)
            relative = f"{PAIRS_FOLDER}/{stem}_{model}.png"
            picture = error_map(predicted, sample["mask"], sample["valid"])
            write_png(where[out / relative], picture)
            errors[model] = relative
            counted = image_result(
                name, torch.from_numpy(probability), sample["mask"], sample["valid"], threshold
            )
            f1[model] = counted.f1
        found.append(PairPictures(name, dates, errors, f1))
    return found


def _write_dates(
    out: Path, stem: str, sample: Mapping[str, Any], where: Mapping[Path, Path]
) -> dict[str, str]:
    """The pair's before, after and reference pictures; their paths relative to ``out``."""
    has_data = sample["has_data"].numpy()[0].astype(bool)
    image = sample["image"].float().numpy()
    before, after = display_stretch([image[0], image[1]], [has_data, has_data])
    pictures = {"before": before, "after": after, "reference": mask_to_gray(sample["mask"])}
    paths = {}
    for kind in _DATES:
        relative = f"{PAIRS_FOLDER}/{stem}_{kind}.png"
        write_png(where[out / relative], pictures[kind])
        paths[kind] = relative
    return paths


def render_page(
    *,
    title: str,
    details: Mapping[str, str],
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    notes: Sequence[str],
    picture: str,
    titles: Mapping[str, str],
    pairs: Sequence[PairPictures],
) -> str:
    """The page as a string (pure: no file access).

    Args:
        title: The page's title.
        details: Key/value lines under it (data, budget, seeds, machine).
        header: The table's column names.
        rows: The table's cells.
        notes: Lines under the table.
        picture: The picture's path relative to the page.
        titles: model.name -> the network's title, in the table's order.
        pairs: The pairs shown.
    """
    esc = html.escape
    parts = [
        *page_head(title),
        _STYLE,
        "<p>" + "<br>".join(f"<b>{esc(k)}</b>: {esc(v)}" for k, v in details.items()) + "</p>",
        "<h2>Test scores, mean ± standard deviation over seeds</h2>",
        "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>",
    ]
    for cells in rows:
        first, *rest = cells
        parts.append(
            f'<tr><td class="name">{esc(first)}</td>'
            + "".join(f"<td>{esc(c)}</td>" for c in rest)
            + "</tr>"
        )
    parts.append("</table><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    parts.append(
        f'<figure><img src="{esc(picture)}" alt="F1 and precision-recall of every network">'
        "<figcaption>F1 on test (bars: mean, whiskers: standard deviation, dots: seeds) and "
        "precision-recall curves on test</figcaption></figure>"
    )
    if pairs:
        parts += _pairs_table(titles, pairs)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _pairs_table(titles: Mapping[str, str], pairs: Sequence[PairPictures]) -> list[str]:
    """The same test pairs, predicted by every network, side by side."""
    esc = html.escape
    heads = ["pair", "before", "after", "reference", *titles.values()]
    parts = [
        "<h2>The same test pairs, predicted by every network</h2>",
        error_legend(),
        '<table class="pair"><tr>' + "".join(f"<th>{esc(h)}</th>" for h in heads) + "</tr>",
    ]
    for pair in pairs:
        cells = [f'<td class="name">{esc(pair.name)}</td>']
        cells += [f'<td><img src="{esc(p)}" alt="{k}"></td>' for k, p in pair.dates.items()]
        for model in titles:
            picture, f1 = pair.errors[model], 100 * pair.f1[model]
            cells.append(f'<td><img src="{esc(picture)}" alt="{esc(model)}"><br>F1 {f1:.1f}</td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return parts
