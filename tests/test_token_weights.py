"""Sketch version 4: token weights fitted on labelled training data (nar_plugin.model.token_weights,
nar_plugin.training.sketch_table) and their loading with the encoder."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from nar_plugin.corpus.crosslib import load_cross_library
from nar_plugin.errors import CorruptArtifactError
from nar_plugin.model.inference import embed_many, load_encoder
from nar_plugin.model.sketch import sketch_tokens, structural_sketch
from nar_plugin.model.token_weights import (
    SKETCH_WEIGHTS_FILE,
    TokenRow,
    fit_token_weights,
    load_token_weights,
    token_row,
)
from nar_plugin.model.weights import WEIGHTS_DIR
from nar_plugin.training.sketch_table import attach_sketch_weights


def _row(group: str, family: str, *nodes: str) -> TokenRow:
    return TokenRow(group, family, frozenset(nodes), frozenset())


def _rows() -> list[TokenRow]:
    rows = []
    for i in range(60):  # 'common' is everywhere; each family has its own telling token
        fam = f"f{i % 6}"
        rows.append(_row(f"lib{i % 3}", fam, "common", f"tell-{fam}", *(["glue"] if i % 12 == 0 else [])))
    return rows


def test_shared_rare_tokens_weigh_more_than_common_or_inconsistent_ones() -> None:
    tw = fit_token_weights(_rows())
    assert tw.node("tell-f0") > 3 * tw.node("common")
    # 'glue' is rarer than 'tell-f0' but only some members of its family have it
    assert tw.node("glue") < tw.node("tell-f0")
    assert tw.node("never-seen") == tw.unseen >= max(tw.nodes.values())


def test_the_document_frequency_floor_caps_one_rare_token() -> None:
    rows = _rows() + [_row("lib0", "f9", "freak")]
    capped_table = fit_token_weights(rows, df_floor=0.05)
    capped, free = capped_table.node("freak"), fit_token_weights(rows, df_floor=0.001).node("freak")
    assert capped < 0.75 * free
    assert capped == capped_table.unseen  # seen once counts as seen in 5% of the items, like a new token
    with pytest.raises(ValueError, match="df_floor"):
        fit_token_weights(rows, df_floor=0.0)


def test_excluding_a_group_drops_its_rows() -> None:
    rows = _rows() + [_row("only", "f0", "mine")]
    assert fit_token_weights(rows).meta["items"] == len(rows)
    held_out = fit_token_weights(rows, exclude={"only"})
    assert held_out.meta["items"] == len(rows) - 1 and held_out.meta["excluded"] == ["only"]
    assert "mine" not in held_out.nodes and held_out.node("mine") == held_out.unseen
    with pytest.raises(ValueError, match="no training rows"):
        fit_token_weights(rows, exclude={"lib0", "lib1", "lib2", "only"})


def test_table_round_trips_and_a_foreign_table_is_refused(tmp_path: Path) -> None:
    tw = fit_token_weights(_rows())
    tw.save(tmp_path)
    assert fit_token_weights(_rows()).to_bytes() == (tmp_path / SKETCH_WEIGHTS_FILE).read_bytes()  # a refit: same bytes
    back = load_token_weights(tmp_path, tw.sha256[:16])
    assert back.nodes == tw.nodes and back.unseen == tw.unseen and back.sha256 == tw.sha256
    with pytest.raises(CorruptArtifactError, match="SHA-256"):
        load_token_weights(tmp_path, "0" * 16)
    (tmp_path / SKETCH_WEIGHTS_FILE).write_text("{}")  # the right SHA-256, another format
    with pytest.raises(CorruptArtifactError):
        load_token_weights(tmp_path, hashlib.sha256(b"{}").hexdigest())
    with pytest.raises(FileNotFoundError):
        load_token_weights(tmp_path / "nowhere", tw.sha256)


def test_version_4_adds_back_off_tokens() -> None:
    g = next(it.graph for it in load_cross_library(None) if it.key == "smp:Linknet-resnet18")
    nodes, edges = sketch_tokens(g, 4)
    assert "~conv_transpose" in nodes and any(t.startswith("conv_transpose/k4") for t in nodes)
    assert "~relu>conv_transpose" in edges
    n3, e3 = sketch_tokens(g, 3)
    assert set(n3) < set(nodes) and not any(t.startswith("~") for t in n3 + e3)


def test_shipped_encoder_carries_its_table_and_refuses_a_foreign_one(tmp_path: Path) -> None:
    enc = load_encoder()
    assert enc.config.sketch_version == 4 and enc.sketch_weights is not None
    assert enc.sketch_weights.sha256.startswith(enc.config.sketch_weights)
    for p in WEIGHTS_DIR.glob("nar-*"):
        shutil.copyfile(p, tmp_path / p.name)
    (tmp_path / SKETCH_WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="sketch token weights"):
        load_encoder(tmp_path, reload=True)
    fit_token_weights(_rows()).save(tmp_path)
    with pytest.raises(CorruptArtifactError, match="SHA-256"):
        load_encoder(tmp_path, reload=True)
    # attaching a table re-signs the encoder: another version string, and it loads
    version = attach_sketch_weights(tmp_path, fit_token_weights(_rows()))
    other = load_encoder(tmp_path, reload=True)
    assert other.version == version != enc.version and other.version.endswith(enc.version.rsplit("-", 1)[1])


@pytest.mark.slow
def test_a_held_out_speech_model_finds_its_family_before_vision_transformers() -> None:
    """The case behind version 4 (torchaudio held out): wav2vec 2.0 LARGE-LV60k (pre-norm) from
    torchaudio is nearer wav2vec 2.0 BASE (post-norm, same front end) from transformers than the
    pre-norm vision transformers it shares its body with."""
    from nar_plugin.training.sketch_table import sketch_rows

    items = {it.key: it for it in load_cross_library(None)}
    table = fit_token_weights(sketch_rows(), exclude={"torchaudio"})
    keys = ["torchaudio:wav2vec2_large_lv60k", "transformers:wav2vec2/default", "timm:hiera_base_224",
            "timm:pit_s_distilled_224"]
    enc = load_encoder()
    learned = embed_many([items[k].graph for k in keys], encoder=enc)[:, :enc.config.out_dim]
    w = enc.config.sketch_weight

    def cos(i: int, j: int, weights: object) -> float:
        a, b = (structural_sketch(items[keys[k]].graph, enc.config.sketch_dim, 4, weights) for k in (i, j))  # type: ignore[arg-type]
        la, lb = learned[i] / np.linalg.norm(learned[i]), learned[j] / np.linalg.norm(learned[j])
        return float((1 - w) * la @ lb + w * a @ b)

    assert cos(0, 1, table) > max(cos(0, 2, table), cos(0, 3, table))
    assert cos(0, 1, None) < max(cos(0, 2, None), cos(0, 3, None))  # unweighted tokens: the vision models
    assert token_row(items[keys[0]].graph, "wav2vec2", "torchaudio", 4).nodes <= set(sketch_tokens(items[keys[0]].graph)[0])


@pytest.mark.slow
def test_an_encoder_trained_without_a_source_fits_its_table_without_that_library() -> None:
    from nar_plugin.training.sketch_table import sketch_rows

    groups = {r.group for r in sketch_rows(sources=("torchvision", "transformers"))}
    assert "timm" not in groups and {"torchvision", "transformers", "pytorchcv"} <= groups
    assert "nas" not in groups
