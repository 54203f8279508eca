"""Weight fingerprints on the tracking server: a small artifact per LoggedModel, named by tags.

A fingerprint does not fit in a tag (ResNet-50: ~100 KB; MLflow caps tag values at 8,000
chars on SQL stores), so it is logged as the LoggedModel artifact :data:`ARTIFACT`
(``nar/fingerprint.json.gz``) and two tags name it: ``nar.weights_hash`` (the whole-model hash:
enough for a same-weights check without downloading anything) and ``nar.fingerprint``
(``<artifact path>@sha256:<digest>``: which bytes to fetch and how to check them). ``nar index
sync`` restores the blob into a local index that lacks it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.integrations.mlflow.tags import TAG_FINGERPRINT, TAG_WEIGHTS_HASH

logger = logging.getLogger(__name__)

__all__ = ["ARTIFACT", "compute_fingerprint", "fetch_fingerprint", "log_fingerprint", "restore_fingerprint"]

ARTIFACT = "nar/fingerprint.json.gz"


def compute_fingerprint(model_dir: str | Path, *, in_sandbox_context: bool = False) -> Any:
    """The fingerprint of a saved MLflow model folder (``None``: no readable weights, or
    ``NAR_FINGERPRINT=false``). ``in_sandbox_context``: the folder is untrusted and its graph was
    read in a sandbox; then only pt2 archives and safetensors (plain bytes behind a bounded JSON
    header) are read here, never an ONNX protobuf."""
    from nar_plugin.config import NAR_FINGERPRINT
    from nar_plugin.lineage.readers import fingerprint_mlflow_dir, weight_files

    if not NAR_FINGERPRINT.get():
        return None
    files = weight_files(model_dir)
    if not files or (in_sandbox_context and files[0].suffix.lower() == ".onnx"):
        return None
    return fingerprint_mlflow_dir(model_dir)


def log_fingerprint(client: Any, model_id: str, fp: Any) -> dict[str, str]:
    """Log ``fp`` as the LoggedModel's :data:`ARTIFACT`; returns the tags that name it."""
    data = fp.to_bytes()
    with tempfile.TemporaryDirectory(prefix="nar-fp-") as tmp:
        path = Path(tmp) / Path(ARTIFACT).name
        path.write_bytes(data)
        client.log_model_artifact(model_id, str(path), str(Path(ARTIFACT).parent))
    return {TAG_WEIGHTS_HASH: fp.weights_hash, TAG_FINGERPRINT: f"{ARTIFACT}@{fp.digest}"}


def fetch_fingerprint(client: Any, model_id: str, ref: str) -> Any:
    """Download and check the fingerprint a ``nar.fingerprint`` tag names.

    Raises:
        CorruptArtifactError: the tag is malformed, or the bytes do not match its digest.
    """
    import hashlib

    from mlflow.artifacts import download_artifacts

    from nar_plugin.lineage.fingerprint import WeightFingerprint

    path, sep, digest = ref.partition("@")
    if not sep or path != ARTIFACT or not digest.startswith("sha256:"):
        raise CorruptArtifactError(f"model {model_id}: tag {TAG_FINGERPRINT}={ref!r} is not "
                                   f"'{ARTIFACT}@sha256:<hex>'")
    base = client.get_logged_model(model_id).artifact_location.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="nar-fp-") as tmp:
        local = Path(download_artifacts(artifact_uri=f"{base}/{ARTIFACT}", dst_path=tmp))
        data = local.read_bytes()
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise CorruptArtifactError(f"model {model_id}: {ARTIFACT} does not match its tag's digest")
    return WeightFingerprint.from_bytes(data, f"{ARTIFACT} of model {model_id}")


def restore_fingerprint(client: Any, index: Any, key: str, tags: dict[str, str], model_id: str | None) -> bool:
    """Make ``key``'s fingerprint available in ``index`` from the tags (fetching the artifact of
    ``model_id`` only when the index lacks that weights hash). Returns whether it is there."""
    from nar_plugin.index.weights import put_weights, weights_blob, weights_of
    from nar_plugin.search.weights import store_fingerprint

    wh, ref = tags.get(TAG_WEIGHTS_HASH), tags.get(TAG_FINGERPRINT)
    if not wh or not ref:
        return False
    linked = weights_of(index, key)
    if linked is not None and linked[0] == wh and linked[1] is not None:
        return True
    if weights_blob(index, wh) is not None:
        put_weights(index, key, wh)
        return True
    if not model_id:
        return False
    try:
        fp = fetch_fingerprint(client, model_id, ref)
    except (CorruptArtifactError, OSError) as e:
        logger.warning("nar-plugin: weight fingerprint of %s not restored: %s", key, e)
        return False
    except Exception as e:  # noqa: BLE001 - a missing artifact (MlflowException) is not fatal to a sync
        logger.warning("nar-plugin: weight fingerprint of %s not restored: %s: %s", key, type(e).__name__, e)
        return False
    if fp.weights_hash != wh:
        logger.warning("nar-plugin: %s: the fingerprint artifact is of other weights than its tag says", key)
        return False
    store_fingerprint(index, key, fp)
    return True
