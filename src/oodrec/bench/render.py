"""A small table model rendered to Markdown, LaTeX (booktabs) and tidy CSV.

Emphasis: the best value of a column is bold (``**x**`` / ``\\textbf{x}``), the second
underlined (``<u>x</u>`` / ``\\underline{x}``). Every table carries its selection label.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Literal

Style = Literal["", "best", "second"]


@dataclass
class Cell:
    """One table cell: display text and emphasis."""

    text: str
    style: Style = ""


@dataclass
class Table:
    """A table with optional column groups (e.g. one group per dataset).

    Attributes:
        title: caption.
        selection: selection label of every run in the table (``selected on val`` or a
            ``TEST-SELECTED ...`` label); shown with the caption.
        label_columns: names of the leading row-label columns.
        columns: value column names (within their group).
        groups: ``(group name, number of value columns)``, covering ``columns`` in order;
            empty for no grouping.
        rows: rows of ``len(label_columns) + len(columns)`` cells.
        notes: lines printed under the table.
        tidy: one dict per value (the CSV rows).
    """

    title: str
    selection: str
    label_columns: list[str]
    columns: list[str]
    groups: list[tuple[str, int]] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tidy: list[dict[str, Any]] = field(default_factory=list)

    def header(self) -> list[str]:
        """Flat column headers (group name prefixed)."""
        names = []
        for group, width in self.groups:
            names += [group] * width
        names += [""] * (len(self.columns) - len(names))
        flat = [f"{g} {c}".strip() for g, c in zip(names, self.columns)]
        return self.label_columns + flat


def rank_styles(values: list[float | None]) -> list[Style]:
    """``best`` for the largest value, ``second`` for the runner-up, ``""`` elsewhere.

    Args:
        values: one value per row (None: no value).

    Returns:
        Styles in the same order; equal values share a rank.
    """
    distinct = sorted({v for v in values if v is not None}, reverse=True)
    rank = {v: i for i, v in enumerate(distinct[:2])}
    out: list[Style] = []
    for v in values:
        r = rank.get(v) if v is not None else None
        out.append("best" if r == 0 else "second" if r == 1 else "")
    return out


def _md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    if cell.style == "best":
        return f"**{text}**"
    if cell.style == "second":
        return f"<u>{text}</u>"
    return text


def _label(selection: str) -> str:
    """The selection label with the test protocol always named (full ranking is unmarked in
    records; ``eval.protocol=candidates`` labels say so themselves)."""
    from oodrec.train.selection import CANDIDATES_LABEL

    return selection if selection.endswith(CANDIDATES_LABEL) else f"{selection}; full ranking"


def to_markdown(table: Table) -> str:
    """Markdown: a heading, the selection label, the table and its notes."""
    head = table.header()
    lines = [f"### {table.title}", "", f"*{_label(table.selection)}*", ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * len(table.label_columns) + ["--:"] * len(table.columns)))
    lines[-1] += "|"
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    lines += [""] + [f"- {n}" for n in table.notes]
    return "\n".join(lines).rstrip() + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters; ``±`` and ``→`` become math symbols."""
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    return out.replace("±", r"$\pm$").replace("→", r"$\rightarrow$")


def _tex_cell(cell: Cell) -> str:
    text = latex_escape(cell.text)
    if cell.style == "best":
        return rf"\textbf{{{text}}}"
    if cell.style == "second":
        return rf"\underline{{{text}}}"
    return text


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    n_label = len(table.label_columns)
    spec = "l" * n_label + "r" * len(table.columns)
    caption = latex_escape(f"{table.title} ({_label(table.selection)})")
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}"]
    lines += [r"\resizebox{\textwidth}{!}{%", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if table.groups:
        cells, rules, col = [""] * n_label, [], n_label + 1
        for group, width in table.groups:
            cells.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(group)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + width - 1}}}")
            col += width
        lines += [" & ".join(cells) + r" \\", " ".join(rules)]
    leaf = table.label_columns + table.columns
    lines += [" & ".join(latex_escape(c) for c in leaf) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    lines += [f"% {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def to_csv(tables: list[Table]) -> str:
    """Tidy CSV of every table's ``tidy`` rows (union of their keys as columns)."""
    rows = [row for t in tables for row in t.tidy]
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


__all__ = ["Cell", "Table", "latex_escape", "rank_styles", "to_csv", "to_latex", "to_markdown"]
