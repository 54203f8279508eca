"""ONNX -> ArchGraph. Reads the graph only: external weight data stays on disk.

This module loads and checks the file; :mod:`~nar_plugin.extract.onnx_ops` holds the op table
and lowers the graph (widths from initializer dims, so no weight data is ever read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nar_plugin.errors import CorruptArtifactError
from nar_plugin.extract.limits import Budgets, check_node_count, check_size, confine, reads_stored_graph
from nar_plugin.extract.onnx_ops import lower_onnx
from nar_plugin.graph import ArchGraph

__all__ = ["graph_from_onnx", "load_onnx"]


def load_onnx(path: str | Path) -> Any:
    """Load an ONNX model without its external data.

    The file may come from anyone: its size is checked before it is parsed
    (``NAR_MAX_ONNX_MB``), its node count before it is lowered (``NAR_MAX_TRACE_NODES``), and
    every external-data location it names must resolve inside the model's folder. That data is
    never read here, but a location leading out (``../../x``, an absolute path) marks a hostile
    file, and any later full load would follow it.

    Raises:
        CorruptArtifactError: the file does not parse as an ONNX ModelProto.
        BudgetExceededError: the file is larger than ``NAR_MAX_ONNX_MB``.
        TraceTooLargeError: more nodes than ``NAR_MAX_TRACE_NODES``.
        UnsafePathError: an external-data location outside the model's folder.
    """
    import onnx

    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise CorruptArtifactError(f"cannot read ONNX file {p}: {e.strerror or e}", str(p)) from e
    check_size(size, Budgets.from_env().max_onnx_bytes, "ONNX file", "NAR_MAX_ONNX_MB", p)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several unrelated types
        raise CorruptArtifactError(f"{path} is not a valid ONNX model: {type(e).__name__}: {e}", str(path)) from e
    if not model.graph.node:
        raise CorruptArtifactError(f"{path} parsed, but its graph has no nodes (expected an ONNX model)", str(path))
    check_node_count(len(model.graph.node))
    _check_external_data(model, p.parent)
    return model


def _check_external_data(model: Any, root: Path) -> None:
    """Every external-data ``location`` (initializers, constants, sparse tensors, subgraphs)
    resolves inside ``root``."""
    import onnx

    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        tensors = list(g.initializer)
        for sp in g.sparse_initializer:
            tensors += [sp.values, sp.indices]
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    tensors.append(a.t)
                tensors.extend(a.tensors)
                if a.HasField("g"):
                    graphs.append(a.g)
                graphs.extend(a.graphs)
        for t in tensors:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                loc = next((e.value for e in t.external_data if e.key == "location"), "")
                confine(loc, root, f"external data of tensor {t.name!r}")


@reads_stored_graph("ONNX graph")
def graph_from_onnx(source: Any, metadata: dict[str, Any] | None = None) -> ArchGraph:
    """Lower an ONNX file path or ``ModelProto``, under the node and time budgets
    (:func:`~nar_plugin.extract.limits.bounded`); a path is read by :func:`load_onnx`.

    Raises:
        CorruptArtifactError: unreadable, empty or malformed model.
        BudgetExceededError, UnsafePathError: see :func:`load_onnx`.
        TraceTooLargeError: the graph passed ``NAR_MAX_TRACE_NODES`` while being lowered.
        ExtractionTimeoutError: lowering ran past ``NAR_EXTRACT_TIMEOUT``.
    """
    if isinstance(source, (str, Path)):
        model = load_onnx(source)
        meta = {"source": str(source)}
    else:
        model = source
        meta = {}
    return lower_onnx(model, {"tracer": "onnx", **meta, **(metadata or {})})
