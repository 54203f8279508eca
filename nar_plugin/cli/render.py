"""Plain-text renderings of library results for the ``nar`` commands.

The library returns data (``summary()`` dicts, dataclasses); turning them into lines of text is
the CLI's job and lives here, so that the library modules hold no presentation code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nar_plugin.motifs import MotifGraph

__all__ = ["format_motif_summary", "graph_report", "matches_table", "dedup_report_text", "stats_text", "sync_text",
           "hf_index_report", "empty_index_hint"]


def format_motif_summary(mg: MotifGraph, top: int | None = 20, width: int = 100) -> str:
    """Plain-text report of a :class:`~nar_plugin.motifs.MotifGraph` for ``nar motifs SOURCE``.

    Args:
        mg: the sampled motifs.
        top: show at most this many types (most frequent first); ``None`` shows all.
        width: maximum line width of the pattern previews.

    Returns:
        A multi-line string: the macro graph size and reduction ratio, then one row per motif
        type (type id, count, size, op-sequence preview), sorted by count.

    Example:
        >>> print(format_motif_summary(sample_motifs(graph), top=5))
    """
    s = mg.summary()
    lines = [
        f"graph: {s['nodes']} nodes, {s['edges']} edges",
        f"macro graph: {s['macro_nodes']} nodes, {s['macro_edges']} edges "
        f"(reduction {s['reduction_ratio']:.1f}x)",
        f"motif types: {s['types']} ({s['repeated_types']} repeated, covering "
        f"{100 * s['repeated_coverage']:.0f}% of nodes); steps={mg.steps} "
        f"min_count={mg.min_count} max_size={mg.max_size}",
        "",
        f"{'type':>5} {'count':>6} {'size':>5}  pattern",
    ]
    rows = s["per_type"] if top is None else s["per_type"][:top]
    room = max(10, width - 20)
    for row in rows:
        text = mg.preview(row["type"])
        if len(text) > room:
            text = text[: room - 3] + "..."
        lines.append(f"{row['type']:>5} {row['count']:>6} {row['size']:>5}  {text}")
    hidden = len(s["per_type"]) - len(rows)
    if hidden > 0:
        lines.append(f"  ... {hidden} more types")
    return "\n".join(lines)


# ------------------------------------------------------------------ rich renderings (nar_plugin.cli commands)
# Each returns what ``rich.console.Console.print`` takes: markup text or a renderable. rich is
# imported inside, so that importing the CLI stays light.
def graph_report(source: str, graph: Any) -> Any:
    """``nar graph``: a header line (sizes, hash, tracer) and the op-count table."""
    from rich.console import Group
    from rich.table import Table

    t = Table("op", "count")
    for op, n in graph.summary()["ops"].items():
        t.add_row(op, str(n))
    head = (f"[bold]{source}[/bold]  nodes={graph.num_nodes} edges={graph.num_edges} "
            f"hash={graph.graph_hash} tracer={graph.metadata.get('tracer', '?')}")
    return Group(head, t)


def matches_table(query: str, matches: Sequence[Any], explain: bool = False) -> Any:
    """``nar similar``: rank, key, score, relation (and why, with ``explain``) per match."""
    from rich.table import Column, Table

    # a key is an id to copy: on a narrow terminal it wraps (fold), it is never cut with "..."
    t = Table("rank", Column("key", overflow="fold"), "score", "relation", *(["why"] if explain else []),
              title=f"similar to {query}")
    for i, m in enumerate(matches, 1):
        t.add_row(str(i), m.key, f"{m.score:.3f}", m.relation, *([str(m.explain())] if explain else []))
    return t


def dedup_report_text(clusters: Sequence[Any]) -> str:
    """``nar dedup``: one line per cluster of registered versions."""
    if not clusters:
        return "no duplicate registered versions"
    return "\n".join(f"[bold]{c.relation}[/bold] (min cosine {c.min_score:.3f}): " + ", ".join(c.members)
                     for c in clusters)


def empty_index_hint(count: int, path: Any) -> str | None:
    """What to do about an empty index (``None`` when it holds entries)."""
    if count:
        return None
    return (f"hint: the index at {path} is empty; add models with `nar index add SOURCE...`, or pull the "
            "nar-tagged models of MLflow with `nar index sync` (reads MLFLOW_TRACKING_URI)")


def stats_text(stats: Mapping[str, Any]) -> str:
    """``nar index stats``: one right-aligned ``name: value`` line per field."""
    return "\n".join(f"{k:>18}: {v}" for k, v in stats.items())


def sync_text(rep: Any) -> str:
    """``nar index sync``: what one MLflow sync added and skipped."""
    return (f"synced {rep.tracking_uri}: {rep.models_added} logged models, {rep.versions_added} model versions "
            f"({'incremental' if rep.incremental else 'full'}; {rep.skipped_untagged} untagged, "
            f"{rep.skipped_other_encoder} from another encoder skipped)")


def hf_index_report(summary: Any, requested: int) -> Any:
    """``nar index hf``: how many repos were indexed, how fast, and a table of the failures."""
    from rich.console import Group
    from rich.table import Table

    head = (f"indexed [bold]{len(summary.indexed)}[/bold] of {requested} repos in {summary.seconds:.1f} s "
            f"({summary.repos_per_minute:.1f}/min)")
    if not summary.failed:
        return head
    t = Table("repo", "error", "message", title="Failures")
    for f in summary.failed:
        t.add_row(f.repo, f.error, f.message)
    return Group(head, t)


def coverage_markdown(cov: dict[str, dict[str, Any]]) -> str:
    """Extraction coverage per library (``nar corpus crosslib coverage --markdown``)."""
    lines = ["| library | models | extracted | failed | coverage | tracer (fx / export) |",
             "|---|---:|---:|---:|---:|---|"]
    tot = [0, 0, 0]
    for lib, c in cov.items():
        tr = c["tracers"]
        lines.append(f"| {lib} | {c['models']} | {c['ok']} | {c['failed']} | {100 * c['ok'] / max(c['models'], 1):.1f}% "
                     f"| {tr.get('fx', 0)} / {tr.get('export', 0)} |")
        tot = [tot[0] + c["models"], tot[1] + c["ok"], tot[2] + c["failed"]]
    lines.append(f"| **all** | {tot[0]} | {tot[1]} | {tot[2]} | {100 * tot[1] / max(tot[0], 1):.1f}% | |")
    fails = [(k, r) for c in cov.values() for k, r in c["failures"].items()]
    if fails:
        lines += ["", "| model | reason |", "|---|---|"]
        lines += [f"| `{k}` | {r[:150].replace('|', '/')} |" for k, r in fails]
    return "\n".join(lines)
