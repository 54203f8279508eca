"""A LoggedModel -> graph -> one embedding and one description -> ``nar.*`` tags + index entry.

:func:`index_logged_model` runs inside every hooked ``log_model`` (and for models logged before
nar-plugin was installed, via :func:`embedding_for_model`). It extracts the graph once, embeds it
once and describes it once, and hands all three to
:func:`~nar_plugin.search.api.index_graph`, so a ``log_model`` costs one encoder pass and two
motif samplings (the encoder's and the description's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nar_plugin.errors import GraphTooLargeError, KeyNotFoundError, NarMlflowWarning
from nar_plugin.integrations.boundary import plugin_boundary
from nar_plugin.integrations.mlflow.client import tracking_uri_of
from nar_plugin.integrations.mlflow.keys import model_key
from nar_plugin.integrations.mlflow.tags import (
    TAG_DESCRIPTION,
    TAG_EMBEDDING,
    TAG_ENCODER,
    TAG_GRAPH_HASH,
    TAG_NUM_NODES,
    TAG_STATUS,
    encode_description,
    model_metadata,
    nar_tags,
    set_model_and_run_tags,
)
from nar_plugin.integrations.mlflow.weights import compute_fingerprint, log_fingerprint

logger = logging.getLogger(__name__)

__all__ = ["download_model_files", "embedding_for_model", "index_logged_model"]


def _skip(client: Any, model_id: str, tags: dict[str, str]) -> dict[str, str]:
    set_model_and_run_tags(client, model_id, tags)
    return tags


def index_logged_model(client: Any, model_id: str, local_dir: str | Path, *,
                       extract: Callable[[Path], Any] | None = None) -> dict[str, str]:
    """Extract, embed, tag and index one logged model from its saved directory.

    ``extract(model_dir) -> ArchGraph`` replaces in-process extraction (the webhook receiver
    passes :func:`~nar_plugin.integrations.receiving.extract_in_sandbox`: a sandboxed subprocess).

    The weights in the folder (pt2 archive, ONNX initializers, transformers safetensors) are
    fingerprinted (:mod:`nar_plugin.lineage`; ``NAR_FINGERPRINT=false`` turns it off), logged as
    the model's ``nar/fingerprint.json.gz`` and named by the ``nar.weights_hash`` /
    ``nar.fingerprint`` tags; a failure there is one warning, the model is still indexed.

    Returns the tags written. Skips (``nar.status=skipped:<reason>``) pickle-only models unless
    ``NAR_TRUST_PICKLE=true`` and graphs over ``NAR_MAX_NODES``. The tags are written first:
    they are the source of truth, so a failure to update the local index is one warning
    (``nar index sync`` repairs it), not a failed indexing.

    Raises:
        NarError: extraction or embedding failed (the caller records ``error:<Type>``).
    """
    from nar_plugin.config import NAR_MAX_NODES
    from nar_plugin.errors import PickleOnlyModelError
    from nar_plugin.extract.mlflow_model import graph_from_mlflow_dir
    from nar_plugin.model.inference import embed_graph, encoder_version
    from nar_plugin.search.api import index_graph
    from nar_plugin.search.results import describe_graph

    try:
        graph = (extract or graph_from_mlflow_dir)(Path(local_dir))
    except PickleOnlyModelError:
        logger.info("nar-plugin: model %s is pickle-only; skipped (NAR_TRUST_PICKLE=true to read it)", model_id)
        return _skip(client, model_id, {TAG_STATUS: "skipped:pickle"})
    if graph.num_nodes > NAR_MAX_NODES.get():
        logger.warning("nar-plugin: %s", GraphTooLargeError(graph.num_nodes, NAR_MAX_NODES.get()))
        return _skip(client, model_id, {TAG_STATUS: "skipped:too-large", TAG_NUM_NODES: str(graph.num_nodes)})
    vector = embed_graph(graph)
    desc = describe_graph(graph)
    tags = nar_tags(graph, vector, encoder_version(), desc["num_motifs"])
    fp = None
    with plugin_boundary(f"fingerprinting the weights of model {model_id}", category=NarMlflowWarning,
                         consequence="it is indexed without weight relations"):
        fp = compute_fingerprint(local_dir, in_sandbox_context=extract is not None)
        if fp is not None:
            tags.update(log_fingerprint(client, model_id, fp))
    lm = set_model_and_run_tags(client, model_id, tags)
    client.set_logged_model_tags(model_id, {TAG_DESCRIPTION: encode_description(desc)})
    with plugin_boundary(f"adding model {model_id} to the local index", category=NarMlflowWarning,
                         consequence="its tags are written; `nar index sync` repairs the index"):
        index_graph(graph, model_key(model_id), model_metadata(lm, tracking_uri_of(client)),
                    source_kind="mlflow", uri=f"models:/{model_id}", vector=vector, description=desc,
                    fingerprint=fp)
    return tags


def download_model_files(client: Any, model_id: str, dest: str | Path | None = None, *,
                         pickles: bool = False) -> Path:
    """Download only what extraction reads: ``MLmodel`` and the graph file (``data/*.pt2``, the
    ONNX file named by the flavor, ``config.json``), never other weights.

    Args:
        dest: folder to download into (default: a new temporary folder the caller removes).
        pickles: a pytorch model saved as a pickle is downloaded (only for a caller that will
            unpickle it: ``NAR_TRUST_PICKLE=true``, in-process); else it raises.

    Raises:
        PickleOnlyModelError: the pytorch model is pickle-only and ``pickles`` is false (nothing
            of it was downloaded).
    """
    import tempfile

    from mlflow.artifacts import download_artifacts

    from nar_plugin.errors import PickleOnlyModelError
    from nar_plugin.extract.mlflow_model import read_mlmodel

    base = client.get_logged_model(model_id).artifact_location.rstrip("/")
    out = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="nar-mlflow-"))
    download_artifacts(artifact_uri=f"{base}/MLmodel", dst_path=str(out))
    flavors = read_mlmodel(out).get("flavors") or {}
    wanted: list[str] = []
    if "pytorch" in flavors:  # the pt2 archive only: data/ of a pickled model holds model.pth
        files = [f.path for f in client.list_logged_model_artifacts(model_id, "data") if not f.is_dir]
        archives = [f for f in files if f.endswith(".pt2")]
        if not archives and not pickles and any(f.endswith((".pth", "/model.pt")) for f in files):
            raise PickleOnlyModelError(f"model {model_id} is a pickled pytorch model; it was not downloaded "
                                       "(reading it would run arbitrary code)")
        wanted += archives or files
    onnx = flavors.get("onnx")
    if isinstance(onnx, dict) and isinstance(onnx.get("data"), str) and _inside(onnx["data"]):
        wanted.append(onnx["data"])
    if "transformers" in flavors:
        wanted.append("model/config.json")
    for rel in wanted:
        try:
            download_artifacts(artifact_uri=f"{base}/{rel}", dst_path=str(out / Path(rel).parent))
        except Exception as e:  # noqa: BLE001 - missing optional piece: extraction will say what's absent
            logger.debug("could not download %s of %s: %s", rel, model_id, e)
    return out


def _inside(rel: str) -> bool:
    """A relative artifact path that stays inside the model folder (no ``..``, not absolute)."""
    p = Path(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel


def embedding_for_model(client: Any, model_id: str, *,
                        extract: Callable[[Path], Any] | None = None) -> tuple[Any, str | None]:
    """``(vector, graph_hash)`` of a LoggedModel, from its tags or by extracting.

    A model logged before nar-plugin was installed (or by another encoder) has no usable tags:
    its graph file is downloaded (never its pickles) into a temporary folder that is removed
    afterwards, embedded (``extract`` as for :func:`index_logged_model`), and the tags are
    back-filled.

    Raises:
        KeyNotFoundError: the model has no embeddable graph.
    """
    from nar_plugin.index.codec import decode_embedding
    from nar_plugin.model.inference import encoder_version

    tags = dict(client.get_logged_model(model_id).tags)
    if not tags.get(TAG_EMBEDDING) or tags.get(TAG_ENCODER) != encoder_version():
        import tempfile

        from nar_plugin.config import NAR_TRUST_PICKLE
        from nar_plugin.errors import PickleOnlyModelError

        with tempfile.TemporaryDirectory(prefix="nar-mlflow-") as tmp:
            try:  # pickles only for in-process extraction the user opted into
                local = download_model_files(client, model_id, tmp, pickles=extract is None and NAR_TRUST_PICKLE.get())
            except PickleOnlyModelError:
                tags = _skip(client, model_id, {TAG_STATUS: "skipped:pickle"})
            else:
                tags = index_logged_model(client, model_id, local, extract=extract)
        if TAG_EMBEDDING not in tags:
            raise KeyNotFoundError(f"model {model_id} has no embeddable graph ({TAG_STATUS}={tags.get(TAG_STATUS)})")
    return decode_embedding(tags[TAG_EMBEDDING]), tags.get(TAG_GRAPH_HASH)
