"""Markdown statistics of a built corpus (what ``docs/corpus.md`` quotes).

``nar corpus stats --markdown`` prints it: counts and families per source, the largest
families, failure reasons, transformers' success rate per modality, duplicate graphs, build
time and size.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from nar_plugin.corpus.pool import normalise_category
from nar_plugin.corpus.store import CorpusStore, load_records

__all__ = ["corpus_markdown"]


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    h = list(header)
    lines = ["| " + " | ".join(h) + " |", "|" + "|".join("---" for _ in h) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _rate(ok: int, n: int) -> str:
    return f"{ok}/{n} ({100.0 * ok / n:.0f}%)" if n else "0/0"


def _modality(rec: Mapping[str, Any]) -> str:
    """Recorded modality; for items that timed out (the parent wrote the record), from the class."""
    m = rec.get("info", {}).get("modality")
    if m:
        return str(m)
    from nar_plugin.corpus.transformers_source import modality, model_class

    try:
        return modality(model_class(rec["name"].split("/")[0]))
    except Exception:  # noqa: BLE001 - report only
        return "unknown"


def corpus_markdown(root: str | os.PathLike[str], top: int = 10) -> str:
    """A Markdown report of the corpus at ``root``.

    Raises:
        FileNotFoundError / StaleCorpusError: as :func:`~nar_plugin.corpus.load_records`.
    """
    store = CorpusStore(root, create=False)
    manifest: Mapping[str, Any] = store.manifest
    recs = list(load_records(root))
    by_src: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        by_src[r["source"]].append(r)
    out: list[str] = []
    size = store.size_bytes()
    out.append(f"Corpus format v{manifest['format_version']}, vocabulary v{manifest['vocab_version']}, "
               f"{size / 1e6:.1f} MB compressed; libraries: "
               + ", ".join(f"{k} {v}" for k, v in sorted(manifest.get("libraries", {}).items())) + ".")

    # ---- counts per source
    rows = []
    fam_all: Counter[str] = Counter()
    for src, rs in by_src.items():
        st = Counter(r["status"] for r in rs)
        fams = Counter(r["family"] for r in rs if r["status"] == "ok")
        fam_all.update(fams)
        last = manifest.get("sources", {}).get(src, {}).get("last_build", {})
        rows.append([src, len(rs), st["ok"], st["error"], st["skipped"], len(fams),
                     sum(1 for n in fams.values() if n >= 2), f"{last.get('seconds', 0) / 60:.1f}",
                     last.get("graphs_per_minute", "")])
    rows.append(["**total**", len(recs), sum(r[2] for r in rows), sum(r[3] for r in rows),
                 sum(r[4] for r in rows), len(fam_all), sum(1 for n in fam_all.values() if n >= 2), "", ""])
    out.append("\n### Counts per source\n")
    out.append(_table(["source", "tried", "ok", "failed", "skipped", "families", "families >= 2",
                       "last build (min)", "graphs/min"], rows))

    # ---- families
    out.append("\n### Largest families per source\n")
    rows = []
    for src, rs in by_src.items():
        fams = Counter(r["family"] for r in rs if r["status"] == "ok")
        sizes = sorted(fams.values())
        med = sizes[len(sizes) // 2] if sizes else 0
        rows.append([src, ", ".join(f"{f} ({n})" for f, n in fams.most_common(top)), med,
                     sum(1 for n in fams.values() if n == 1)])
    out.append(_table(["source", f"top {top} families (members)", "median size", "singletons"], rows))
    shared = defaultdict(set)
    for r in recs:
        if r["status"] == "ok":
            shared[r["family"]].add(r["source"])
    cross = sorted(f for f, s in shared.items() if len(s) > 1)
    out.append(f"\nFamilies shared by several sources ({len(cross)}): " + (", ".join(cross) or "none") + ".")

    # ---- duplicates
    hashes: dict[str, set[str]] = defaultdict(set)
    in_family: Counter[tuple[str, str]] = Counter()
    for r in recs:
        if r["status"] == "ok":
            h = r["info"].get("graph_hash")
            hashes[h].add(r["family"])
            in_family[(r["family"], h)] += 1
    dup_within = sum(n - 1 for n in in_family.values() if n > 1)
    dup_across = sum(1 for fams in hashes.values() if len(fams) > 1)
    out.append(f"\nIdentical graphs: {dup_within} items repeat a graph of their own family "
               f"(`load_corpus(dedupe=True)` drops them); {dup_across} graphs occur in more than one family.")

    # ---- failures
    out.append("\n### Failure and skip reasons (top per source)\n")
    rows = []
    for src, rs in by_src.items():
        cats = Counter(normalise_category(r.get("category", "")) for r in rs if r["status"] != "ok")
        for cat, n in cats.most_common(top):
            rows.append([src, n, cat])
    out.append(_table(["source", "items", "reason (names and numbers masked)"], rows) if rows else "None.")

    # ---- transformers by modality
    hf = by_src.get("transformers", [])
    if hf:
        out.append("\n### transformers: success rate per modality\n")
        rows = []
        mods: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in hf:
            mods[_modality(r)].append(r)
        for m, rs in sorted(mods.items(), key=lambda kv: -len(kv[1])):
            d = [r for r in rs if r["info"].get("variant", "default") == "default"]
            v = [r for r in rs if r["info"].get("variant", "default") != "default"]
            rows.append([m, _rate(sum(r["status"] == "ok" for r in d), len(d)),
                         _rate(sum(r["status"] == "ok" for r in v), len(v))])
        d = [r for r in hf if r["info"].get("variant", "default") == "default"]
        v = [r for r in hf if r["info"].get("variant", "default") != "default"]
        rows.append(["**all**", _rate(sum(r["status"] == "ok" for r in d), len(d)),
                     _rate(sum(r["status"] == "ok" for r in v), len(v))])
        out.append(_table(["modality", "default configs built", "scaled variants built"], rows))
        ed = [r for r in d if r["info"].get("encoder_decoder")]
        if ed:
            out.append(f"\nEncoder-decoder model types (any modality): {_rate(sum(r['status'] == 'ok' for r in ed), len(ed))}.")
        attempts = Counter(r["info"].get("inputs", "main") for r in hf if r["status"] == "ok")
        out.append("Built items by input attempt: " + ", ".join(f"{k} {v}" for k, v in sorted(attempts.items()))
                   + " (`main`: `dummy_inputs`; `tensor-outputs`: same inputs, cache outputs dropped; "
                   "`all-modalities`: every input the forward accepts).")
    return "\n".join(out) + "\n"


def main() -> None:  # pragma: no cover - ``python -m nar_plugin.corpus.report DIR``
    import sys

    print(corpus_markdown(sys.argv[1] if len(sys.argv) > 1 else "corpus"))


if __name__ == "__main__":  # pragma: no cover
    main()

