"""Load an ONNX model for the import: a path, bytes or ModelProto, checked before any node is read.

What it guarantees to the importer (``graphc.onnxio.importer``):

- the model's external data stays inside its folder: every tensor kept in external data must
  name a relative path that resolves to an existing file inside the folder of the ``.onnx``
  file (no absolute paths, no ``..`` out of it, no links that lead out); a model given as bytes
  or as a ModelProto with external data is refused, it has no folder to read from, and a
  ModelProto passed in is never modified;
- the default-domain opset is in range: ``MIN_OPSET`` to ``newest_opset()``, the newest the
  installed onnx defines; a model that imports no default-domain opset is refused. An older
  model (opset 7 to 12, as the ONNX model zoo still has many) is first upgraded to
  ``MIN_OPSET`` by ``upgrade`` with ``onnx.version_converter``; what the converter cannot convert
  is refused with its message.

Errors are ``GraphcError`` naming the file (or "the ONNX bytes"/"the ONNX model") and the
tensor or graph at fault.

>>> from onnx import helper
>>> graph = helper.make_graph([], "empty", [], [])
>>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
>>> _default_opset(_load(model.SerializeToString()))
17
>>> old = helper.make_model(graph, opset_imports=[helper.make_opsetid("", MIN_OPSET - 1)])
>>> try:
...     _default_opset(old)
... except GraphcError as err:
...     print(err.what)
opset 12 cannot be imported
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx

from graphc.errors import GraphcError, UsageError

MIN_OPSET = 13
DEFAULT_DOMAINS = ("", "ai.onnx")


def newest_opset() -> int:
    """Return the newest default-domain opset the installed onnx defines (the import's top)."""
    return onnx.defs.onnx_opset_version()


# ----- loading ------------------------------------------------------------------------------


def _load(model: Any) -> onnx.ModelProto:
    """Return the ModelProto of a path, bytes or ModelProto, with external data loaded."""
    base_dir: Path | None = None
    if isinstance(model, onnx.ModelProto):
        proto, source = model, "the ONNX model"
    elif isinstance(model, (bytes, bytearray, memoryview)):
        source = "the ONNX bytes"
        try:
            proto = onnx.load_model_from_string(bytes(model))
        except Exception as err:  # noqa: BLE001 - protobuf raises several types
            raise GraphcError(f"{source} are not an ONNX model: {err}".rstrip(".")) from None
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        source = f"ONNX file {str(path)!r}"
        if not path.exists():
            raise GraphcError(f"{source} does not exist",
                              hint="Check the path (it is relative to the current folder).")
        if not path.is_file():
            raise GraphcError(f"{source} is not a file", expected="an .onnx file",
                              got="a folder" if path.is_dir() else "something else")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except OSError as err:
            raise GraphcError(f"cannot read {source}: {err.strerror or err}") from None
        except Exception as err:  # noqa: BLE001 - protobuf raises several types
            raise GraphcError(f"{source} is not an ONNX model: {err}".rstrip("."),
                              hint="Give a file written by torch.onnx.export, onnx.save or "
                                   "graphc.") from None
        base_dir = path.parent
    else:
        raise UsageError("cannot import this object as ONNX", expected="an onnx.ModelProto, "
                         "bytes, or a path to an .onnx file", got=type(model).__name__)
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise GraphcError(f"{source} is not an ONNX model", expected="an ONNX ModelProto",
                          got="a message without ir_version or graph")
    if proto.ir_version > onnx.IR_VERSION:
        # onnxruntime refuses it too, with a C++ message; say it once, before any work.
        raise GraphcError(f"{source} has ONNX IR version {proto.ir_version}, newer than the "
                          f"installed onnx {onnx.__version__} reads",
                          expected=f"IR version {onnx.IR_VERSION} or older",
                          got=proto.ir_version,
                          hint="Export the model again with an older exporter, or upgrade onnx "
                               "and onnxruntime.")
    external = [t for t in _tensors(proto.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        if base_dir is None:
            raise GraphcError(f"{source} keeps tensor {external[0].name!r} in external data "
                              "but has no folder to read it from",
                              hint="Import from the .onnx file's path, or load it with "
                                   "onnx.load(path) first.")
        for tensor in external:
            _check_external_path(tensor, base_dir, source)
        proto = _copy(proto) if isinstance(model, onnx.ModelProto) else proto
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(base_dir))
        except Exception as err:  # noqa: BLE001 - onnx raises OSError, ValueError, ...
            raise GraphcError(f"cannot read the external data of {source}: {err}") from None
    return proto


def file_bytes(path: str | os.PathLike[str]) -> bytes:
    """Return an .onnx file's bytes for onnxruntime, its external data read in (and checked to
    stay in the file's folder), so that the bytes run whatever the current folder is.

    onnxruntime resolves external data given as bytes against the current folder, not the
    model's; a file without external data is returned as it is on disk.

    >>> import tempfile
    >>> from onnx import helper
    >>> model = helper.make_model(helper.make_graph([], "empty", [], []))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "empty.onnx")
    ...     onnx.save_model(model, path)
    ...     file_bytes(path) == model.SerializeToString()
    True
    """
    proto = _load(path)
    source = f"ONNX file {str(path)!r}"
    try:
        on_disk = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - _load already read it; a race changed the file
        raise GraphcError(f"cannot read {source}: {err}") from None
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in _tensors(on_disk.graph)):
        return Path(path).read_bytes()
    try:
        return proto.SerializeToString()
    except ValueError as err:  # protobuf cannot write a message over 2 GiB
        raise GraphcError(f"cannot pass {source} to onnxruntime from memory: {err}",
                          hint="Keep the model under 2 GiB with its external data.") from None


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Yield every tensor of ``graph``: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _check_external_path(tensor: onnx.TensorProto, base_dir: Path, source: str) -> None:
    """Refuse an external-data location that is absolute or resolves outside ``base_dir``."""
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    where = f"{source}, tensor {tensor.name!r}"
    if not location:
        raise GraphcError("external data has no location", where=where)
    folder = base_dir.resolve()
    target = (base_dir / location).resolve()
    if Path(location).is_absolute() or os.path.isabs(location) or not target.is_relative_to(
            folder):
        raise GraphcError("external data path leaves the model's folder", where=where,
                          expected=f"a file inside {str(folder)!r}", got=repr(location),
                          hint="Keep the data file next to the model and refer to it by a "
                               "relative name (onnx.save_model(..., location='weights.bin')).")
    if not target.is_file():
        raise GraphcError("external data file does not exist", where=where,
                          expected=f"a file at {str(target)!r}", got="nothing",
                          hint="Copy the data file next to the model.")


def _default_opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    top = newest_opset()
    if not versions:
        raise GraphcError("the model imports no default-domain opset",
                          where=f"ONNX graph {model.graph.name!r}",
                          expected=f"an opset from {MIN_OPSET} to {top}", got="none")
    opset = max(versions)
    if not MIN_OPSET <= opset <= top:
        hint = ("Convert it first: onnx.version_converter.convert_version(model, 17)."
                if opset < MIN_OPSET else f"Export at opset {top} or lower.")
        raise GraphcError(f"opset {opset} cannot be imported",
                          where=f"ONNX graph {model.graph.name!r}",
                          expected=f"an opset from {MIN_OPSET} to {top}", got=opset, hint=hint)
    return opset


def upgrade(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int | None]:
    """Return the model at ``MIN_OPSET`` if its default-domain opset is older, and the opset it
    had (``None`` when nothing was converted; the model is then returned as it is).

    >>> from onnx import helper, TensorProto
    >>> node = helper.make_node("Relu", ["x"], ["y"])
    >>> info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    >>> out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    >>> old = helper.make_model(helper.make_graph([node], "g", [info], [out]),
    ...                         opset_imports=[helper.make_opsetid("", 9)])
    >>> new, was = upgrade(old)
    >>> _default_opset(new), was
    (13, 9)
    """
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions or max(versions) >= MIN_OPSET:
        return model, None
    opset = max(versions)
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception as err:  # noqa: BLE001 - the converter raises RuntimeError, ValueError, ...
        # The C++ converter's message starts with its source location and assertion.
        message = re.sub(r"^.*?Assertion `.*?` failed: ", "", " ".join(str(err).split()))
        message = re.sub(r"^\S+\.cc:\d+: \w+: ", "", message) or type(err).__name__
        raise GraphcError(f"opset {opset} cannot be upgraded to opset {MIN_OPSET}: {message}",
                          where=f"ONNX graph {model.graph.name!r}",
                          expected=f"a model onnx.version_converter converts to {MIN_OPSET}",
                          got=f"opset {opset}",
                          hint=f"Export the model at opset {MIN_OPSET} or newer.") from None
    return converted, opset
