"""ATen-level graphs: an in-memory ``torch.export.ExportedProgram`` or a stored pt2 archive.

Both are lowered through the same function: each node becomes ``(base name, named args, output
names, output shapes)``, so an archive read from disk (``models/model.json``, no weights) gives
exactly the graph of the program it was saved from.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

from nar_plugin.errors import CorruptArtifactError, NarError, UnsupportedModelError
from nar_plugin.extract.limits import (
    Budgets,
    bounded_call,
    check_deadline,
    check_node_count,
    confine,
    loads_bounded,
    read_member,
    reads_stored_graph,
)
from nar_plugin.extract.ops import EMPTY, Value, base_name, lower_op
from nar_plugin.graph import ArchGraph, GraphBuilder
from nar_plugin.graph.params import param_metadata

__all__ = ["graph_from_exported_program", "graph_from_pt2", "graph_from_model_json"]


def _shape_of(val: Any) -> tuple[int, ...] | None:
    shape = getattr(val, "shape", None)
    if shape is None:
        return None
    out = []
    for d in shape:
        try:
            out.append(int(d))
        except (TypeError, ValueError):  # symbolic dims
            out.append(-1)
    return tuple(out)


def graph_from_exported_program(ep: Any, metadata: dict[str, Any] | None = None) -> ArchGraph:
    """Lower an ``ExportedProgram`` (any IR level) into an :class:`ArchGraph`."""
    import torch

    sig = ep.graph_signature
    user_inputs = set(sig.user_inputs)
    b = GraphBuilder()
    env: dict[str, Value] = {}

    def conv(a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return env.get(a.name, Value(EMPTY))
        if isinstance(a, (list, tuple)):
            return [conv(x) for x in a]
        return a

    for node in ep.graph.nodes:
        shape = _shape_of(node.meta.get("val"))
        if node.op == "placeholder":
            env[node.name] = Value(b.add_input() if node.name in user_inputs else EMPTY, shape)
        elif node.op == "call_function":
            target = node.target
            schema = getattr(target, "_schema", None)
            # OpOverload prints as "aten.conv2d.default"; plain callables (getitem) by __name__
            name = base_name(str(target) if schema is not None else getattr(target, "__name__", str(target)))
            named: dict[str, Any] = {}
            if schema is not None:
                for i, a in enumerate(node.args):
                    key = schema.arguments[i].name if i < len(schema.arguments) else f"arg{i}"
                    named[key] = conv(a)
            else:
                for i, a in enumerate(node.args):
                    named[f"arg{i}"] = conv(a)
            for k, v in node.kwargs.items():
                named[k] = conv(v)
            if "self" in named and "input" not in named:
                named["input"] = named.pop("self")
            env[node.name] = lower_op(b, name, named, shape)
        elif node.op == "output":
            b.add_output(v.ref for v in _flatten_values(conv(list(node.args))))
        elif node.op == "get_attr":
            env[node.name] = Value(EMPTY, None)
    params = set(sig.inputs_to_parameters)
    counted = [_shape_of(n.meta.get("val")) for n in ep.graph.nodes if n.op == "placeholder" and n.name in params]
    meta = {"tracer": "export", **param_metadata(counted), **(metadata or {})}
    return b.build(meta)


def _flatten_values(x: Any) -> list[Value]:
    if isinstance(x, Value):
        return [x]
    if isinstance(x, (list, tuple)):
        out: list[Value] = []
        for y in x:
            out.extend(_flatten_values(y))
        return out
    return []


# ---------------------------------------------------------------- serialized (model.json)
def _json_arg(arg: dict[str, Any], env: dict[str, Value], shapes: dict[str, tuple[int, ...]]) -> Any:
    if not isinstance(arg, dict) or not arg:
        return None
    (kind, val), = list(arg.items())[:1]
    if kind == "as_tensor":
        return env.get(val["name"], Value(EMPTY, shapes.get(val["name"])))
    if kind in ("as_tensors", "as_optional_tensors"):
        out = []
        for t in val:
            if isinstance(t, dict) and "as_tensor" in t:
                t = t["as_tensor"]
            name = t.get("name") if isinstance(t, dict) else None
            if name:
                out.append(env.get(name, Value(EMPTY, shapes.get(name))))
        return out
    if kind in ("as_optional_tensor",):
        if isinstance(val, dict) and "as_tensor" in val:
            name = val["as_tensor"]["name"]
            return env.get(name, Value(EMPTY, shapes.get(name)))
        return None
    if kind in ("as_int", "as_float", "as_bool", "as_string"):
        return val
    if kind in ("as_ints", "as_floats", "as_bools"):
        return list(val)
    if kind == "as_none":
        return None
    if kind in ("as_sym_int", "as_sym_ints", "as_sym_float", "as_sym_bool"):
        return None
    return None


@reads_stored_graph("models/model.json")
def graph_from_model_json(model: dict[str, Any], metadata: dict[str, Any] | None = None) -> ArchGraph:
    """Lower the ``models/model.json`` of a pt2 archive (the serialized ExportedProgram).

    Runs under the node and time budgets (:func:`~nar_plugin.extract.limits.bounded`).

    Raises:
        CorruptArtifactError: the JSON is not a (well-formed) serialized ExportedProgram.
        TraceTooLargeError: the graph passed ``NAR_MAX_TRACE_NODES`` while being lowered.
        ExtractionTimeoutError: lowering ran past ``NAR_EXTRACT_TIMEOUT``.
    """
    try:
        gm = model["graph_module"]
        graph = gm["graph"]
        nodes = graph["nodes"]
        specs = gm["signature"]["input_specs"]
    except (KeyError, TypeError) as e:
        raise CorruptArtifactError(f"model.json is not a serialized ExportedProgram (missing {e})") from e
    shapes: dict[str, tuple[int, ...]] = {}
    for name, tv in (graph.get("tensor_values") or {}).items():
        dims = []
        for d in tv.get("sizes", []):
            dims.append(int(d["as_int"]) if isinstance(d, dict) and "as_int" in d else -1)
        shapes[name] = tuple(dims)
    b = GraphBuilder()
    env: dict[str, Value] = {}
    param_names: list[str] = []
    for spec in specs:
        (kind, body), = list(spec.items())[:1]
        arg = body.get("arg", {})
        name = arg.get("name") if isinstance(arg, dict) else None
        if name is None and isinstance(arg, dict) and "as_tensor" in arg:
            name = arg["as_tensor"]["name"]
        if not name:
            continue
        if kind == "parameter":
            param_names.append(name)
        if kind == "user_input":
            env[name] = Value(b.add_input(), shapes.get(name))
        else:
            env[name] = Value(EMPTY, shapes.get(name))
    for node in nodes:
        target = node.get("target", "")
        name = base_name(target)
        named: dict[str, Any] = {}
        for i, inp in enumerate(node.get("inputs", [])):
            key = inp.get("name") or f"arg{i}"
            if key == "self":
                key = "input"
            named[key] = _json_arg(inp.get("arg", {}), env, shapes)
        outs = []
        for o in node.get("outputs", []):
            if "as_tensor" in o:
                outs.append(o["as_tensor"]["name"])
            elif "as_tensors" in o:
                outs.extend(t["name"] for t in o["as_tensors"] if isinstance(t, dict) and "name" in t)
            elif "as_optional_tensors" in o:
                for t in o["as_optional_tensors"]:
                    if isinstance(t, dict) and "as_tensor" in t:
                        outs.append(t["as_tensor"]["name"])
        if name == "getitem":
            continue
        out_shape = shapes.get(outs[0]) if outs else None
        val = lower_op(b, name, named, out_shape)
        for o in outs:
            env[o] = Value(val.ref, shapes.get(o))
    out_refs = []
    for o in graph.get("outputs", []):
        for v in _flatten_values(_json_arg(o, env, shapes)):
            out_refs.append(v.ref)
    b.add_output(out_refs)
    meta = {"tracer": "pt2", **param_metadata(shapes.get(n) for n in param_names), **(metadata or {})}
    return b.build(meta)


@bounded_call
def graph_from_pt2(path: str | Path, metadata: dict[str, Any] | None = None) -> ArchGraph:
    """Read the graph of a ``.pt2`` archive (or an MLflow pytorch model directory holding one).

    Only ``models/model.json`` is read; weights stay in the archive, untouched. The archive may
    come from anyone, so its member size is checked on ``ZipInfo.file_size`` before a byte is
    inflated (``NAR_MAX_MEMBER_MB``), the JSON's depth before it is parsed
    (``NAR_MAX_JSON_DEPTH``), its node count before it is lowered (``NAR_MAX_TRACE_NODES``), and
    an archive inside a directory must really be inside it (no link leading out).

    Raises:
        CorruptArtifactError: not a zip archive, or no/invalid ``models/model.json``.
        BudgetExceededError: ``models/model.json`` is too large or too deeply nested.
        TraceTooLargeError: more nodes than ``NAR_MAX_TRACE_NODES``.
        UnsafePathError: the archive found in a directory resolves outside it.
        UnsupportedModelError: a directory without a pt2 archive.
    """
    p = Path(path)
    if p.is_dir():
        cands = sorted(p.glob("data/*.pt2")) + sorted(p.glob("*.pt2")) + sorted(p.glob("**/*.pt2"))
        if not cands:
            raise UnsupportedModelError(
                f"expected an MLflow pytorch model directory with data/model.pt2, found none in {p}"
            )
        p = confine(cands[0], p, "pt2 archive")
    budgets = Budgets.from_env()
    try:
        with zipfile.ZipFile(p) as z:
            names = [n for n in z.namelist() if n.endswith("models/model.json")]
            if not names:
                raise CorruptArtifactError(f"{p} holds no models/model.json (not a torch.export archive)", str(p))
            raw = read_member(z, sorted(names, key=len)[0], p, budgets)
    except NarError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, NotImplementedError,
            RuntimeError, ValueError) as e:  # corrupt, truncated, encrypted or oddly compressed
        raise CorruptArtifactError(f"{p} is not a readable pt2 archive (zip): {type(e).__name__}: {e}", str(p)) from e
    model = loads_bounded(raw, "models/model.json", path=p, budgets=budgets)
    graph = model.get("graph_module") if isinstance(model, dict) else None
    nodes = graph.get("graph", {}).get("nodes") if isinstance(graph, dict) and isinstance(graph.get("graph"), dict) else None
    if not isinstance(nodes, list):
        raise CorruptArtifactError(f"{p}: models/model.json is not a serialized ExportedProgram "
                                   "(no graph_module.graph.nodes list)", str(p))
    check_node_count(len(nodes))
    check_deadline("parsing models/model.json")
    try:
        return graph_from_model_json(model, {"source": str(p), **(metadata or {})})
    except CorruptArtifactError as e:
        if e.path is None:  # say which archive
            raise CorruptArtifactError(f"{p}: {e}", str(p)) from e
        raise
