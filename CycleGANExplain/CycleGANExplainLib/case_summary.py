"""One table per case: a row per nodule (label, seed, p(x), p(G-(x)), p(G+(x)), whether each counterfactual
reached the other class, caveats, files), for every front end.

The command line writes it as case_summary.csv and case_summary.md and prints it; the Slicer module fills
a table node (mrml_case) with the same columns. ``COLUMNS`` is the one list of columns: a new one (an
explanation through the nodule's extent, say) is one more entry. Probabilities are the seed's own
(centre) slice's. Research use only.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .caveats import explanation_caveats, reached_benign, reached_malignant
from .explanation import Explanation
from .formatting import probability_text
from .notices import RESEARCH_NOTICE

CSV_FILE = "case_summary.csv"
MARKDOWN_FILE = "case_summary.md"


class CaseRow(NamedTuple):
    """One nodule of a case."""

    number: int
    label: str
    seed_ras: Tuple[float, float, float]
    p_x: float
    p_neg: float
    p_pos: float
    caveat_codes: Tuple[str, ...]
    files: Dict[str, str]
    """Output files by kind ("figure", "overlay"); empty where nothing is written (the Slicer module)."""


class Column(NamedTuple):
    key: str
    """The CSV's and the table node's header: stable, machine-readable."""
    title: str
    """The Markdown table's header, for people."""
    value: Callable[[CaseRow], str]


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


COLUMNS: Tuple[Column, ...] = (
    Column("number", "#", lambda row: str(row.number)),
    Column("label", "Label", lambda row: row.label),
    Column("R_mm", "R (mm)", lambda row: f"{row.seed_ras[0]:.1f}"),
    Column("A_mm", "A (mm)", lambda row: f"{row.seed_ras[1]:.1f}"),
    Column("S_mm", "S (mm)", lambda row: f"{row.seed_ras[2]:.1f}"),
    Column("p_x", "p(x)", lambda row: probability_text(row.p_x)),
    Column("p_G_neg", "p(G-(x))", lambda row: probability_text(row.p_neg)),
    Column("p_G_pos", "p(G+(x))", lambda row: probability_text(row.p_pos)),
    Column("G_neg_reached_benign", "G- benign", lambda row: _yes_no(reached_benign(row.p_neg))),
    Column("G_pos_reached_malignant", "G+ malignant", lambda row: _yes_no(reached_malignant(row.p_pos))),
    Column("caveats", "Caveats", lambda row: " ".join(row.caveat_codes)),
)


def case_row(number: int, label: Optional[str], explanation: Explanation, method: str,
             files: Optional[Dict[str, str]] = None) -> CaseRow:
    """The row of one explained seed (``label`` None: "seed N")."""
    return CaseRow(number, label or f"seed {number}", tuple(round(float(v), 3) for v in explanation.seed_ras),
                   explanation.p_x, explanation.p_neg, explanation.p_pos,
                   tuple(caveat.code for caveat in explanation_caveats(explanation, method)), dict(files or {}))


def file_kinds(rows: Sequence[CaseRow]) -> List[str]:
    """The kinds of file any row has, in first-seen order: one column each, after COLUMNS."""
    kinds: List[str] = []
    for row in rows:
        kinds += [kind for kind in row.files if kind not in kinds]
    return kinds


def table(rows: Sequence[CaseRow]) -> Tuple[List[Column], List[List[str]]]:
    """The columns (COLUMNS, then one per file kind) and each row's cells as text."""
    columns = list(COLUMNS) + [Column(kind, kind.capitalize(), lambda row, kind=kind: row.files.get(kind, ""))
                               for kind in file_kinds(rows)]
    return columns, [[column.value(row) for column in columns] for row in rows]


def write_csv(path: Path, rows: Sequence[CaseRow]) -> Path:
    columns, cells = table(rows)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([column.key for column in columns])
        writer.writerows(cells)
    return path


def _markdown_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown(rows: Sequence[CaseRow], heading: str) -> str:
    """A Markdown table of the case under ``heading`` (bundle, method), with the research notice."""
    columns, cells = table(rows)
    lines = [f"# {heading}", "", RESEARCH_NOTICE, "",
             "| " + " | ".join(column.title for column in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, rows: Sequence[CaseRow], heading: str) -> Path:
    path.write_text(markdown(rows, heading), encoding="utf-8")
    return path
