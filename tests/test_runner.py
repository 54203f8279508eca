"""Tests for nar_plugin.evaluation.runner (``nar eval``) on a tiny corpus of *.jsonl records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# tests/ is on sys.path (rootdir conftest)
from fixtures.synthetic_graphs import branchy, tiny_corpus

from nar_plugin.evaluation.baselines import histogram_embed
from nar_plugin.evaluation.metrics import retrieval_metrics
from nar_plugin.evaluation.runner import run_eval
from nar_plugin.training.data import CorpusEntry, make_split


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[CorpusEntry]]:
    entries = tiny_corpus() + [CorpusEntry(f"b{n}", "inception", branchy(n), "synthetic") for n in range(1, 7)]
    root = tmp_path_factory.mktemp("corpus")
    (root / "items.jsonl").write_text("".join(
        json.dumps({"key": e.key, "family": e.family, "graph": e.graph.to_dict(), "source": e.source}) + "\n"
        for e in entries))
    return root, sorted(entries, key=lambda e: e.key)


def test_run_eval_tables_for_both_splits(corpus: tuple[Path, list[CorpusEntry]], tmp_path: Path) -> None:
    root, entries = corpus
    lines: list[str] = []
    out = tmp_path / "eval.md"
    res = run_eval(root, methods=("nar", "histogram", "wl"), retrain_nar=False, out=out, log=lines.append)
    assert list(res) == ["by_model", "by_family"]
    for name, table in res.items():
        assert list(table) == ["NAR", "op histogram", "WL subtree"]
        split = make_split(entries, name, seed=0)
        assert all(m["queries"] == split.test.size for m in table.values())
        # the histogram row is the histogram of the split's test items, ranked among themselves
        test = [entries[int(i)] for i in split.test]
        direct = retrieval_metrics(histogram_embed([e.graph for e in test]), [e.family for e in test])
        assert table["op histogram"]["MAP@20"] == pytest.approx(direct["MAP@20"])
    text = out.read_text()
    assert text.count("### split:") == 2 and "| op histogram |" in text and "| NAR |" in text
    assert any("items, 4 families" in line for line in lines)
    with pytest.raises(ValueError, match="unknown methods"):
        run_eval(root, methods=("nar", "gin"))


def test_run_eval_retrains_nar_for_held_out_families(corpus: tuple[Path, list[CorpusEntry]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.training import loop

    calls: list[dict] = []
    real_train = loop.train

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(loop, "train", spy)
    root, entries = corpus
    lines: list[str] = []
    res = run_eval(root, methods=("nar",), splits=("by_model", "by_family"), nar_epochs=1, log=lines.append)
    # by default only the held-out-family split retrains (the shipped encoder saw by_model's train items)
    assert [c["split"] for c in calls] == ["by_family"] and calls[0]["epochs"] == 1
    assert any("trained NAR on the by_family train items" in line for line in lines)
    assert res["by_family"]["NAR"]["queries"] == make_split(entries, "by_family", 0).test.size
