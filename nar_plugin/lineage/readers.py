"""Where weights are read from, one tensor and one block at a time, never by unpickling.

- an ``nn.Module`` in memory (its ``state_dict``; the weights are already there);
- a pt2 archive (``torch.export.save`` / MLflow's ``data/model.pt2``): the raw tensor members
  named by ``data/weights/model_weights_config.json`` (members marked ``use_pickle`` are skipped);
- a ``.safetensors`` file: its JSON header, then each tensor's byte range;
- an ONNX file: its initializers (``onnx.load(load_external_data=False)``; external data is read
  from its byte range only when the file lies inside the model folder);
- an MLflow model directory: whichever of those it holds (pt2, ONNX, transformers safetensors).

Every reader yields :data:`~nar_plugin.lineage.fingerprint.RawTensor` tuples; the bytes are
read lazily while the fingerprint consumes them, so memory stays at one block
(:data:`~nar_plugin.lineage.sketch.CHUNK` elements) plus one tensor's metadata.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nar_plugin.errors import (
    CorruptArtifactError,
    UnsafePathError,
    UnsupportedModelError,
)
from nar_plugin.lineage.fingerprint import (
    RawTensor,
    WeightFingerprint,
    blocks_of,
    fingerprint_tensors,
)
from nar_plugin.lineage.sketch import CHUNK, itemsize

__all__ = ["fingerprint_file", "fingerprint_mlflow_dir", "fingerprint_module", "weight_files"]

#: torch.export's ScalarType enum -> dtype name
_PT2_DTYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32",
               8: "float64", 12: "bool", 13: "bfloat16", 28: "uint16", 34: "uint32", 35: "uint64"}
#: safetensors dtype -> dtype name
_ST_DTYPES = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16", "I8": "int8",
              "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64", "U16": "uint16",
              "U32": "uint32", "U64": "uint64", "BOOL": "bool", "F8_E4M3": "float8_e4m3", "F8_E5M2": "float8_e5m2"}
#: onnx.TensorProto.DataType -> dtype name
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}
#: largest safetensors header read, bytes
_MAX_HEADER = 100 << 20


def _torch_dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _module_tensors(module: Any) -> Iterator[RawTensor]:
    import torch

    for name, t in module.state_dict(keep_vars=False).items():
        if not isinstance(t, torch.Tensor):
            continue
        if t.device.type == "meta":
            raise UnsupportedModelError(f"tensor {name!r} is on the meta device: there are no weights to fingerprint")
        flat = t.detach().reshape(-1)
        dtype = _torch_dtype_name(t.dtype)

        def blocks(flat: Any = flat) -> Iterator[bytes]:
            for i in range(0, flat.numel(), CHUNK):  # one block copied to CPU at a time
                part = flat[i:i + CHUNK].cpu().contiguous()
                yield part.view(torch.uint8).numpy().tobytes() if part.numel() else b""

        yield name, dtype, tuple(t.shape), blocks()


def fingerprint_module(module: Any) -> WeightFingerprint:
    """Fingerprint an ``nn.Module``'s ``state_dict`` (parameters and buffers), block by block.

    Raises:
        UnsupportedModelError: a tensor lives on the meta device (no weights).

    Example:
        >>> fp = fingerprint_module(torchvision.models.resnet18())
        >>> len(fp), fp.weights_hash[:12]
    """
    return fingerprint_tensors(_module_tensors(module), "module")


# ------------------------------------------------------------------ files
def _confine(path: Path, root: Path | None) -> Path:
    real = path.resolve()
    if root is not None and not real.is_relative_to(root.resolve()):
        raise UnsafePathError(f"{path} lies outside {root}; not read")
    return real


def _safetensors(path: Path) -> Iterator[RawTensor]:
    fh = path.open("rb")
    try:
        head = fh.read(8)
        if len(head) != 8:
            raise CorruptArtifactError(f"{path} is not a safetensors file (shorter than 8 bytes)", str(path))
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            raise CorruptArtifactError(f"{path}: safetensors header of {n} bytes (limit {_MAX_HEADER})", str(path))
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CorruptArtifactError(f"{path}: unreadable safetensors header: {e}", str(path)) from e
        base = 8 + n
        items = sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                       key=lambda kv: kv[1]["data_offsets"][0])
        for name, info in items:
            dtype = _ST_DTYPES.get(str(info.get("dtype")), str(info.get("dtype")).lower())
            start, end = (int(x) for x in info["data_offsets"])
            fh.seek(base + start)
            yield name, dtype, tuple(int(d) for d in info["shape"]), blocks_of(fh.read, end - start, itemsize(dtype))
    finally:
        fh.close()


def _contiguous(sizes: list[int], strides: list[int]) -> bool:
    expect = 1
    for size, stride in zip(reversed(sizes), reversed(strides)):
        if size != 1 and stride != expect:
            return False
        expect *= size
    return True


def _pt2(path: Path) -> Iterator[RawTensor]:
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CorruptArtifactError(f"{path} is not a readable pt2 archive: {e}", str(path)) from e
    with z:
        names = z.namelist()
        configs = [n for n in names if n.endswith("data/weights/model_weights_config.json")]
        if not configs:
            raise UnsupportedModelError(f"{path} stores no weights (no data/weights/model_weights_config.json)")
        prefix = configs[0][: -len("model_weights_config.json")]
        info = z.getinfo(configs[0])
        if info.file_size > _MAX_HEADER:
            raise CorruptArtifactError(f"{path}: weights config of {info.file_size} bytes", str(path))
        config = json.loads(z.read(configs[0])).get("config") or {}
        for name, spec in config.items():
            if spec.get("use_pickle"):
                continue  # never unpickled; such tensors are left out of the fingerprint
            meta = spec["tensor_meta"]
            dtype = _PT2_DTYPES.get(int(meta["dtype"]), f"scalar{meta['dtype']}")
            sizes = [int(s["as_int"]) for s in meta["sizes"]]
            strides = [int(s["as_int"]) for s in meta["strides"]]
            offset = int(meta["storage_offset"]["as_int"])
            numel = 1
            for s in sizes:
                numel *= s
            item = itemsize(dtype)
            member = z.getinfo(prefix + spec["path_name"])
            if _contiguous(sizes, strides) and offset == 0 and member.file_size >= numel * item:
                fh = z.open(member)
                yield name, dtype, tuple(sizes), _closing(fh, blocks_of(fh.read, numel * item, item))
            else:  # a view into a shared storage (rare): gather it, bounded by that storage's size
                yield name, dtype, tuple(sizes), _strided(z.read(member), dtype, sizes, strides, offset)


def _closing(fh: Any, gen: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from gen
    finally:
        fh.close()


def _strided(storage: bytes, dtype: str, sizes: list[int], strides: list[int], offset: int) -> Iterator[bytes]:
    import numpy as np

    item = itemsize(dtype)
    base = np.frombuffer(storage, dtype=np.dtype(f"V{item}"))
    arr = np.lib.stride_tricks.as_strided(base[offset:], shape=sizes, strides=[s * item for s in strides])
    flat = np.ascontiguousarray(arr).reshape(-1)
    for i in range(0, flat.size, CHUNK):
        yield flat[i:i + CHUNK].tobytes()


def _onnx(path: Path, root: Path | None) -> Iterator[RawTensor]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    folder = path.parent
    for init in model.graph.initializer:
        dtype = _ONNX_DTYPES.get(int(init.data_type), f"onnx{init.data_type}")
        shape = tuple(int(d) for d in init.dims)
        if init.data_location == onnx.TensorProto.EXTERNAL:
            ext = {e.key: e.value for e in init.external_data}
            file = _confine(folder / ext.get("location", ""), root or folder)
            start, length = int(ext.get("offset", 0)), ext.get("length")
            fh = file.open("rb")
            fh.seek(start)
            n = int(length) if length is not None else file.stat().st_size - start
            yield init.name, dtype, shape, _closing(fh, blocks_of(fh.read, n, itemsize(dtype)))
        elif init.raw_data:
            raw = memoryview(init.raw_data)
            step = CHUNK * itemsize(dtype)
            yield init.name, dtype, shape, (raw[i:i + step].tobytes() for i in range(0, len(raw), step))
        else:  # typed fields (float_data, int64_data...): small tensors, converted as a whole
            from onnx import numpy_helper

            arr = numpy_helper.to_array(init)
            raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            step = CHUNK * itemsize(dtype)
            yield init.name, dtype, shape, (raw[i:i + step] for i in range(0, len(raw), step))


def fingerprint_file(path: str | Path, root: str | Path | None = None) -> WeightFingerprint:
    """Fingerprint a weights file: ``.safetensors``, ``.pt2`` or ``.onnx`` (by suffix).

    Args:
        path: the file.
        root: folder that every file read (ONNX external data included) must lie in.

    Raises:
        UnsupportedModelError: another kind of file (pickled ``.pt`` / ``.bin`` are refused).
        CorruptArtifactError: the file does not parse.
        UnsafePathError: a file named by the model lies outside ``root``.
    """
    p = _confine(Path(path), Path(root) if root is not None else None)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        return fingerprint_tensors(_safetensors(p), "safetensors")
    if suffix == ".pt2":
        return fingerprint_tensors(_pt2(p), "pt2")
    if suffix == ".onnx":
        return fingerprint_tensors(_onnx(p, Path(root) if root is not None else None), "onnx")
    raise UnsupportedModelError(f"cannot fingerprint {p.name}: expected .safetensors, .pt2 or .onnx "
                                "(pickled checkpoints are never read)")


def weight_files(model_dir: str | Path) -> list[Path]:
    """The weight files of an MLflow model directory, in order of preference: the pt2 archive,
    else the ONNX file, else the transformers safetensors shards (all of them, sorted)."""
    d = Path(model_dir)
    for pattern in ("data/*.pt2", "*.pt2", "*.onnx", "model/*.onnx"):
        found = sorted(d.glob(pattern))
        if found:
            return found[:1]
    return sorted(d.glob("model/*.safetensors")) or sorted(d.glob("*.safetensors"))


def fingerprint_mlflow_dir(model_dir: str | Path) -> WeightFingerprint | None:
    """Fingerprint the weights of a saved MLflow model directory (``None``: it holds none that
    can be read without unpickling). Every file must lie inside the directory.

    Raises:
        CorruptArtifactError, UnsafePathError: as :func:`fingerprint_file`.
    """
    d = Path(model_dir)
    files = weight_files(d)
    if not files:
        return None
    if len(files) == 1:
        return fingerprint_file(files[0], root=d)
    shards = [fingerprint_file(f, root=d) for f in files]  # sharded safetensors: one model
    tensors = tuple(t for fp in shards for t in fp.tensors)
    from nar_plugin.lineage.fingerprint import weights_hash_of

    return WeightFingerprint(tensors, weights_hash_of(tensors), "safetensors")
