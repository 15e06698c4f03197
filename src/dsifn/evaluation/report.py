"""Pictures and an HTML report of an evaluation.

Pure functions turn tensors into pictures (:func:`error_map`, :func:`mask_to_gray`; the dates
through the package's one display stretch, :func:`dsifn.io.pictures.display_stretch`);
:class:`ReportWriter` writes them (:func:`dsifn.io.pictures.write_png`) per image as an
evaluation streams its predictions, and at the end an HTML page (``report.html``) that links
them by relative paths: the summary table, then every image sorted from the worst F1 to the
best with before, after, reference, prediction and error side by side.

Error-map colours: true positive white, false positive red, false negative green, true
negative black; pixels without a reference label (``valid`` False) grey. Predicted masks
are transparent where either date has no data, as ``dsifn predict``'s PNG maps are.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from dsifn.evaluation.results import (
    EvaluationResult,
    ImageResult,
    Prediction,
    image_f1,
)
from dsifn.io.atomic import atomic_path, check_output_path
from dsifn.io.pictures import display_stretch, write_png

__all__ = [
    "ERROR_COLOURS",
    "STYLE",
    "ReportWriter",
    "error_legend",
    "error_map",
    "mask_to_gray",
    "page_head",
    "render_html",
    "safe_name",
    "write_json",
]

# RGB colour of each outcome in an error map.
ERROR_COLOURS: dict[str, tuple[int, int, int]] = {
    "tp": (255, 255, 255),
    "fp": (255, 0, 0),
    "fn": (0, 255, 0),
    "tn": (0, 0, 0),
    "ignored": (128, 128, 128),
}


def _as_bool(array: NDArray[Any] | Tensor) -> NDArray[np.bool_]:
    values = array.detach().cpu().numpy() if isinstance(array, Tensor) else np.asarray(array)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        raise ValueError(f"expected a (H, W) or (1, H, W) map; got shape {values.shape}")
    return values.astype(bool)


def error_map(
    pred: NDArray[Any] | Tensor,
    ref: NDArray[Any] | Tensor,
    valid: NDArray[Any] | Tensor | None = None,
) -> NDArray[np.uint8]:
    """Colour each pixel by its outcome: TP white, FP red, FN green, TN black, unlabelled grey.

    Args:
        pred: (H, W) or (1, H, W) predicted change, anything non-zero is change.
        ref: Reference change of the same shape.
        valid: Optional map of the same shape, False where the reference is not labelled.

    Returns:
        (H, W, 3) uint8 RGB picture.
    """
    p, r = _as_bool(pred), _as_bool(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction {p.shape} and reference {r.shape} differ in shape")
    out = np.zeros((*p.shape, 3), np.uint8)
    out[p & r] = ERROR_COLOURS["tp"]
    out[p & ~r] = ERROR_COLOURS["fp"]
    out[~p & r] = ERROR_COLOURS["fn"]
    if valid is not None:
        out[~_as_bool(valid)] = ERROR_COLOURS["ignored"]
    return out


def mask_to_gray(mask: NDArray[Any] | Tensor) -> NDArray[np.uint8]:
    """(H, W) or (1, H, W) binary map -> (H, W) uint8 picture, change 255, no change 0."""
    out: NDArray[np.uint8] = np.where(_as_bool(mask), 255, 0).astype(np.uint8)
    return out


def write_json(path: str | os.PathLike[str], data: Any, *, overwrite: bool) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)


def safe_name(name: str) -> str:
    """A file-name-safe version of a pair name (path separators and odd characters replaced)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or "pair"


@dataclass(frozen=True)
class _Row:
    result: ImageResult
    pictures: dict[str, str]  # picture kind -> path relative to the output folder


class ReportWriter:
    """Writes per-image pictures while an evaluation runs, then ``report.html``.

    Use its :meth:`__call__` as ``on_prediction`` of :func:`dsifn.evaluation.scoring.evaluate`.

    Files under ``out``: ``masks/<name>.png`` (prediction, 0/255) when ``masks``,
    ``errors/<name>.png`` when ``errors``, and for the report ``report/<name>_t1.png``,
    ``_t2.png``, ``_ref.png`` plus the masks and error maps (written whenever ``report`` is on).
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        masks: bool = False,
        errors: bool = False,
        report: bool = False,
        overwrite: bool = False,
    ) -> None:
        """Prepare the output folders.

        Args:
            out: Output folder.
            masks: Write predicted masks.
            errors: Write error maps.
            report: Write the pictures the HTML report shows (implies masks and errors).
            overwrite: Replace existing files.
        """
        self.out = Path(out)
        self.report = report
        self.masks = masks or report
        self.errors = errors or report
        self.overwrite = overwrite
        self.rows: list[_Row] = []
        self._stems: dict[str, str] = {}  # pair name -> file name stem
        self._taken: set[str] = set()  # the stems of _stems, as a set
        self._where: dict[Path, Path] = {}  # final path -> where it is written (staged)

    def _stem(self, name: str) -> str:
        if name not in self._stems:
            base = safe_name(name)
            stem, k = base, 1
            while stem in self._taken:  # two names that sanitise alike must not share files
                k += 1
                stem = f"{base}_{k}"
            self._stems[name] = stem
            self._taken.add(stem)
        return self._stems[name]

    def _files(self, name: str) -> dict[str, str]:
        """The pictures of one pair: kind -> path relative to the output folder."""
        stem = self._stem(name)
        files = {}
        if self.masks:
            files["prediction"] = f"masks/{stem}.png"
        if self.errors:
            files["error"] = f"errors/{stem}.png"
        if self.report:
            for kind in ("before", "after", "reference"):
                files[kind] = f"report/{stem}_{kind}.png"
        return files

    def planned(self, names: Sequence[str]) -> list[Path]:
        """Every file it will write for the pairs ``names``: pictures, then ``report.html``.

        Called before an evaluation, it fixes the pictures' names in this order, so that
        they can be checked (and staged, :meth:`stage`) before anything is written.
        """
        paths = [self.out / rel for name in names for rel in self._files(name).values()]
        return paths + ([self.out / "report.html"] if self.report else [])

    def stage(self, where: Mapping[Path, Path]) -> None:
        """Write each final path given at the staged path it maps to (:func:`staged`)."""
        self._where = dict(where)

    def _write(self, rel: str, picture: NDArray[np.uint8], valid: Any = None) -> None:
        final = self.out / rel
        where = self._where.get(final)
        write_png(where or final, picture, valid=valid, overwrite=self.overwrite or bool(where))

    def __call__(self, item: Prediction) -> None:
        """Write the pictures of one image and remember its scores."""
        files = self._files(item.name)
        pred, has_data = item.prediction, _as_bool(item.has_data)
        pictures: dict[str, NDArray[np.uint8]] = {}
        if self.masks:
            pictures["prediction"] = mask_to_gray(pred)
        if self.errors:
            pictures["error"] = error_map(pred, item.mask, item.valid)
        if self.report:
            dates = [item.image[0].float().numpy(), item.image[1].float().numpy()]
            pictures["before"], pictures["after"] = display_stretch(dates, [has_data] * 2)
            pictures["reference"] = mask_to_gray(item.mask)
        for kind, picture in pictures.items():
            self._write(files[kind], picture, has_data if kind == "prediction" else None)
        self.rows.append(_Row(item.result, files))

    def write_html(
        self,
        result: EvaluationResult,
        *,
        title: str = "dsifn evaluation",
        details: dict[str, str] | None = None,
        figures: Sequence[tuple[str, str]] = (),
        comparison: Sequence[tuple[str, EvaluationResult]] = (),
    ) -> Path:
        """Write ``report.html`` (atomically) and return its path.

        Args:
            result: The split's scores.
            title: Page title.
            details: Extra key/value lines for the header (checkpoint, data, split...).
            figures: (caption, path relative to ``out``) of further pictures (curves).
            comparison: Other methods' results on the same split, shown in the summary table.
        """
        page = render_html(
            result,
            self.rows,
            title=title,
            details=details or {},
            figures=figures,
            comparison=comparison,
        )
        path = self.out / "report.html"
        where = self._where.get(path)
        check_output_path(where or path, overwrite=self.overwrite or bool(where))
        with atomic_path(where or path, overwrite=self.overwrite or bool(where)) as tmp:
            tmp.write_text(page, encoding="utf-8")
        return path


# The style sheet of the package's HTML pages (this report, ``dsifn compare``'s page).
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; }
td.name { text-align: left; }
.pair img { width: 160px; image-rendering: pixelated; border: 1px solid #ccc; }
.pair td { text-align: center; vertical-align: top; }
.legend span { display: inline-block; width: 12px; height: 12px; border: 1px solid #888;
  margin: 0 4px 0 12px; vertical-align: middle; }
figure { display: inline-block; margin: 0 1em 1em 0; }
figure img { max-width: 640px; }
"""


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def page_head(title: str) -> list[str]:
    """The first lines of one of the package's HTML pages, up to its ``<h1>`` title."""
    esc = html.escape
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]


def render_html(
    result: EvaluationResult,
    rows: Sequence[_Row],
    *,
    title: str,
    details: dict[str, str],
    figures: Sequence[tuple[str, str]] = (),
    comparison: Sequence[tuple[str, EvaluationResult]] = (),
) -> str:
    """The report page as a string (pure: no file access).

    Images are sorted from the worst F1 to the best (ties: most wrong pixels first).
    """
    esc = html.escape
    parts = page_head(title)
    if details:
        parts.append("<p>" + "<br>".join(f"<b>{esc(k)}</b>: {esc(v)}" for k, v in details.items()))
        parts.append("</p>")
    parts += _summary(result, comparison)
    for caption, path in figures:
        parts.append(
            f'<figure><img src="{esc(path)}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )
    if rows:
        parts += _image_table(rows)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary(
    result: EvaluationResult, comparison: Sequence[tuple[str, EvaluationResult]]
) -> list[str]:
    """The scores table of every method and the confusion matrix of the first."""
    header = "".join(
        f"<th>{h}</th>"
        for h in ("method", "precision", "recall", "F1", "IoU", "OA", "kappa", "threshold")
    )
    parts = ["<h2>Summary (%)</h2>", f"<table><tr>{header}</tr>"]
    for name, res in [("DSIFN", result), *comparison]:
        cells = "".join(
            f"<td>{_pct(res.scores[k])}</td>"
            for k in ("precision", "recall", "f1", "iou", "oa", "kappa")
        )
        parts.append(
            f'<tr><td class="name">{html.escape(name)}</td>{cells}<td>{res.threshold:.4g}</td></tr>'
        )
    parts.append("</table>")
    parts.append(
        "<table><tr><th></th><th>predicted change</th><th>predicted no change</th></tr>"
        f'<tr><td class="name">reference change</td><td>TP {result.tp:,d}</td>'
        f"<td>FN {result.fn:,d}</td></tr>"
        f'<tr><td class="name">reference no change</td><td>FP {result.fp:,d}</td>'
        f"<td>TN {result.tn:,d}</td></tr></table>"
    )
    parts.append(
        f"<p>{result.images} image pairs, {result.pixels:,d} labelled pixels; scores from one "
        "confusion matrix over all of them.</p>"
    )
    return parts


def error_legend() -> str:
    """The HTML line that says what each colour of an error map means."""
    legend = "".join(
        f'<span style="background: rgb{ERROR_COLOURS[k]}"></span>{label}'
        for k, label in (
            ("tp", "true positive"),
            ("fp", "false positive"),
            ("fn", "false negative"),
            ("tn", "true negative"),
            ("ignored", "not labelled"),
        )
    )
    return f'<p class="legend">Error map:{legend}</p>'


def _image_table(rows: Sequence[_Row]) -> list[str]:
    """Every image's pictures and scores, from the worst F1 to the best."""
    esc = html.escape
    parts = [
        "<h2>Images, worst F1 first</h2>",
        error_legend(),
        '<table class="pair"><tr><th>pair</th><th>F1 %</th><th>before</th><th>after</th>'
        "<th>reference</th><th>prediction</th><th>error</th></tr>",
    ]
    ordered = sorted(
        rows,
        key=lambda row: (
            image_f1(row.result.tp, row.result.fp, row.result.fn),
            -(row.result.fp + row.result.fn),
            row.result.name,
        ),
    )
    for row in ordered:
        r = row.result
        cells = "".join(
            f'<td><img src="{esc(row.pictures[k])}" alt="{k}"></td>'
            if k in row.pictures
            else "<td>-</td>"
            for k in ("before", "after", "reference", "prediction", "error")
        )
        parts.append(
            f'<tr><td class="name">{esc(r.name)}<br><small>TP {r.tp} FP {r.fp} FN {r.fn}'
            f"</small></td><td>{_pct(image_f1(r.tp, r.fp, r.fn))}</td>{cells}</tr>"
        )
    parts.append("</table>")
    return parts
