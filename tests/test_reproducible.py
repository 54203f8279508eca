"""The committed corpus is exactly what the shipped encoder was trained on."""

from __future__ import annotations

import json
from pathlib import Path


from nar_plugin.model.weights import WEIGHTS_DIR
from nar_plugin.training.config import TrainConfig
from nar_plugin.training.data import load_training_corpus, make_split, select_items

ROOT = Path(__file__).resolve().parent.parent


def test_committed_corpus_reproduces_the_training_split() -> None:
    card = json.loads((WEIGHTS_DIR / "nar-encoder.json").read_text())
    recorded = card["corpus"]
    cfg = TrainConfig()
    assert card["train_config"]["nas_fraction"] == cfg.nas_fraction
    entries = select_items(load_training_corpus(ROOT / "corpus"), cfg.max_nodes, cfg.max_per_family, card["seed"],
                           cfg.nas_fraction)
    split = make_split(entries, recorded["split"]["name"], card["seed"])
    assert len(entries) == recorded["items_used"]
    assert split.keys_hash == recorded["split"]["keys_hash"]
    assert "nar train --corpus corpus" in card["command"]


def test_model_card_names_the_shipped_encoder_version() -> None:
    """The card's header is what a user checks an embedding's ``nar.encoder_version`` tag against."""
    from nar_plugin.model.inference import encoder_version

    card = (Path(__file__).resolve().parents[1] / "docs" / "model-card.md").read_text()
    header = next(line for line in card.splitlines() if line.startswith("**Encoder version:**"))
    assert f"`{encoder_version()}`" in header
