"""The comparison's picture: each network's test F1 with its spread, and its precision-recall curve.

Left, the F1 of every network on the test split at the threshold tuned on val: a bar at the
mean over seeds, the sample standard deviation as an error bar and each seed as a dot. Right,
the precision-recall curve of every network on the test split (the counts of all seeds
pooled), with its operating point (the mean precision and recall at the tuned thresholds).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dsifn.compare.table import Summary
from dsifn.io.atomic import atomic_path

__all__ = ["plot_comparison"]


def plot_comparison(
    summaries: Sequence[Summary], path: Path, *, title: str = "", overwrite: bool = False
) -> Path:
    """Draw the picture as a PNG, atomically.

    Args:
        summaries: One per network, in the table's order.
        path: The PNG to write.
        title: A line above both panels (data, budget, seeds).
        overwrite: Replace an existing file.

    Returns:
        The path written.
    """
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.2, top=0.86, wspace=0.25)
    bars, curves = fig.subplots(1, 2)
    colours = [f"C{i}" for i in range(len(summaries))]
    for i, (summary, colour) in enumerate(zip(summaries, colours, strict=True)):
        f1 = summary.scores["f1"]
        bars.bar(i, 100 * f1.mean, color=colour, alpha=0.6)
        if f1.std is not None:
            bars.errorbar(i, 100 * f1.mean, yerr=100 * f1.std, color="black", capsize=4)
        bars.plot([i] * len(f1.values), [100 * v for v in f1.values], "o", color="black", ms=3)
        recall, precision = summary.pr_curve
        curves.plot(recall, precision, color=colour, label=summary.title)
        point = (summary.scores["recall"].mean, summary.scores["precision"].mean)
        curves.plot(*point, "o", color=colour, markeredgecolor="black")
    bars.set_xticks(range(len(summaries)), [s.title for s in summaries], rotation=20)
    bars.set_ylabel("test F1 (%)")
    bars.set_title("F1 on test: mean, standard deviation and seeds")
    bars.grid(axis="y", alpha=0.3)
    curves.set_xlabel("recall")
    curves.set_ylabel("precision")
    curves.set_xlim(0, 1)
    curves.set_ylim(0, 1.02)
    curves.set_title("precision-recall on test (dots: tuned thresholds)")
    curves.grid(alpha=0.3)
    if summaries:
        curves.legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
