"""Cross-library retrieval: does a model written by one library find the same architecture
written by another?

Data: :func:`nar_plugin.corpus.crosslib.load_cross_library` (the committed benchmark: the
same architectures as implemented by timm, torchvision, transformers, pytorchcv,
efficientnet-pytorch, pretrainedmodels, open_clip, vit-pytorch and segmentation-models-pytorch,
each with a canonical *family* and a *fine* label). See ``docs/cross-library.md``.

Protocol, for every library ``L`` (the *query library*):

* **queries** = ``L``'s models; **gallery** = the models of every *other* library
  (``gallery="others"``, the default: ``L``'s own models are left out, so a query cannot
  succeed by finding a sibling written in its own coding style; ``gallery="all"`` keeps them,
  the query itself excluded).
* **family retrieval**: relevant = same canonical family; MAP@k and MRR@k
  (:func:`~nar_plugin.evaluation.metrics.retrieval_metrics`, ties ranked fairly).
* **same architecture across libraries**: over the queries whose fine label some other library
  also has, the rank of the first gallery item from another library with the same fine label:
  ``top1`` = fraction at rank 1 (tie-fair: a tie group at the top counts its share), MRR@k of
  it, and the median rank.
* Means over libraries are macro averages (each library counts once), also over the libraries
  the shipped encoder never saw (:data:`~nar_plugin.corpus.crosslib.libraries.TRAINING_LIBRARIES`
  are the seen ones).

Methods are *embedders* ``items -> (N, D)`` compared by cosine. :data:`METHODS` names the
built-in ones; pass ``LeaveOneOut(train_fn)`` to evaluate a method retrained without the query
library (``train_fn(excluded_library) -> embedder``; part 2 of issue 16 plugs NAR training in).
``FineRerank(method)`` ranks as :func:`nar_plugin.search.api.find_similar` does: the cosine
order, then the structurally closest of the first ``SHORTLIST`` gallery items moved first
(:mod:`nar_plugin.evaluation.fine_structure`, the same functions). The built-in ``nar`` is
that (the product's ranking); ``nar_cosine`` is the embedding's cosine alone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from nar_plugin.evaluation.metrics import retrieval_metrics

if TYPE_CHECKING:
    from nar_plugin.corpus.crosslib.dataset import CrossLibItem

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "CrossLibraryResult",
    "Embedder",
    "FineRerank",
    "LeaveOneOut",
    "aten_histogram_embed",
    "bookkeeping_ops",
    "first_hit_ranks",
    "make_embedder",
    "pair_cosines",
    "run_cross_library",
]

logger = logging.getLogger(__name__)

#: ``items -> (N, D)`` float array, rows compared by cosine (larger = closer).
Embedder = Callable[[Sequence["CrossLibItem"]], np.ndarray]


@dataclass(frozen=True)
class LeaveOneOut:
    """A method retrained per query library: ``train_fn(excluded_library)`` returns the embedder
    to use for that library's queries (trained on data without it)."""

    train_fn: Callable[[str], Embedder]


@dataclass(frozen=True)
class FineRerank:
    """A method ranked like :func:`~nar_plugin.search.api.find_similar`: its cosine shortlist
    reranked by the fine structural stage (:func:`fine_rerank_scores`)."""

    base: Embedder | LeaveOneOut
    #: least fine similarity that moves a hit first (``None``: the calibrated value,
    #: :func:`~nar_plugin.evaluation.fine_structure.promote_threshold`)
    promote_min: float | None = None

    def __call__(self, items: Sequence[CrossLibItem]) -> np.ndarray:
        if isinstance(self.base, LeaveOneOut):
            raise TypeError("a leave-one-out method embeds per query library (run_cross_library)")
        return self.base(items)


#: Built-in methods (see :func:`make_embedder`), in table order.
METHODS: tuple[str, ...] = ("nar", "nar_cosine", "histogram", "histogram_attrs", "wl", "aten", "aten_compute",
                            "gcn", "gat")
#: Built-in methods ranked with the fine rerank (:class:`FineRerank`).
RERANKED: frozenset[str] = frozenset({"nar"})
#: Methods that need no training.
DEFAULT_METHODS: tuple[str, ...] = ("nar", "histogram", "histogram_attrs", "wl", "aten", "aten_compute")
_LABELS = {"nar_lolo": "NAR (library held out)", "nar": "NAR (shipped)", "nar_cosine": "NAR cosine only",
           "nar_lolo_cosine": "NAR cosine only (held out)", "histogram": "op histogram", "histogram_attrs": "op hist. + attributes",
           "wl": "WL subtree", "aten": "ATen-op hist. (all)", "aten_compute": "ATen-op hist. (compute)",
           "gcn": "GCN", "gat": "GAT"}
#: Columns where smaller is better.
_LOWER_IS_BETTER = frozenset({"fine_median_rank"})


# ------------------------------------------------------------------ embedders
def bookkeeping_ops() -> frozenset[str]:
    """ATen names that move or describe data without computing (views, copies, shape queries,
    factories): the extractor's own fold / constant sets, plus ATen's in-place spellings."""
    from nar_plugin.extract.ops import CONST, FOLD

    base = set(FOLD) | set(CONST) | {"_unsafe_view", "t", "expand", "slice", "select", "unsqueeze", "squeeze",
                                     "permute", "transpose", "clone", "detach", "alias", "copy_", "empty",
                                     "view", "as_strided", "split", "split_with_sizes", "unbind", "lift_fresh"}
    return frozenset(base | {b + "_" for b in base})


def aten_histogram_embed(items: Sequence[CrossLibItem], vocabulary: Sequence[str] | None = None,
                         exclude: frozenset[str] | None = None) -> np.ndarray:
    """Histogram of the raw ATen operator names of one eager forward (``item.aten_ops``).

    Counts are divided by their total (size does not matter) and rows L2-normalised. Items
    without recorded ops give zero rows (they then tie with everything).

    Args:
        items: benchmark items.
        vocabulary: operator names, one column each (default: the sorted union over ``items``).
        exclude: names to leave out (e.g. :func:`bookkeeping_ops`).
    """
    drop = exclude or frozenset()
    vocab = [k for k in (list(vocabulary) if vocabulary is not None
                         else sorted({k for it in items for k in it.aten_ops})) if k not in drop]
    col = {k: i for i, k in enumerate(vocab)}
    out = np.zeros((len(items), len(vocab)), dtype=np.float64)
    for r, it in enumerate(items):
        for k, v in it.aten_ops.items():
            if k in col:
                out[r, col[k]] = v
    tot = out.sum(axis=1, keepdims=True)
    out = out / np.where(tot > 0, tot, 1.0)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def _train_gnn(conv: str, corpus: Any, epochs: int, seed: int) -> Embedder:
    """GCN/GAT baseline trained on the main corpus' by-model train split (NAR's training data)."""
    from nar_plugin.evaluation.gnn_baselines import gnn_embed, train_gnn_baseline
    from nar_plugin.training.data import load_training_corpus, make_split, select_items
    from nar_plugin.training.loop import TrainConfig

    if corpus is None:
        from nar_plugin.corpus import default_corpus_dir

        corpus = default_corpus_dir()
    cfg = TrainConfig()
    entries = select_items(load_training_corpus(corpus), cfg.max_nodes, cfg.max_per_family, seed, cfg.nas_fraction)
    split = make_split(entries, "by_model", seed)
    t = time.time()
    model = train_gnn_baseline([e.graph for e in entries], [e.family for e in entries], split.train,
                               conv=conv, epochs=epochs, seed=seed)  # type: ignore[arg-type]
    logger.info("%s trained on %d corpus graphs in %.0f s", conv, len(split.train), time.time() - t)
    return lambda items: gnn_embed(model, [it.graph for it in items])


def make_embedder(name: str, *, corpus: Any = None, gnn_epochs: int = 20, seed: int = 0,
                  encoder: Any = None) -> Embedder:
    """A built-in method by name (:data:`METHODS`).

    Args:
        name: ``nar`` / ``nar_cosine`` (shipped weights, or ``encoder``; the embedding, which
            :func:`run_cross_library` reranks for ``nar``), ``histogram``, ``histogram_attrs``,
            ``wl``, ``aten`` (every ATen op name), ``aten_compute`` (without views, copies and
            shape ops), ``gcn``, ``gat`` (the last two train on the main corpus first).
        corpus: main corpus directory for ``gcn`` / ``gat``.
        gnn_epochs: their epochs.
        seed: their seed.
        encoder: a :class:`~nar_plugin.model.inference.LoadedEncoder` for ``nar``.

    Raises:
        ValueError: unknown name.
    """
    if name in ("nar", "nar_cosine"):
        def nar(items: Sequence[CrossLibItem]) -> np.ndarray:
            from nar_plugin.model.inference import embed_many

            return embed_many([it.graph for it in items], encoder=encoder)
        return nar
    if name in ("histogram", "histogram_attrs", "wl"):
        from nar_plugin.evaluation.baselines import histogram_embed, wl_embed

        if name == "wl":
            return lambda items: wl_embed([it.graph for it in items])
        attrs = name == "histogram_attrs"
        return lambda items: histogram_embed([it.graph for it in items], attributes=attrs)
    if name == "aten":
        return aten_histogram_embed
    if name == "aten_compute":
        drop = bookkeeping_ops()
        return lambda items: aten_histogram_embed(items, exclude=drop)
    if name in ("gcn", "gat"):
        return _train_gnn(name, corpus, gnn_epochs, seed)
    raise ValueError(f"unknown method {name!r}; expected one of {METHODS}")


# ------------------------------------------------------------------ metrics
def fine_rerank_scores(emb: np.ndarray, descriptions: Sequence[Mapping[str, Any]],
                       queries: Sequence[int] | np.ndarray, gallery: Sequence[int] | np.ndarray,
                       decimals: int = 6, promote_min: float | None = None,
                       shape_weight: float | None = None, related: float | None = None) -> np.ndarray:
    """``(N, N)`` scores ranking as :func:`~nar_plugin.search.api.find_similar` does.

    Row ``q`` (for each query) is the cosine (rounded to ``decimals``), except that the gallery
    item :func:`~nar_plugin.evaluation.fine_structure.promote_first` picks (by
    :func:`~nar_plugin.evaluation.fine_structure.promote_score`) among the query's
    first ``SHORTLIST`` gallery items (cosine order, the query itself left out) gets
    ``cosine + 2``: it ranks first, the rest keep their order. Rows of non-queries are plain
    cosines.

    Args:
        emb: ``(N, D)`` embeddings.
        descriptions: per item, a description with the ``fine`` signature
            (``{"fine": fine_signature(graph)}`` or a full :func:`describe_graph`).
        queries: rows to rerank.
        gallery: the items each query ranks.
        promote_min, shape_weight, related: the rerank's least fine similarity, weight of the
            shape similarity and relation floor (:func:`~nar_plugin.evaluation.fine_structure.promote_first`;
            ``None``: the calibrated values).
    """
    from nar_plugin.evaluation.fine_structure import (
        SHORTLIST,
        promote_first,
        promote_score,
        promote_weights,
        related_threshold,
    )

    least, weight = promote_weights()
    related = related_threshold() if related is None else related
    least = least if promote_min is None else promote_min
    weight = weight if shape_weight is None else shape_weight

    x = np.asarray(emb, dtype=np.float64)
    x = x / np.where((n := np.linalg.norm(x, axis=1, keepdims=True)) > 0, n, 1.0)
    scores = np.round(x @ x.T, decimals)
    g = np.asarray(gallery, dtype=np.int64)
    for q in np.asarray(queries, dtype=np.int64):
        cand = g[g != q]
        short = cand[np.argsort(-scores[q, cand], kind="stable")[:SHORTLIST]]
        pos = promote_first([promote_score(descriptions[q], descriptions[j], weight) for j in short],
                            min_similarity=least, cosines=[float(scores[q, j]) for j in short], related=related)
        if pos is not None:
            scores[q, short[pos]] += 2.0
    return scores


def first_hit_ranks(emb: np.ndarray, labels: Sequence[str], queries: Sequence[int] | np.ndarray,
                    gallery: Sequence[int] | np.ndarray, decimals: int = 6,
                    metric: Literal["cosine", "precomputed"] = "cosine") -> np.ndarray:
    """Expected rank (1-based) of the first gallery item with the query's label, ties fair.

    With ``a`` gallery items scoring strictly above the best relevant score ``s`` and ``m``
    items tied at ``s`` of which ``h`` are relevant, the first relevant item's expected position
    is ``a + (m + 1) / (h + 1)``. Queries without a relevant gallery item get ``nan``.
    ``metric="precomputed"``: ``emb`` is an ``(N, N)`` score matrix (larger = closer).
    """
    x = np.asarray(emb, dtype=np.float64)
    if metric == "cosine":
        x = x / np.where((n := np.linalg.norm(x, axis=1, keepdims=True)) > 0, n, 1.0)
    lab = np.asarray(labels, dtype=object)
    g = np.asarray(gallery, dtype=np.int64)
    q_all = np.asarray(queries, dtype=np.int64)
    out = np.full(q_all.size, np.nan)
    xg = x[g]
    for start in range(0, q_all.size, 256):
        qs = q_all[start:start + 256]
        scores = np.round(x[np.ix_(qs, g)] if metric == "precomputed" else x[qs] @ xg.T, decimals)
        for r, q in enumerate(qs):
            keep = g != q
            s = scores[r, keep]
            rel = lab[g[keep]] == lab[q]
            if not rel.any():
                continue
            best = s[rel].max()
            tied = s == best
            out[start + r] = int((s > best).sum()) + (int(tied.sum()) + 1) / (int((tied & rel).sum()) + 1)
    return out


@dataclass
class CrossLibraryResult:
    """Per method and query library: family retrieval and same-architecture numbers.

    Attributes:
        rows: one dict per (method, library) with ``method``, ``library``, ``queries``,
            ``MAP@k``, ``MRR@k``, ``fine_queries``, ``fine_top1``, ``fine_MRR@k``,
            ``fine_median_rank``, ``seconds``.
        k: the cut-off.
        gallery: ``"others"`` or ``"all"``.
        seen: libraries the shipped encoder was trained on.
    """

    rows: list[dict[str, Any]]
    k: int
    gallery: str
    seen: frozenset[str] = field(default_factory=frozenset)

    def methods(self) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.rows))

    def libraries(self) -> list[str]:
        return list(dict.fromkeys(r["library"] for r in self.rows))

    def mean(self, method: str, column: str, libraries: Sequence[str] | None = None) -> float:
        """Macro average of ``column`` over ``libraries`` (default: all), NaNs ignored."""
        vals = [r[column] for r in self.rows if r["method"] == method
                and (libraries is None or r["library"] in libraries)]
        vals = [v for v in vals if not math.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    def table(self, column: str) -> str:
        """Markdown: libraries as rows, methods as columns, plus macro means (all / unseen)."""
        methods = self.methods()
        head = "| query library | queries | " + " | ".join(_LABELS.get(m, m) for m in methods) + " |"
        lines = [head, "|---|---:|" + "---:|" * len(methods)]
        qcol = "fine_queries" if column.startswith("fine") else "queries"
        pick = min if column in _LOWER_IS_BETTER else max
        for lib in self.libraries():
            cells = []
            by_m = {r["method"]: r for r in self.rows if r["library"] == lib}
            vals = {m: by_m[m][column] for m in methods if m in by_m}
            best = pick((v for v in vals.values() if not math.isnan(v)), default=None)
            for m in methods:
                v = vals.get(m, float("nan"))
                txt = "–" if math.isnan(v) else f"{v:.3f}"
                cells.append(f"**{txt}**" if best is not None and v == best and len(methods) > 1 else txt)
            n = next(iter(by_m.values()))[qcol]
            seen = " (seen)" if lib in self.seen else ""
            lines.append(f"| {lib}{seen} | {int(n)} | " + " | ".join(cells) + " |")
        unseen = [lib for lib in self.libraries() if lib not in self.seen]
        for label, libs in (("mean over libraries", None), ("mean over unseen libraries", unseen)):
            cells = [self.mean(m, column, libs) for m in methods]
            best = pick((v for v in cells if not math.isnan(v)), default=None)
            lines.append(f"| **{label}** | | " + " | ".join(
                ("–" if math.isnan(v) else (f"**{v:.3f}**" if v == best else f"{v:.3f}")) for v in cells) + " |")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        k = self.k
        parts = [f"### Family retrieval, MAP@{k} (gallery: {self.gallery})", "", self.table(f"MAP@{k}"), "",
                 f"### Family retrieval, MRR@{k}", "", self.table(f"MRR@{k}"), "",
                 "### Same architecture across libraries: first hit has the same fine label (top-1)", "",
                 self.table("fine_top1"), "",
                 "### Same top-1, labels of identical networks merged (equal graph hash and parameter count)", "",
                 self.table("fine_top1_identical"), "",
                 f"### Same architecture across libraries: MRR@{k} of the first same-fine-label item", "",
                 self.table(f"fine_MRR@{k}"), "",
                 "### Same architecture across libraries: median rank of the first same-fine-label item", "",
                 self.table("fine_median_rank")]
        return "\n".join(parts)


def run_cross_library(
    items: Sequence[CrossLibItem],
    methods: Sequence[str] | Mapping[str, Embedder | LeaveOneOut] = DEFAULT_METHODS,
    *,
    k: int = 10,
    gallery: Literal["others", "all"] = "others",
    libraries: Sequence[str] | None = None,
    seen: Sequence[str] | None = None,
    method_kwargs: Mapping[str, Any] | None = None,
) -> CrossLibraryResult:
    """Evaluate methods on the cross-library benchmark (see the module docstring).

    Args:
        items: benchmark items (:func:`~nar_plugin.corpus.crosslib.load_cross_library`, or any
            objects with ``key``, ``library``, ``family``, ``fine``, ``graph``, ``aten_ops``).
        methods: built-in names (:data:`METHODS`; ``nar`` is reranked, see :class:`FineRerank`)
            or ``{name: embedder | LeaveOneOut | FineRerank}``.
        k: cut-off of MAP / MRR.
        gallery: ``"others"`` (other libraries only) or ``"all"`` (every other item).
        libraries: query libraries (default: every library present, in item order).
        seen: libraries the method was trained on (marked in tables; default: timm,
            torchvision, transformers).
        method_kwargs: passed to :func:`make_embedder` for built-in names.

    Returns:
        A :class:`CrossLibraryResult`.

    Raises:
        ValueError: unknown method or gallery, or fewer than two libraries.
    """
    if gallery not in ("others", "all"):
        raise ValueError(f"gallery must be 'others' or 'all', found {gallery!r}")
    if isinstance(methods, Mapping):
        specs: dict[str, Embedder | LeaveOneOut | FineRerank] = dict(methods)
    else:
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; expected some of {METHODS}")
        specs = {m: make_embedder(m, **dict(method_kwargs or {})) for m in methods}
        if "nar" in specs and "nar_cosine" in specs:  # one embedding, ranked two ways
            specs["nar_cosine"] = specs["nar"]
        specs = {m: FineRerank(e) if m in RERANKED else e for m, e in specs.items()}
    libs_all = list(dict.fromkeys(it.library for it in items))
    if len(libs_all) < 2:
        raise ValueError(f"cross-library retrieval needs items of at least two libraries, found {libs_all}")
    query_libs = list(libraries) if libraries is not None else libs_all
    if seen is None:
        from nar_plugin.corpus.crosslib.libraries import TRAINING_LIBRARIES

        seen = sorted(TRAINING_LIBRARIES)
    lib = np.asarray([it.library for it in items], dtype=object)
    fam = [it.family for it in items]
    fine = [it.fine for it in items]
    from nar_plugin.corpus.crosslib.dataset import identical_network_labels

    fine_same = identical_network_labels(items, fine)  # a diagnostic column (fine_top1_identical)
    rows: list[dict[str, Any]] = []
    descriptions: list[dict[str, Any]] | None = None
    # one embedding per embedder object: a reranked and a cosine-only column of one method, and
    # the query libraries a leave-one-out method answers with one encoder, embed once
    embedded: dict[int, tuple[Embedder, np.ndarray]] = {}

    def embed(fn: Embedder) -> np.ndarray:
        if id(fn) not in embedded:
            embedded[id(fn)] = (fn, np.asarray(fn(items)))  # the object kept: its id stays unique
        return embedded[id(fn)][1]

    for name, spec in specs.items():
        rerank = isinstance(spec, FineRerank)
        base = spec.base if isinstance(spec, FineRerank) else spec
        if rerank and descriptions is None:
            from nar_plugin.evaluation.fine_structure import fine_signature

            descriptions = [{"fine": fine_signature(it.graph)} for it in items]
        for L in query_libs:
            t = time.perf_counter()
            emb = embed(base.train_fn(L) if isinstance(base, LeaveOneOut) else base)
            q = np.flatnonzero(lib == L)
            others = np.flatnonzero(lib != L)
            g = others if gallery == "others" else np.arange(len(items))
            metric: Literal["cosine", "precomputed"] = "cosine"
            raw = emb
            if rerank:
                assert descriptions is not None
                emb, metric = fine_rerank_scores(raw, descriptions, q, g, promote_min=spec.promote_min), "precomputed"
            fm = retrieval_metrics(emb, fam, ks=(k,), queries=q, gallery=g, metric=metric)
            # same architecture: first item of *another* library with the query's fine label
            fine_other = {fine[i] for i in others}
            qf = np.asarray([i for i in q if fine[i] in fine_other], dtype=np.int64)
            if qf.size:
                # with gallery="all" a reranked row's shortlist may hold the query's own library
                fe, fmetric = emb, metric
                if rerank and gallery != "others":
                    assert descriptions is not None
                    fe = fine_rerank_scores(raw, descriptions, qf, others, promote_min=spec.promote_min)
                ff = retrieval_metrics(fe, fine, ks=(1, k), queries=qf, gallery=others, metric=fmetric)
                ranks = first_hit_ranks(fe, fine, qf, others, metric=fmetric)
                top1, fmrr, med = ff["MRR@1"], ff[f"MRR@{k}"], float(np.nanmedian(ranks))
                same = retrieval_metrics(fe, fine_same, ks=(1,), queries=qf, gallery=others, metric=fmetric)["MRR@1"]
            else:
                top1 = fmrr = med = same = float("nan")
            rows.append({"method": name, "library": L, "queries": int(fm["queries"]),
                         "skipped_queries": int(fm["skipped_queries"]), f"MAP@{k}": fm[f"MAP@{k}"],
                         f"MRR@{k}": fm[f"MRR@{k}"], "fine_queries": int(qf.size), "fine_top1": top1,
                         f"fine_MRR@{k}": fmrr, "fine_median_rank": med, "fine_top1_identical": same,
                         "seconds": round(time.perf_counter() - t, 2)})
            logger.info("%s / %s: MAP@%d %.3f, fine top-1 %.3f (%d queries)", name, L, k, fm[f"MAP@{k}"], top1,
                        q.size)
    return CrossLibraryResult(rows, k, gallery, frozenset(seen))


def pair_cosines(items: Sequence[CrossLibItem], pairs: Sequence[tuple[str, str]],
                 methods: Mapping[str, Embedder]) -> list[dict[str, Any]]:
    """Cosine of named item pairs under each method (``{"a", "b", method: cosine...}``).

    Only the items of the pairs are embedded (for the ``aten`` histogram the vocabulary is then
    the pairs' own, which leaves the cosine of a pair unchanged).

    Raises:
        KeyError: a key is not among ``items``.
    """
    by_key = {it.key: it for it in items}
    need = list(dict.fromkeys(k for p in pairs for k in p))
    missing = [k for k in need if k not in by_key]
    if missing:
        raise KeyError(f"not in the benchmark items: {missing}")
    sub = [by_key[k] for k in need]
    pos = {k: i for i, k in enumerate(need)}
    out = [{"a": a, "b": b} for a, b in pairs]
    for name, fn in methods.items():
        e = np.asarray(fn(sub), dtype=np.float64)
        e = e / np.where((n := np.linalg.norm(e, axis=1, keepdims=True)) > 0, n, 1.0)
        for row, (a, b) in zip(out, pairs):
            row[name] = float(e[pos[a]] @ e[pos[b]])
    return out
