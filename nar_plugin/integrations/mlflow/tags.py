"""The ``nar.*`` tags on LoggedModels, runs and model versions, and the index metadata made from
MLflow entities. The tags are the shared source of truth every local index is rebuilt from."""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "NAR_TAGS",
    "TAG_DESCRIPTION",
    "TAG_DUPLICATE_OF",
    "TAG_DUPLICATE_SCORE",
    "TAG_EMBEDDING",
    "TAG_ENCODER",
    "TAG_FINGERPRINT",
    "TAG_GRAPH_HASH",
    "TAG_NUM_MOTIFS",
    "TAG_NUM_NODES",
    "TAG_PARENT",
    "TAG_POSSIBLE_DUPLICATE_OF",
    "TAG_RELATION",
    "TAG_RELATION_TO_PREVIOUS",
    "TAG_STATUS",
    "TAG_WEIGHTS_HASH",
    "decode_description",
    "encode_description",
    "model_metadata",
    "nar_tags",
    "set_model_and_run_tags",
    "version_metadata",
]

TAG_EMBEDDING = "nar.embedding"
TAG_ENCODER = "nar.encoder"
TAG_GRAPH_HASH = "nar.graph_hash"
TAG_NUM_NODES = "nar.num_nodes"
TAG_NUM_MOTIFS = "nar.num_motifs"
TAG_STATUS = "nar.status"
TAG_DUPLICATE_OF = "nar.duplicate_of"
TAG_DUPLICATE_SCORE = "nar.duplicate_score"
#: the relation behind ``nar.duplicate_of`` / ``nar.possible_duplicate_of`` (``same-weights``...)
TAG_RELATION = "nar.relation"
#: same or nearly the same architecture under another registered name (weights not the same)
TAG_POSSIBLE_DUPLICATE_OF = "nar.possible_duplicate_of"
#: a new version's relation to the previous version of the same registered model
TAG_RELATION_TO_PREVIOUS = "nar.relation_to_previous"
#: ``models:/<name>/<version>`` this version was fine-tuned from (MLflow's counterpart of the
#: Hub's ``base_model``; read from the weights, not declared)
TAG_PARENT = "nar.parent"
#: whole-model weights hash, and ``<artifact>@sha256:<digest>`` of the fingerprint artifact
TAG_WEIGHTS_HASH = "nar.weights_hash"
TAG_FINGERPRINT = "nar.fingerprint"
#: compact op/motif histograms (LoggedModels only: run tags are capped at 8,000 chars), so that
#: ``Match.explain()`` works on entries synced from other machines
TAG_DESCRIPTION = "nar.description"
#: what is copied from a LoggedModel to its run and to its registered versions
NAR_TAGS = (TAG_EMBEDDING, TAG_ENCODER, TAG_GRAPH_HASH, TAG_NUM_NODES, TAG_NUM_MOTIFS, TAG_STATUS,
            TAG_WEIGHTS_HASH, TAG_FINGERPRINT)


def nar_tags(graph: Any, vector: Any, encoder: str, num_motifs: int) -> dict[str, str]:
    """The ``nar.*`` tags for an embedded graph (all strings, ~400 chars in total)."""
    from nar_plugin.index.codec import encode_embedding

    return {
        TAG_EMBEDDING: encode_embedding(vector),
        TAG_ENCODER: encoder,
        TAG_GRAPH_HASH: graph.graph_hash,
        TAG_NUM_NODES: str(graph.num_nodes),
        TAG_NUM_MOTIFS: str(num_motifs),
        TAG_STATUS: "ok",
    }


#: MLflow truncates a tag value beyond 8,000 characters (``MAX_TAG_VAL_LENGTH``), which would
#: leave unparsable JSON: descriptions are kept below this.
MAX_DESCRIPTION_CHARS = 7900


def encode_description(desc: dict[str, Any], top_motifs: int = 24, limit: int = MAX_DESCRIPTION_CHARS) -> str:
    """:func:`nar_plugin.search.results.describe_graph` output as compact JSON (median ~1.2 KB on
    the cross-library benchmark, largest 3.7 KB). Beyond ``limit`` characters the least needed
    parts go first: the parameter shapes, then the fine signature, then the motifs (the
    near-duplicate check then falls back as for an entry indexed before them)."""
    motifs = dict(sorted((desc.get("motifs") or {}).items(), key=lambda kv: -kv[1])[:top_motifs])
    out = {**desc, "motifs": motifs}
    fine = out.get("fine")
    steps = [lambda d: {**d, "fine": {k: v for k, v in fine.items() if k not in ("shapes", "folded")}}
             if isinstance(fine, dict) else d,
             lambda d: {k: v for k, v in d.items() if k != "fine"},
             lambda d: {**d, "motifs": {}}]
    text = json.dumps(out, separators=(",", ":"), sort_keys=True)
    for shrink in steps:
        if len(text) <= limit:
            break
        out = shrink(out)
        text = json.dumps(out, separators=(",", ":"), sort_keys=True)
    return text


def decode_description(text: str | None) -> dict[str, Any]:
    """Inverse of :func:`encode_description`; an absent or malformed tag gives ``{}``."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def set_model_and_run_tags(client: Any, model_id: str, tags: dict[str, str]) -> Any:
    """Write ``tags`` on a LoggedModel and its source run; returns the LoggedModel."""
    client.set_logged_model_tags(model_id, tags)
    lm = client.get_logged_model(model_id)
    if lm.source_run_id:
        for k, v in tags.items():
            client.set_tag(lm.source_run_id, k, v)
    return lm


def model_metadata(lm: Any, tracking_uri: str | None) -> dict[str, Any]:
    """Index metadata for a LoggedModel: ids, names, experiment, tracking server (``server``:
    :func:`~nar_plugin.integrations.mlflow.keys.server_id`), and the user's own tags."""
    from nar_plugin.integrations.mlflow.keys import server_id

    user_tags = {k: v for k, v in (lm.tags or {}).items()
                 if not k.startswith(("mlflow.", "nar.")) and len(v) <= 256}
    return {
        "model_id": lm.model_id,
        "run_id": lm.source_run_id,
        "experiment_id": lm.experiment_id,
        "model_name": lm.name,
        "tracking_uri": tracking_uri,
        "server": server_id(tracking_uri) if tracking_uri else None,
        "created_ms": lm.creation_timestamp,
        "tags": user_tags,
    }


def version_metadata(mv: Any, tracking_uri: str | None) -> dict[str, Any]:
    """Index metadata for a model version (``model_id`` links it to its LoggedModel)."""
    from nar_plugin.integrations.mlflow.keys import model_id_from_source, server_id

    return {
        "registered_name": mv.name,
        "version": str(mv.version),
        "model_id": getattr(mv, "model_id", None) or model_id_from_source(mv.source),
        "run_id": mv.run_id,
        "tracking_uri": tracking_uri,
        "server": server_id(tracking_uri) if tracking_uri else None,
        "uri": f"models:/{mv.name}/{mv.version}",
        "created_ms": mv.creation_timestamp,
    }
