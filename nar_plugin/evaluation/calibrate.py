"""Calibrate the relation thresholds of :func:`nar_plugin.find_similar`.

The shipped thresholds come from :func:`calibrate_cross_library` (``nar train`` runs it): pairs
of models written by two different libraries (issue 16), rules in its docstring.
:func:`calibrate` is the earlier, within-corpus rule, kept as a function of embeddings and labels:

A pair of corpus architectures is *positive* when both belong to one family. For each threshold
``t`` on cosine (larger = closer), precision = share of pairs with cosine >= t that are positive,
recall = share of positive pairs with cosine >= t. We pick:

- ``related``: the ``t`` with the best F1 for "same family";
- ``near_duplicate``: the ``t`` with the best precision among thresholds that still keep at
  least ``near_min_recall`` (5%) of the same-family pairs, and at least ``related``.

Why not fixed precision targets: with the shipped encoder no global threshold reaches 0.9
precision for "same family" (at cosine 0.99 it is 0.64 on the real-architecture sources); the
embedding ranks well (MAP) but its absolute scale differs between families. The chosen values
and the precision/recall they give are recorded, not hidden. Identical graphs (same hash) are
excluded: they are ``identical`` by hash, not by threshold. Only real architectures are used
(timm, torchvision, transformers): NAS cells of different families differ only in one cell's
wiring and would dominate the pair counts.
The result, with the precision and recall each threshold gives, is written to
``weights/thresholds.json`` and read by :func:`nar_plugin.search.api.load_thresholds`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nar_plugin.utils.io import read_versioned_json, write_versioned_json

__all__ = [
    "THRESHOLDS_FORMAT",
    "THRESHOLDS_FORMAT_VERSION",
    "calibrate",
    "calibrate_cross_library",
    "precision_recall_at",
    "read_thresholds",
    "write_thresholds",
]

THRESHOLDS_FORMAT = "nar-thresholds"
#: Bump when the fields of ``thresholds.json`` change.
THRESHOLDS_FORMAT_VERSION = 1


def _pairs(emb: np.ndarray, families: Sequence[str], hashes: Sequence[str] | None,
           max_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(emb)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, max_items), replace=False))
    e = emb[idx]
    fam = np.asarray([families[i] for i in idx])
    sim = e @ e.T
    iu = np.triu_indices(len(idx), k=1)
    scores = sim[iu]
    pos = fam[iu[0]] == fam[iu[1]]
    if hashes is not None:
        h = np.asarray([hashes[i] for i in idx])
        keep = h[iu[0]] != h[iu[1]]
        scores, pos = scores[keep], pos[keep]
    return scores.astype(np.float64), pos


def precision_recall_at(scores: np.ndarray, positive: np.ndarray, t: float) -> tuple[float, float]:
    """(precision, recall) of "cosine >= t" for positive pairs."""
    sel = scores >= t
    tp = float(np.sum(positive & sel))
    prec = tp / max(1.0, float(np.sum(sel)))
    rec = tp / max(1.0, float(np.sum(positive)))
    return prec, rec


def _best_f1(scores: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    tp = np.cumsum(p)
    n = np.arange(1, len(s) + 1)
    f1 = 2 * tp / (n + max(1, int(p.sum())))
    return float(s[int(np.argmax(f1))])


def _best_precision(scores: np.ndarray, positive: np.ndarray, min_recall: float) -> float:
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    tp = np.cumsum(p)
    prec = tp / np.arange(1, len(s) + 1)
    recall = tp / max(1, int(p.sum()))
    ok = np.nonzero(recall >= min_recall)[0]
    if len(ok) == 0:
        return 1.0
    i = ok[int(np.argmax(prec[ok]))]
    return float(s[i])


def calibrate(emb: np.ndarray, families: Sequence[str], hashes: Sequence[str] | None = None,
              near_min_recall: float = 0.05, max_items: int = 4000, seed: int = 0) -> dict[str, Any]:
    """Thresholds and the precision/recall they give on same-family retrieval.

    Args:
        emb: (N, D) unit embeddings of corpus items.
        families: family label per item.
        hashes: graph hash per item (identical pairs are left out).
        near_min_recall: the near-duplicate threshold keeps at least this share of the
            same-family pairs.
        max_items: pairs are formed within a seeded subsample of this many items.
    """
    scores, pos = _pairs(np.asarray(emb, dtype=np.float32), families, hashes, max_items, seed)
    related = _best_f1(scores, pos)
    near = max(related, _best_precision(scores, pos, near_min_recall))
    pr, rr = precision_recall_at(scores, pos, related)
    pn, rn = precision_recall_at(scores, pos, near)
    return {
        "related": round(related, 4), "near_duplicate": round(near, 4),
        "related_precision": round(pr, 4), "related_recall": round(rr, 4),
        "near_duplicate_precision": round(pn, 4), "near_duplicate_recall": round(rn, 4),
        "pairs": len(scores), "positive_pairs": int(pos.sum()),
        "rules": {"related": "best F1 for same-family pairs",
                  "near_duplicate": f"best precision at recall >= {near_min_recall}"},
        "sources": "timm, torchvision, transformers",
    }


def write_thresholds(result: dict[str, Any], path: str | os.PathLike[str], encoder_version: str) -> None:
    """Store calibration next to the weights (atomically), tagged with the encoder it belongs to.

    Args:
        result: a :func:`calibrate` result.
        path: the JSON file (``thresholds.json`` beside the weights).
        encoder_version: the encoder whose embeddings were calibrated; readers use the file
            only with that encoder.
    """
    write_versioned_json(path, THRESHOLDS_FORMAT, THRESHOLDS_FORMAT_VERSION,
                         {**result, "encoder": encoder_version})


def read_thresholds(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a file written by :func:`write_thresholds` (the :func:`calibrate` fields + ``encoder``).

    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptArtifactError: not a thresholds file of a format version this code reads.
    """
    return read_versioned_json(path, THRESHOLDS_FORMAT, THRESHOLDS_FORMAT_VERSION)


def _cross_pairs(emb: np.ndarray, items: Sequence[Any], keep: np.ndarray, descriptions: Sequence[Any],
                 floor: float) -> dict[str, np.ndarray]:
    """Pairs of items of two different libraries (both in ``keep``), identical graphs left out.

    ``fine_sim``: the fine similarity (:func:`~nar_plugin.evaluation.fine_structure.fine_similarity`)
    and ``shapes``: whether the parameter shapes agree up to a head
    (:func:`~nar_plugin.evaluation.fine_structure.shapes_near`), of the pairs with cosine >=
    ``floor`` (0 / False below: no near-duplicate rule goes below it)."""
    from nar_plugin.evaluation.fine_structure import fine_similarity, shapes_near

    idx = np.flatnonzero(keep)
    iu = np.triu_indices(len(idx), k=1)
    a, b = idx[iu[0]], idx[iu[1]]
    lib = np.asarray([it.library for it in items])
    hsh = np.asarray([it.graph.graph_hash for it in items])
    sel = (lib[a] != lib[b]) & (hsh[a] != hsh[b])
    a, b = a[sel], b[sel]
    fam = np.asarray([it.family for it in items])
    fine = np.asarray([it.fine for it in items])
    scores = np.einsum("ij,ij->i", emb[a], emb[b]).astype(np.float64)
    fsim, shapes = np.zeros(len(a)), np.zeros(len(a), dtype=bool)
    for i in np.flatnonzero(scores >= floor):
        fsim[i] = fine_similarity(descriptions[a[i]], descriptions[b[i]]) or 0.0
        shapes[i] = bool(shapes_near(descriptions[a[i]], descriptions[b[i]]))
    return {"scores": scores, "fine_sim": fsim, "shapes": shapes, "family": fam[a] == fam[b],
            "fine": fine[a] == fine[b], "a": a, "b": b}


def _choose_shapes_floor(pairs: dict[str, np.ndarray], floor: float, target: float,
                         min_recall: float) -> tuple[float, str]:
    """(cosine threshold >= ``floor``, rule) of the near-duplicate decision "parameter shapes
    agree up to a head and cosine >= t" for "same fine label": the most recall with precision
    >= ``target`` and recall >= ``min_recall``; else the best precision with recall >=
    ``min_recall`` (ties: more recall); else the best F1."""
    c, pos = pairs["scores"], pairs["fine"]
    total = max(1, int(pos.sum()))
    m = pairs["shapes"] & (c >= floor)
    rows = []
    for t in np.unique(np.concatenate([[floor], np.round(c[m & pos], 3)])):
        sel = m & (c >= t)
        tp = int(np.sum(sel & pos))
        p, r = tp / max(1, int(sel.sum())), tp / total
        rows.append((float(t), p, r, 2 * p * r / (p + r) if p + r else 0.0))
    enough = [row for row in rows if row[2] >= min_recall]
    hit = [row for row in enough if row[1] >= target]
    if hit:
        return max(hit, key=lambda row: (row[2], row[1]))[0], f"most recall with precision >= {target} and recall >= {min_recall}"
    if enough:
        return max(enough, key=lambda row: (row[1], row[2]))[0], f"best precision at recall >= {min_recall}"
    return max(rows, key=lambda row: row[3])[0], "best F1"


def _choose_near(pairs: dict[str, np.ndarray], floor: float, target: float,
                 min_recall: float) -> tuple[float, float, str]:
    """(cosine threshold >= ``floor``, fine threshold, rule) of the near-duplicate decision
    "cosine >= t1 and fine similarity >= t2" for "same fine label": the most recall among the
    pairs of thresholds with precision >= ``target`` and recall >= ``min_recall``; else the best
    precision with recall >= ``min_recall``; else the best F1."""
    c, f, pos = pairs["scores"], pairs["fine_sim"], pairs["fine"]
    total = max(1, int(pos.sum()))
    cand = c >= floor
    t1s = np.unique(np.concatenate([[floor], np.round(c[cand & pos], 3)]))
    t2s = np.unique(np.round(f[cand & pos], 3))
    rows: list[tuple[float, float, float, float, float]] = []  # t1, t2, precision, recall, F1
    for t2 in t2s:
        m = cand & (f >= t2)
        all_c, pos_c = np.sort(c[m]), np.sort(c[m & pos])
        n_sel = len(all_c) - np.searchsorted(all_c, t1s, side="left")
        tp = len(pos_c) - np.searchsorted(pos_c, t1s, side="left")
        prec, rec = tp / np.maximum(n_sel, 1), tp / total
        f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
        rows += zip(t1s.tolist(), [float(t2)] * len(t1s), prec.tolist(), rec.tolist(), f1.tolist())
    enough = [r for r in rows if r[3] >= min_recall]
    hit = [r for r in enough if r[2] >= target]
    if hit:
        best = max(hit, key=lambda r: (r[3], r[2]))
        return best[0], best[1], f"most recall with precision >= {target} and recall >= {min_recall}"
    if enough:
        best = max(enough, key=lambda r: (r[2], r[3]))
        return best[0], best[1], f"best precision at recall >= {min_recall}"
    best = max(rows, key=lambda r: r[4])
    return best[0], best[1], "best F1"


def _promote_scores(emb: np.ndarray, items: Sequence[Any], descriptions: Sequence[dict[str, Any]],
                    half: np.ndarray, grid: Sequence[float | None], k: int = 10,
                    shape_weight: float = 0.0, related: float | None = None) -> list[tuple[float, float]]:
    """``(same-network top-1, family MAP@k)``, each a mean over query libraries, for every
    promote threshold of ``grid`` (``None``: no rerank, the cosine order), over the queries of
    ``half``; gallery: the other libraries; ranked as the cross-library benchmark ranks
    (:func:`~nar_plugin.evaluation.cross_library.fine_rerank_scores`, with ``shape_weight`` and
    the ``related`` floor)."""
    from nar_plugin.evaluation.cross_library import fine_rerank_scores
    from nar_plugin.evaluation.metrics import retrieval_metrics

    lib = np.asarray([it.library for it in items], dtype=object)
    fam, fine = [it.family for it in items], [it.fine for it in items]
    out = []
    for m in grid:
        top1, maps = [], []
        for L in sorted({str(x) for x in lib[half]}):
            q = np.flatnonzero(half & (lib == L))
            others = np.flatnonzero(lib != L)
            sc, metric = (emb, "cosine") if m is None else (
                fine_rerank_scores(emb, descriptions, q, others, promote_min=float(m), shape_weight=shape_weight,
                                   related=related),
                "precomputed")
            maps.append(retrieval_metrics(sc, fam, ks=(k,), queries=q, gallery=others, metric=metric)[f"MAP@{k}"])
            have = {fine[j] for j in others}
            qf = np.asarray([i for i in q if fine[i] in have], dtype=np.int64)
            if qf.size:
                top1.append(retrieval_metrics(sc, fine, ks=(1,), queries=qf, gallery=others, metric=metric)["MRR@1"])
        out.append((float(np.mean(top1)), float(np.mean(maps))))
    return out


def calibrate_cross_library(weights: str | Path | None = None, root: str | Path | None = None, seed: int = 0,
                            near_precision: float = 0.9, near_min_recall: float = 0.5,
                            write: bool = True) -> dict[str, Any]:
    """Calibrate the thresholds on the cross-library benchmark (issue 16) and write them beside
    the weights.

    Pairs are models of two *different* libraries (identical graphs left out: they are
    ``same-architecture`` by hash). The families are split in two seeded halves: thresholds are
    chosen on pairs within the first half and reported on both halves (the second is held out).

    - ``related``: the best F1 for "same family";
    - ``near_duplicate_shapes``: the cosine a near-duplicate needs when the parameter shapes of
      both models agree up to a head (:func:`~nar_plugin.evaluation.fine_structure.shapes_near`),
      for "same fine label" (the same network written by another library): the most recall
      with precision >= ``near_precision`` and recall >= ``near_min_recall``; else the best
      precision at recall >= ``near_min_recall``;
    - ``near_duplicate`` and ``near_duplicate_fine``: the decision for descriptions without
      parameter shapes (indexed by earlier releases), cosine >= ``near_duplicate`` (at least
      ``related``) **and** fine similarity >= ``near_duplicate_fine``, chosen the same way with
      the shapes hidden.

    Returns:
        The thresholds, with precision / recall / F1 of each on the calibration half
        (``*_calibration``) and on the held-out half (``*_held_out``); ``near_duplicate_*`` are
        those of the product's decision (:func:`~nar_plugin.search.relations.near_duplicate_evidence`:
        parameter shapes here, since every benchmark graph records them),
        ``near_duplicate_fine_only_*`` those of the fallback for entries without shapes,
        ``near_duplicate_cosine_only_*`` those of the cosine threshold alone (for comparison).
    """
    from nar_plugin.corpus.crosslib import load_cross_library
    from nar_plugin.evaluation.fine_structure import (
        FINE_VERSION,
        fine_signature,
    )
    from nar_plugin.evaluation.fine_structure import near_evidence
    from nar_plugin.model.inference import embed_many, load_encoder

    items = load_cross_library(root)
    enc = load_encoder(weights, reload=True)
    emb = embed_many([it.graph for it in items], encoder=enc)
    descriptions = [{"fine": fine_signature(it.graph)} for it in items]
    fams = sorted({it.family for it in items})
    rng = np.random.default_rng(seed)
    first = {fams[int(i)] for i in rng.permutation(len(fams))[: len(fams) // 2]}
    in_first = np.asarray([it.family in first for it in items])
    cal = _cross_pairs(emb, items, in_first, descriptions, np.inf)  # cosines only
    related = _best_f1(cal["scores"], cal["family"])
    cal = _cross_pairs(emb, items, in_first, descriptions, related)
    held = _cross_pairs(emb, items, ~in_first, descriptions, related)
    near, near_fine, near_rule = _choose_near(cal, related, near_precision, near_min_recall)
    shapes_floor, shapes_rule = _choose_shapes_floor(cal, related, near_precision, near_min_recall)
    out: dict[str, Any] = {"related": round(related, 4), "near_duplicate": round(near, 4),
                           "near_duplicate_fine": round(near_fine, 4),
                           "near_duplicate_shapes": round(shapes_floor, 4), "fine_version": FINE_VERSION}
    # what an entry indexed before parameter shapes were recorded carries
    fine_only = [{"fine": {k: v for k, v in d["fine"].items() if k not in ("shapes", "folded")}}
                 for d in descriptions]
    # the rerank's threshold: the best same-network top-1 (first half) that keeps its family MAP@10,
    # else the best top-1 (ties: the higher MAP)
    grid = [None, *np.round(np.arange(0.30, 0.951, 0.05), 2).tolist()]
    cal_scores = _promote_scores(emb, items, descriptions, in_first, grid, related=related)
    floor = cal_scores[0][1]
    ok = [i for i in range(1, len(grid)) if cal_scores[i][1] >= floor]
    promote_rule = "best same-network top-1 (then family MAP@10) on the first half's queries"
    if ok:
        promote_rule += " among the values that keep its family MAP@10 at least the cosine order's"
    else:
        ok = list(range(1, len(grid)))
        promote_rule += (f"; no value kept the cosine order's family MAP@10 there ({floor:.4f}; best "
                         f"{max(v[1] for v in cal_scores[1:]):.4f})")
    best = max(ok, key=lambda i: (cal_scores[i][0], cal_scores[i][1], -i))
    # then the weight of the parameter-shape similarity at that threshold: the best top-1 (then
    # MAP@10, then the smaller weight) on the first half; 0 is the rerank without it
    weights = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
    by_weight = [cal_scores[best]] + [  # weight 0 is the rerank just scored
        _promote_scores(emb, items, descriptions, in_first, [grid[best]], shape_weight=w, related=related)[0]
        for w in weights[1:]]
    w_best = max(range(len(weights)), key=lambda i: (by_weight[i][0], by_weight[i][1], -i))
    shape_weight = weights[w_best]
    (held_top1, held_map), = _promote_scores(emb, items, descriptions, ~in_first, [grid[best]], shape_weight=shape_weight,
                                             related=related)
    (held_top1_0, held_map_0), = _promote_scores(emb, items, descriptions, ~in_first, [None])
    (held_top1_w0, _), = _promote_scores(emb, items, descriptions, ~in_first, [grid[best]], related=related)
    cal_scores[best] = by_weight[w_best]
    out.update({"promote_fine": float(grid[best]), "promote_shapes": shape_weight,
                "promote_top1_held_out_without_shapes": round(held_top1_w0, 4),
                "promote_top1_calibration": round(cal_scores[best][0], 4),
                "promote_map10_calibration": round(cal_scores[best][1], 4),
                "promote_top1_held_out": round(held_top1, 4), "promote_map10_held_out": round(held_map, 4),
                "cosine_top1_held_out": round(held_top1_0, 4), "cosine_map10_held_out": round(held_map_0, 4)})
    floors = {"cosine_floor": out["near_duplicate"], "shapes_floor": out["near_duplicate_shapes"],
              "fine_min": out["near_duplicate_fine"]}

    def decided(descs: Sequence[dict[str, Any]], pairs: dict[str, np.ndarray]) -> np.ndarray:
        # the product's decision, pair by pair (relation_for with search.relations.near_duplicate_evidence)
        sel = np.zeros(len(pairs["scores"]), dtype=bool)
        for i in np.flatnonzero(pairs["scores"] >= min(floors["cosine_floor"], floors["shapes_floor"])):
            near, floor = near_evidence(descs[pairs["a"][i]], descs[pairs["b"][i]], **floors)
            sel[i] = bool(pairs["scores"][i] >= floor and near is not False)
        return sel

    for part, pairs in (("calibration", cal), ("held_out", held)):
        for name, sel, truth in (("related", pairs["scores"] >= related, "family"),
                                 ("near_duplicate", decided(descriptions, pairs), "fine"),
                                 ("near_duplicate_fine_only", decided(fine_only, pairs), "fine"),
                                 ("near_duplicate_cosine_only", pairs["scores"] >= out["near_duplicate"], "fine")):
            tp = float(np.sum(sel & pairs[truth]))
            p, r = tp / max(1.0, float(sel.sum())), tp / max(1.0, float(pairs[truth].sum()))
            out[f"{name}_precision_{part}"] = round(p, 4)
            out[f"{name}_recall_{part}"] = round(r, 4)
            out[f"{name}_f1_{part}"] = round(2 * p * r / (p + r), 4) if p + r else 0.0
        out[f"pairs_{part}"] = len(pairs["scores"])
    # the fields search.api reads / older readers expect
    out["related_precision"], out["related_recall"] = out["related_precision_held_out"], out["related_recall_held_out"]
    out["near_duplicate_precision"] = out["near_duplicate_precision_held_out"]
    out["near_duplicate_recall"] = out["near_duplicate_recall_held_out"]
    out["rules"] = {"related": "best F1 for same family across libraries",
                    "near_duplicate_shapes": f"parameter shapes agreeing up to a head, cosine for same fine label "
                                             f"across libraries: {shapes_rule}",
                    "near_duplicate": f"without parameter shapes: cosine and fine similarity for same fine label "
                                      f"across libraries: {near_rule}",
                    "promote_fine": promote_rule,
                    "promote_shapes": ("at promote_fine, the weight of the parameter-shape similarity (of "
                                       f"{list(weights)}) with the best same-network top-1 (then family "
                                       "MAP@10, then the smaller weight) on the first half's queries"),
                    "split": f"families halved with seed {seed}: chosen on one half, *_held_out on the other"}
    out["sources"] = f"cross-library benchmark ({len(items)} models, {len({it.library for it in items})} libraries)"
    if write:
        write_thresholds(out, enc.path.parent / "thresholds.json", enc.version)
    return out
