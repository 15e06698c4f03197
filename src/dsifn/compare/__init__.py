"""``dsifn compare``: DSIFN and the paper's baselines, trained and scored alike, side by side.

:func:`run_compare` trains every network named (DSIFN, FC-EF, FC-Siam-conc, FC-Siam-diff,
CDNet) for the same budget on the same crops in the same order, for each seed; tunes each
one's threshold on val, scores test through the one evaluation core, and writes a table, a
picture and an HTML page. The parts: :mod:`~dsifn.compare.plan` (settings and runs),
:mod:`~dsifn.compare.runs` (training and scoring one), :mod:`~dsifn.compare.table`,
:mod:`~dsifn.compare.figures`, :mod:`~dsifn.compare.page` and
:mod:`~dsifn.compare.workflow` (the order of it all).
"""

from dsifn.compare.plan import CompareSettings, PlannedRun
from dsifn.compare.table import Summary
from dsifn.compare.workflow import OUTPUTS, CompareResult, run_compare

__all__ = ["OUTPUTS", "CompareResult", "CompareSettings", "PlannedRun", "Summary", "run_compare"]
