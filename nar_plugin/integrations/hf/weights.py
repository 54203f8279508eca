"""Weights of a Hub push (opt-in, ``NAR_HF_READ_WEIGHTS=true``): fingerprint the safetensors of
the commit, and check the card's declared ``base_model`` against them.

The Hub's model tree trusts ``base_model`` as the uploader wrote it. When the base model is in
the local index with a fingerprint (indexed with its weights), the pushed weights either confirm
the claim (same weights, or fine-tuned from it) or contradict it (unrelated weights: a warning;
the commit goes ahead). Safetensors are read block by block (never unpickled); pickled
``*.bin`` / ``*.pt`` are never read.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nar_plugin.errors import DuplicateModelWarning
from nar_plugin.integrations.boundary import warn_safely

logger = logging.getLogger(__name__)

__all__ = ["check_declared_base", "fingerprint_commit"]


def fingerprint_commit(ops: Sequence[Any]) -> Any:
    """The fingerprint of the ``*.safetensors`` files a commit adds (``None``: none, or
    ``NAR_HF_READ_WEIGHTS`` is off)."""
    from huggingface_hub import CommitOperationAdd

    from nar_plugin.config import NAR_HF_READ_WEIGHTS
    from nar_plugin.lineage.fingerprint import WeightFingerprint, weights_hash_of
    from nar_plugin.lineage.readers import fingerprint_file

    if not NAR_HF_READ_WEIGHTS.get():
        return None
    files = sorted((op for op in ops if isinstance(op, CommitOperationAdd) and op.path_in_repo.endswith(".safetensors")),
                   key=lambda op: op.path_in_repo)
    if not files:
        return None
    parts = []
    for op in files:
        src = op.path_or_fileobj
        if isinstance(src, (str, Path)):
            parts.append(fingerprint_file(src))
            continue
        with tempfile.TemporaryDirectory(prefix="nar-hf-") as tmp:  # bytes or a file object: spill once
            path = Path(tmp) / "w.safetensors"
            if isinstance(src, bytes):
                path.write_bytes(src)
            else:
                pos = src.tell()
                with path.open("wb") as fh:
                    while block := src.read(1 << 20):
                        fh.write(block)
                src.seek(pos)
            parts.append(fingerprint_file(path))
    tensors = tuple(t for fp in parts for t in fp.tensors)
    return WeightFingerprint(tensors, weights_hash_of(tensors), "safetensors")


def check_declared_base(repo_id: str, fp: Any, declared: Sequence[str], vector: Any, index: Any = None) -> list[str]:
    """Compare the pushed weights with each declared ``base_model`` that has a fingerprint in the
    index; warn (:class:`~nar_plugin.errors.DuplicateModelWarning`) for each contradiction.

    Returns:
        One line per declared base checked: ``confirmed: ...`` or ``contradicted: ...``.
    """
    from nar_plugin.lineage.compare import compare, weight_relation
    from nar_plugin.search.api import open_index
    from nar_plugin.search.weights import fingerprint_of

    idx = open_index(index)
    out = []
    for base in declared:
        hits = idx.search(vector, k=20, filter=f"hf:{base}@")
        base_fp = next((f for h in hits if (f := fingerprint_of(idx, h.key)) is not None), None)
        if base_fp is None:
            logger.info("nar-plugin: base_model %s of %s has no weight fingerprint in the index; not checked", base, repo_id)
            continue
        c = compare(base_fp, fp)
        rel = weight_relation(c)
        if rel is not None:
            out.append(f"confirmed: {repo_id} {'has the same weights as' if rel == 'same-weights' else 'was fine-tuned from'} "
                       f"its base_model {base} ({c.explain()})")
            continue
        msg = (f"nar-plugin: the card of {repo_id} declares base_model {base}, but the pushed weights are not "
               f"fine-tuned from it ({c.explain()}); the model tree on the Hub will be wrong")
        logger.warning(msg)
        warn_safely(msg, DuplicateModelWarning)
        out.append("contradicted: " + msg.removeprefix("nar-plugin: "))
    return out
