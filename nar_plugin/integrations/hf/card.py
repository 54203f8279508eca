"""Model cards: the ``nar`` metadata block, and the cards' ``base_model`` links compared with
the architectural relation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nar_plugin.graph import ArchGraph
from nar_plugin.integrations.hf.keys import PREFIX, parse_repo_spec

__all__ = ["base_models", "card_metadata", "card_with_nar_block", "nar_card_block", "relation_vs_base_model"]


def base_models(metadata: Mapping[str, Any]) -> list[str]:
    """The ``base_model`` of card (or index entry) metadata as a list, empty when absent."""
    v = metadata.get("base_model")
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v if x]


def card_metadata(text: str) -> dict[str, Any]:
    """The YAML metadata of a README (``{}`` when it has none).

    Raises:
        ValueError, yaml.YAMLError: the front matter does not parse.
    """
    from huggingface_hub import ModelCard

    return ModelCard(text).data.to_dict()


def nar_card_block(graph: ArchGraph) -> dict[str, str]:
    """The ``nar`` card metadata of a graph: ``{embedding, encoder, graph_hash}``."""
    from nar_plugin.index.codec import encode_embedding
    from nar_plugin.model.inference import embed_graph, encoder_version

    return {"embedding": encode_embedding(embed_graph(graph)), "encoder": encoder_version(),
            "graph_hash": graph.graph_hash}


def card_with_nar_block(text: str, block: Mapping[str, Any]) -> str:
    """``text`` (a README, possibly empty) with its YAML metadata's ``nar`` key set to ``block``;
    the rest of the card is kept.

    Raises:
        ValueError, yaml.YAMLError: the README's YAML front matter does not parse (callers leave
            the card alone).
    """
    from huggingface_hub import ModelCard

    card = ModelCard(text)
    card.data.nar = dict(block)
    return str(card)


def relation_vs_base_model(match: Any, query: str | None = None, index: Any = None) -> str:
    """Compare the architectural relation of a match with the cards' ``base_model`` link.

    Args:
        match: a :class:`nar_plugin.search.api.Match` of ``find_similar(query)``.
        query: the query key (``hf:org/name@sha``) or repo id, to look up its own ``base_model``.
        index: the index the query lives in (for that look-up).

    Returns:
        ``"agrees: base_model is the match"`` / ``"agrees: the match is fine-tuned from the query"``
        when a card links the two and the relation is the same or nearly the same architecture
        (``"confirmed by the weights: ..."`` when the weights say fine-tuned or same weights);
        ``"differs: ..."`` when a card links them but the architectures are only related or
        unrelated; ``"no base_model link"`` otherwise.
    """
    from nar_plugin.search.api import open_index

    q_repo = parse_repo_spec(query)[0] if query else None
    m_repo = match.metadata.get("repo_id")
    q_base: list[str] = []
    if query and query.startswith(PREFIX):
        entry = open_index(index).get(query)
        q_base = base_models(entry.metadata) if entry is not None else []
    close = match.relation in ("same-weights", "fine-tuned-from", "same-architecture", "near-duplicate", "identical")
    if m_repo and m_repo in q_base:
        link = "base_model is the match"
    elif q_repo and q_repo in base_models(match.metadata):
        link = "the match is fine-tuned from the query"
    else:
        return "no base_model link"
    if match.relation in ("same-weights", "fine-tuned-from"):
        return f"confirmed by the weights: {link}"
    return f"agrees: {link}" if close else f"differs: {link} but the architectures are {match.relation}"
