"""Search: relations, ranking, resolvers and folding, on hand-made indexes (no encoder needed)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures.vectors import at_cosine as _at_cosine
from fixtures.vectors import unit as _unit

from nar_plugin.errors import KeyNotFoundError
from nar_plugin.index import EmbeddingIndex
from nar_plugin.search import resolvers
from nar_plugin.search.api import check_duplicate, find_similar
from nar_plugin.search.relations import Thresholds, at_least, relation_for

TH = Thresholds(near_duplicate=0.95, related=0.80)
PKG = Path(__file__).resolve().parents[1] / "nar_plugin"


@pytest.fixture
def base() -> np.ndarray:
    return _unit(np.random.default_rng(0).normal(size=128))


@pytest.fixture
def idx(tmp_path: Path) -> EmbeddingIndex:
    return EmbeddingIndex(tmp_path / "idx", encoder_version="test-enc")


def test_relations_and_thresholds() -> None:
    assert relation_for(0.10, True, TH) == "same-architecture"
    assert [relation_for(s, False, TH) for s in (0.96, 0.95, 0.9, 0.5)] == [
        "near-duplicate", "near-duplicate", "related", "unrelated"]
    assert relation_for(0.99, False, TH, near=False) == "related"  # the structural check says no
    assert relation_for(0.10, True, TH, weights="fine-tuned-from") == "fine-tuned-from"
    assert at_least("near-duplicate") == ("same-weights", "fine-tuned-from", "same-architecture", "near-duplicate")
    assert at_least("identical") == at_least("same-architecture")  # the old name still reads
    with pytest.raises(ValueError, match="relation must be one of"):
        at_least("cousin")


def test_identical_outranks_a_higher_scoring_near_duplicate(idx: EmbeddingIndex, base: np.ndarray) -> None:
    idx.add("file:query", base, graph_hash="H")
    idx.add("file:retrained", _at_cosine(base, 0.96, 1), graph_hash="H")  # same architecture
    idx.add("file:variant", _at_cosine(base, 0.99, 2), graph_hash="V")  # closer vector, other graph
    idx.add("file:far", _at_cosine(base, 0.10, 3), graph_hash="F")
    matches = find_similar("file:query", index=idx, thresholds=TH)
    assert [m.key for m in matches][:2] == ["file:variant", "file:retrained"]  # ranked by cosine
    report = check_duplicate("file:query", index=idx, thresholds=TH)
    assert report.best is not None and report.best.key == "file:retrained"
    assert report.relation == "same-architecture" and report.is_duplicate
    assert {m.key for m in report.matches} == {"file:retrained", "file:variant"}


def test_relation_filter_and_query_excluded(idx: EmbeddingIndex, base: np.ndarray) -> None:
    idx.add("file:query", base, graph_hash="H")
    idx.add("file:close", _at_cosine(base, 0.97, 1), graph_hash="C")
    idx.add("file:kin", _at_cosine(base, 0.85, 2), graph_hash="K")
    got = find_similar("file:query", relation="near-duplicate", index=idx, thresholds=TH)
    assert [(m.key, m.relation) for m in got] == [("file:close", "near-duplicate")]
    every = find_similar("file:query", index=idx, thresholds=TH)
    assert [m.key for m in every] == ["file:close", "file:kin"]


def test_unknown_key_of_a_known_scheme_is_not_read_as_a_source(idx: EmbeddingIndex, base: np.ndarray) -> None:
    idx.add("file:query", base)
    for key in ("file:/nowhere/model.onnx", "mlflow:model:m-0"):  # core scheme, integration scheme
        with pytest.raises(KeyNotFoundError, match="is not in the index"):
            find_similar(key, index=idx, thresholds=TH)


def test_a_registered_resolver_answers_its_queries(idx: EmbeddingIndex, base: np.ndarray) -> None:
    idx.add("t:own", base, graph_hash="H")
    idx.add("t:other", _at_cosine(base, 0.9, 1), graph_hash="O")
    seen: list[str] = []

    def resolve(query: str, index: object) -> resolvers.ResolvedQuery:
        seen.append(query)
        return resolvers.ResolvedQuery(base, {}, ("t:own",), "H")

    resolvers.register_resolver("test-scheme", "t://", resolve)
    try:
        got = find_similar("t://something", index=idx, thresholds=TH)
    finally:
        resolvers.unregister("test-scheme")
    assert seen == ["t://something"]
    assert [(m.key, m.relation) for m in got] == [("t:other", "related")]
    assert resolvers.resolver_for("t://something") is None


def test_fold_rules_show_an_entry_once_as_its_parent(idx: EmbeddingIndex, base: np.ndarray) -> None:
    near = _at_cosine(base, 0.9, 1)
    idx.add("p:1", near, graph_hash="P")
    idx.add("c:1", near, graph_hash="P", metadata={"parent": "p:1"})
    idx.add("c:2", _at_cosine(base, 0.85, 2), metadata={"parent": "p:2"})  # its parent is not indexed
    idx.add("file:query", base)
    rule = resolvers.FoldRule("test-fold", parent_of=lambda e: e.metadata.get("parent"),
                              label=lambda e: e.key.upper(), listed_as="children")
    resolvers.register_fold_rule(rule)
    try:
        got = find_similar("file:query", index=idx, thresholds=TH)
        from_child = find_similar("c:1", index=idx, thresholds=TH)
    finally:
        resolvers.unregister("test-fold")
    assert [m.key for m in got] == ["p:1", "c:2"]
    assert got[0].metadata["children"] == ["C:1"]
    assert "p:1" not in [m.key for m in from_child]  # a child's parent is the query's own model
    unfolded = find_similar("file:query", index=idx, thresholds=TH)
    assert [m.key for m in unfolded][:2] in (["p:1", "c:1"], ["c:1", "p:1"])


def test_mlflow_versions_fold_into_their_logged_model(idx: EmbeddingIndex, base: np.ndarray) -> None:
    v = _at_cosine(base, 0.9, 1)
    idx.add("mlflow:model:m-1", v, metadata={"model_id": "m-1"})
    idx.add("mlflow:version:reg/1", v, metadata={"model_id": "m-1"})
    idx.add("mlflow:version:reg/2", v, metadata={"model_id": "m-1"})
    idx.add("mlflow:version:solo/1", _at_cosine(base, 0.85, 2), metadata={"model_id": "m-2"})
    idx.add("file:query", base)
    got = find_similar("file:query", index=idx, thresholds=TH)
    assert [m.key for m in got] == ["mlflow:model:m-1", "mlflow:version:solo/1"]
    assert sorted(got[0].metadata["registered_versions"]) == ["reg/1", "reg/2"]
    from_version = find_similar("mlflow:version:reg/1", index=idx, thresholds=TH)
    assert {m.key for m in from_version} == {"mlflow:version:solo/1", "file:query"}  # not its own model


def test_a_fresh_process_finds_the_mlflow_resolver_without_importing_mlflow() -> None:
    code = (
        "import json, sys\n"
        "from nar_plugin.search import resolvers\n"
        "before = 'nar_plugin.integrations.mlflow.resolve' in sys.modules\n"
        "names = {q: getattr(resolvers.resolver_for(q), '__module__', None) for q in sys.argv[1:]}\n"
        "print(json.dumps({'before': before, 'names': names, 'mlflow': 'mlflow' in sys.modules}))\n"
    )
    queries = ["0123456789abcdef0123456789abcdef", "m-0123456789abcdef0123456789abcdef", "models:/reg/3",
               "resnet50"]
    out = subprocess.run([sys.executable, "-c", code, *queries], capture_output=True, text=True, check=True,
                         timeout=120)
    got = json.loads(out.stdout)
    mod = "nar_plugin.integrations.mlflow.resolve"
    assert got == {"before": False, "names": {**dict.fromkeys(queries[:3], mod), "resnet50": None},
                   "mlflow": False}


def _string_constants(path: Path) -> list[str]:
    """String literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


@pytest.mark.parametrize("area", ["search", "index", "apps/map.py"])
def test_core_names_no_mlflow_key_scheme(area: str) -> None:
    files = [PKG / area] if area.endswith(".py") else sorted((PKG / area).rglob("*.py"))
    bad = [(str(f.relative_to(PKG)), s) for f in files for s in _string_constants(f)
           if "mlflow:" in s or "models:/" in s]
    assert not bad
