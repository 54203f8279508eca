"""The Hub push hook with NAR_HF_READ_WEIGHTS=true: a card whose declared ``base_model`` the pushed
weights contradict gets a warning; one they confirm does not. Real BERT weights, really fine-tuned."""

from __future__ import annotations

import copy
import warnings

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("httpx2")
transformers = pytest.importorskip("transformers")

from fixtures.hf_hub import BASE_CARD, TINY_BERT, MockHub, hook, hub  # noqa: F401


def _bert(seed: int):
    import torch

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "model_type"})
    return transformers.BertModel(cfg).eval()


def _fine_tune(model, steps: int = 30):
    import torch

    g = torch.Generator().manual_seed(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(steps):
        ids = torch.randint(0, model.config.vocab_size, (4, 8), generator=g)
        loss = model(input_ids=ids).last_hidden_state.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_declared_base_model_is_checked_against_the_weights(hub: MockHub, hook: None,  # noqa: F811
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from nar_plugin.errors import DuplicateModelWarning
    from nar_plugin.extract import extract_graph
    from nar_plugin.lineage import fingerprint_module
    from nar_plugin.search.api import index_graph, open_index
    from nar_plugin.search.weights import fingerprint_of

    monkeypatch.setenv("NAR_HF_READ_WEIGHTS", "true")
    base = _bert(0)  # the base, indexed earlier with its weights (e.g. `nar index add` of its safetensors)
    index_graph(extract_graph(base.config), "hf:org/bert-base@main", {"repo_id": "org/bert-base"},
                source_kind="hf", fingerprint=fingerprint_module(base))
    assert fingerprint_of(open_index(), "hf:org/bert-base@main") is not None
    hub.files = {"README.md": BASE_CARD.encode()}  # the pushed cards declare base_model: org/bert-base
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fine_tune(copy.deepcopy(base)).push_to_hub("org/honest-fine-tune")
    assert not [w for w in caught if issubclass(w.category, DuplicateModelWarning)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _bert(1).push_to_hub("org/claims-a-base")  # independently initialised, same card
    found = [str(w.message) for w in caught if issubclass(w.category, DuplicateModelWarning)]
    assert len(found) == 1 and "declares base_model org/bert-base" in found[0], found
