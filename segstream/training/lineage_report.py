"""The lineage part of the report: segment mapping and user transitions, in HTML and a terminal.

Pure rendering of :class:`~segstream.training.lineage.Lineage` (read from the model):
:func:`lineage_html` is a section of ``report.html``; :func:`lineage_renderables` the same
for the ``segstream train`` summary (rich tables and lines). Shown: the previous version and
whether the ids were aligned (or why not), each segment's previous partner and the distance
between their centres, values of the previous vocabularies absent from the new ones, and the
training users by previous segment (rows) and new segment (columns), with the share that kept
their segment id.
"""

from __future__ import annotations

import html
import math

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from segstream.training.lineage import Lineage, Transitions

__all__ = ["lineage_html", "lineage_renderables", "moved_sentence"]


def moved_sentence(transitions: Transitions) -> str:
    """E.g. ``"3,912 of 4,000 users (97.8%) kept their segment id; 88 moved"``."""
    share = transitions.kept_share
    shown = "n/a" if math.isnan(share) else f"{share:.1%}"
    return (
        f"{transitions.kept:,} of {transitions.users:,} users ({shown}) kept their segment id; "
        f"{transitions.moved:,} moved"
    )


def _absent(lineage: Lineage) -> str | None:
    absent = {c: n for c, n in lineage.absent_values.items() if n}
    if not absent:
        return None
    listed = ", ".join(f"{c} {n:,}" for c, n in absent.items())
    return f"previous values absent from the new vocabularies (placed by sort order): {listed}"


def _partner(previous: int | None) -> str:
    return "none (new id)" if previous is None else str(previous)


def _distance(distance: float | None) -> str:
    return "-" if distance is None else f"{distance:.4f}"


def lineage_html(lineage: Lineage | None) -> str:
    """The report's lineage section (an ``<h2>`` and what follows); empty without lineage."""
    if lineage is None:
        return ""
    e = html.escape
    parts = ["<h2>Lineage: segment ids across versions</h2>", f"<p>{e(lineage.reason)}</p>"]
    absent = _absent(lineage)
    if absent:
        parts.append(f"<p>{e(absent)}</p>")
    if lineage.matches:
        rows = "".join(
            f"<tr><td>{m.segment}</td><td>{e(_partner(m.previous))}</td>"
            f"<td class=num>{_distance(m.distance)}</td>"
            f"<td>{'yes' if m.kept_id else 'no'}</td></tr>"
            for m in lineage.matches
        )
        parts.append(
            "<table><tr><th>segment</th><th>matched previous segment</th>"
            "<th>centre distance (PCA space)</th><th>same id</th></tr>"
            f"{rows}</table>"
        )
    t = lineage.transitions
    if t is not None:
        k = len(t.counts[0]) if t.counts else 0
        head = "".join(f"<th>new {s}</th>" for s in range(k))
        body = "".join(
            f"<tr><th>previous {p}</th>"
            + "".join(
                f"<td class=num>{'<b>' if p == s else ''}{n:,}{'</b>' if p == s else ''}</td>"
                for s, n in enumerate(row)
            )
            + "</tr>"
            for p, row in enumerate(t.counts)
        )
        parts.append(
            "<h3>Users moved: this version's training users, previous model (rows) versus "
            "this one (columns)</h3>"
            f"<p>{e(moved_sentence(t))}</p><table><tr><th></th>{head}</tr>{body}</table>"
        )
    return "\n".join(parts)


def lineage_renderables(lineage: Lineage | None) -> list[RenderableType]:
    """What ``segstream train`` prints about the lineage: lines and rich tables."""
    if lineage is None:
        return []
    out: list[RenderableType] = [escape(lineage.reason)]
    absent = _absent(lineage)
    if absent:
        out.append(escape(absent))
    if lineage.matches:
        mapping = Table(title="segment ids: new -> previous")
        for column in ("segment", "previous", "centre distance", "same id"):
            mapping.add_column(column, justify="right")
        for m in lineage.matches:
            mapping.add_row(
                str(m.segment),
                _partner(m.previous),
                _distance(m.distance),
                "yes" if m.kept_id else "no",
            )
        out.append(mapping)
    t = lineage.transitions
    if t is not None:
        k = len(t.counts[0]) if t.counts else 0
        matrix = Table(title="users: previous segment (rows) -> new segment (columns)")
        matrix.add_column("prev", justify="right")
        for s in range(k):
            matrix.add_column(f"new {s}", justify="right")
        for p, row in enumerate(t.counts):
            cells = [f"[bold]{n:,}[/bold]" if p == s else f"{n:,}" for s, n in enumerate(row)]
            matrix.add_row(str(p), *cells)
        out.append(matrix)
        out.append(moved_sentence(t))
    return out
