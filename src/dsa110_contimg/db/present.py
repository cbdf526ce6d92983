"""Query results as text people read (aligned tables, trees) or machines read (CSV, JSON).

Used by ``contimg products ...``; kept apart from the queries so the report
and status commands can reuse both halves.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .queries import Node

FORMATS = ("table", "csv", "json")

#: Columns of ``products list --format table`` (CSV and JSON have every column).
LIST_COLUMNS = ("kind", "group_id", "status", "grade", "cal_status", "path")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Mapping | list):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """An aligned plain-text table; the last column is not padded (paths are long)."""
    cells = [[_text(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [list(columns), *cells]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths[:-1])) + "  " + line[-1]
        for line in lines
    ).rstrip()


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV with a header; the columns are the union over rows, in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_text(row.get(c)) for c in columns])
    return out.getvalue().rstrip("\n")


def to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, indent=2, sort_keys=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Node):
        return value.to_dict()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def products(rows: Sequence[Mapping[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return to_json(list(rows))
    if fmt == "csv":
        return to_csv(rows)
    rows = [{**row, "path": _short(row["path"])} for row in rows]
    return table(rows, LIST_COLUMNS) + f"\n{len(rows)} product(s)"


def _short(path: str) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


# ----------------------------------------------------------------- trees


def _label(node: Node) -> str:
    if node.kind == "file":
        return f"file        {_short(node.path)}  (not in the database)"
    state = node.status or "missing"
    details = ", ".join(f"{k}={_text(v)}" for k, v in node.summary.items())
    text = f"{node.kind:<11} {_short(node.path)}  [{state}]"
    if details:
        text += f"  {details}"
    if node.repeated:
        text += "  (shown above)"
    return text


def _raw_summary(raws: list[Node]) -> str:
    """Many raw subband files of one product as one line."""
    names = sorted((os.path.basename(r.path) for r in raws), key=lambda n: n.rsplit("_sb", 1)[-1])
    folder = _short(os.path.dirname(raws[0].path))
    missing = sum(r.status is None for r in raws)
    text = f"raw         {len(raws)} files in {folder}: {names[0]} .. {names[-1]}"
    return text + (f"  ({missing} deleted)" if missing else "")


def tree(node: Node) -> str:
    """A provenance tree drawn with box characters; sibling raw files folded into one line."""
    lines = [_label(node)]

    def children(parent: Node, prefix: str) -> None:
        raws = [c for c in parent.children if c.kind == "raw"]
        items: list[Node | list[Node]] = [c for c in parent.children if c.kind != "raw"]
        if len(raws) > 2:
            items.append(raws)
        else:
            items.extend(raws)
        for i, item in enumerate(items):
            last = i == len(items) - 1
            branch, extend = ("└─ ", "   ") if last else ("├─ ", "│  ")
            if isinstance(item, list):
                lines.append(prefix + branch + _raw_summary(item))
                continue
            lines.append(prefix + branch + _label(item))
            children(item, prefix + extend)

    children(node, "")
    return "\n".join(lines)


def flat(node: Node, direction: str) -> list[dict[str, Any]]:
    """A tree as rows (depth, kind, path, status) for CSV."""
    rows: list[dict[str, Any]] = []

    def visit(n: Node, depth: int) -> None:
        rows.append(
            {"direction": direction, "depth": depth, "kind": n.kind, "path": n.path,
             "status": n.status, "group_id": n.group_id}
        )  # fmt: skip
        for child in n.children:
            visit(child, depth + 1)

    visit(node, 0)
    return rows


def show(product: Mapping[str, Any] | None, down: Node, up: Node, fmt: str) -> str:
    """``products show``: the product's columns, what it was made from, what was made from it."""
    if fmt == "json":
        return to_json({"product": product, "provenance": down, "derived": up})
    if fmt == "csv":
        return to_csv(flat(down, "provenance") + flat(up, "derived")[1:])
    parts = []
    if product is not None:
        width = max(len(k) for k in product)
        parts.append(
            "\n".join(f"{k:<{width}}  {_text(v)}" for k, v in product.items() if k != "qa")
        )
    parts.append("made from:\n" + tree(down))
    parts.append("used by:\n" + (tree(up) if up.children else _label(up) + "\n(nothing yet)"))
    return "\n\n".join(parts)


# ------------------------------------------------------------------ night


def night(summary: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        return to_json(summary)
    if fmt == "csv":
        rows = [{**row, "failed": "; ".join(row["failed"])} for row in summary["groups"]]
        return to_csv(rows)
    totals = summary["totals"]
    head = (
        f"night {summary['night']} (UTC): {totals['seen']} group(s) seen "
        f"({totals['complete']} complete, {totals['incomplete']} incomplete), "
        f"{totals['converted']} converted, {totals['calibrated']} calibrated, "
        f"{totals['imaged']} imaged, {totals['photometry']} with photometry, "
        f"{totals['failed']} failed"
    )
    rows = [
        {
            **row,
            "stage": _stage(row),
            "flagged": _fraction(row.get("flagged_fraction")),
            "rfi": _fraction(row.get("rfi_flagged_fraction")),
            "failed": "; ".join(row["failed"]),
        }
        for row in summary["groups"]
    ]
    parts = [head]
    if rows:
        parts.append(table(rows, ("group", "raw", "stage", "grade", "flagged", "rfi", "failed")))
    others = [f for f in summary["failures"] if f["group"] is None]
    if others:
        parts.append(
            "other failures:\n"
            + "\n".join(f"  {f['rule']} {_text(f['wildcards'])}: {f['reason']}" for f in others)
        )
    return "\n".join(parts)


def _fraction(value: float | None) -> str:
    """A flagged fraction to three decimals ("" when unknown)."""
    return "" if value is None else f"{value:.3f}"


def _stage(row: Mapping[str, Any]) -> str:
    """The furthest stage a group reached."""
    for key, label in (
        ("photometry", "photometry"),
        ("imaged", "imaged"),
        ("calibrated", "calibrated"),
        ("converted", "converted"),
    ):
        if row[key]:
            return label
    return {True: "raw", False: "incomplete", None: "raw (not registered)"}[row["complete"]]


__all__ = ["FORMATS", "flat", "night", "products", "show", "table", "to_csv", "to_json", "tree"]
