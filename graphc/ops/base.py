"""The shape of an op record (``OpDef``) and the helpers every op module shares.

An op is declared once: its inputs, attributes with defaults, a shape rule, a numpy reference,
an ONNX lowering (default: one node of the same op_type), a gradient rule slot (``vjp``) and
examples that the table-driven tests run against onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from graphc.errors import OpError, ShapeError, unknown

if TYPE_CHECKING:
    import onnx

    from graphc.ops.elementwise import Formula

DTYPE_SHORT = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float64): "f64",
    np.dtype(np.float16): "f16",
    np.dtype(np.int64): "i64",
    np.dtype(np.int32): "i32",
    np.dtype(np.int8): "i8",
    np.dtype(np.uint8): "u8",
    np.dtype(np.bool_): "bool",
    # The other integer types ONNX defines arithmetic and comparisons on.
    np.dtype(np.int16): "i16",
    np.dtype(np.uint16): "u16",
    np.dtype(np.uint32): "u32",
    np.dtype(np.uint64): "u64",
}
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))
# ONNX's TensorProto.DataType numbers of the dtypes above (fixed by the ONNX spec), so that the
# op set can name them (Cast's ``to``) without importing onnx: onnx and its ml_dtypes cost most
# of a second at start-up, and only lowering to ONNX needs them.
ONNX_DTYPES = {
    np.dtype(np.float32): 1,
    np.dtype(np.uint8): 2,
    np.dtype(np.int8): 3,
    np.dtype(np.int32): 6,
    np.dtype(np.int64): 7,
    np.dtype(np.bool_): 9,
    np.dtype(np.float16): 10,
    np.dtype(np.float64): 11,
    np.dtype(np.uint16): 4,
    np.dtype(np.int16): 5,
    np.dtype(np.uint32): 12,
    np.dtype(np.uint64): 13,
}


def onnx_dtype(dtype: Any) -> int:
    """Return ONNX's data type number of a numpy dtype (``TensorProto.FLOAT`` is 1).

    >>> onnx_dtype(np.float32), onnx_dtype("int64")
    (1, 7)
    """
    dtype = np.dtype(dtype)
    if dtype in ONNX_DTYPES:
        return ONNX_DTYPES[dtype]
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(dtype)


class TensorType(NamedTuple):
    """The static type of a value: a concrete shape and a numpy dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        if len(self.shape) == 1:
            dims += ","
        return f"({dims}) {DTYPE_SHORT.get(np.dtype(self.dtype), str(self.dtype))}"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def type_of(array: np.ndarray) -> TensorType:
    """Return the ``TensorType`` of a numpy array."""
    return TensorType(tuple(int(d) for d in array.shape), np.dtype(array.dtype))


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
ATTR_KINDS = ("int", "float", "str", "ints", "floats")


@dataclass(frozen=True)
class Attr:
    """An attribute: its kind (int, float, str, ints, floats), default (or REQUIRED), and the
    first opset whose ONNX op has it (an explicit value cannot be exported below that)."""

    kind: str
    default: Any = REQUIRED
    since: int = 1


@dataclass(frozen=True)
class Example:
    """Inputs and attributes on which the op is tested; inputs at ``consts`` are initializers.

    ``onnxruntime_differs`` is empty when onnxruntime must compute exactly what the numpy
    reference does; otherwise it says why onnxruntime departs from it, and the tests then
    compare only the elements the reference gives as finite or +inf (see docs/ops.md).
    """

    inputs: tuple[np.ndarray | None, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    consts: tuple[int, ...] = ()
    name: str = ""
    onnxruntime_differs: str = ""


@dataclass
class NodeView:
    """What a lowering, shape rule or FLOP count sees of one node."""

    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    full_attrs: dict[str, Any]
    in_types: list[TensorType | None]
    out_types: list[TensorType]
    # Values of constant inputs by port (``None`` elsewhere), as the shape rule sees them.
    consts: list[np.ndarray | None] = field(default_factory=list)


class LowerCtx:
    """Collects the ONNX nodes and initializers that lowerings emit, at one opset."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[tuple[str, np.ndarray]] = []  # written as the graph's are
        self._names: set[str] = set()

    def reserve(self, names: Sequence[str]) -> None:
        """Mark names as taken so that helper values never collide with them."""
        self._names.update(names)

    def fresh(self, base: str) -> str:
        """Return a value name derived from ``base`` that is not used yet."""
        name, k = base, 1
        while name in self._names:
            name = f"{base}_{k}"
            k += 1
        self._names.add(name)
        return name

    def node(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str],
             **attrs: Any) -> None:
        """Emit one ONNX node, named after its first output (the name the importer gives the
        node back, so export -> import -> export gives the same bytes); attributes are written
        in name order."""
        from onnx import helper

        self.nodes.append(
            helper.make_node(op_type, list(inputs), list(outputs), name=outputs[0],
                             **dict(sorted(attrs.items())))
        )

    def const(self, base: str, array: np.ndarray) -> str:
        """Emit an initializer holding ``array`` and return its (fresh) name."""
        name = self.fresh(base)
        self.initializers.append((name, np.asarray(array)))
        return name


@dataclass(frozen=True)
class OpDef:
    """One op: schema, shape rule, numpy reference, lowering, gradient rule and examples.

    ``inputs`` names the input ports; a trailing ``?`` marks an optional input and a trailing
    ``*`` a variadic one. ``nonfinite`` holds examples with NaN, +inf and -inf among the
    inputs (the gradient tests, which need finite values, use ``examples`` only).
    ``infer(in_types, attrs, consts)`` returns the output types, where
    ``consts`` holds the values of constant inputs (``None`` elsewhere). ``ref(inputs, attrs)``
    returns the outputs as numpy arrays. ``lower(ctx, view)`` emits ONNX; ``None`` means one node
    of the same op_type with the node's explicit attributes.
    """

    name: str
    doc: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Attr]
    infer: Callable[..., list[TensorType]]
    ref: Callable[..., list[np.ndarray]]
    examples: tuple[Example, ...]
    lower: Callable[[LowerCtx, NodeView], None] | None = None
    vjp: Callable[..., Any] | None = None
    flops: Callable[[NodeView], int] | None = None
    formula: Formula | None = None
    nonfinite: tuple[Example, ...] = ()

    @property
    def variadic(self) -> bool:
        return bool(self.inputs) and self.inputs[-1].endswith("*")

    @property
    def min_inputs(self) -> int:
        return sum(1 for n in self.inputs if not n.endswith(("?", "*")))

    @property
    def max_inputs(self) -> int | None:
        return None if self.variadic else len(self.inputs)

    def input_name(self, port: int) -> str:
        if self.variadic and port >= len(self.inputs) - 1:
            return self.inputs[-1].rstrip("*")
        return self.inputs[port].rstrip("?")

    def check_attrs(self, attrs: dict[str, Any], where: str | None = None) -> dict[str, Any]:
        """Return ``attrs`` validated and coerced to each attribute's kind (name order)."""
        out = {}
        for key in sorted(attrs):
            if key not in self.attrs:
                raise unknown(f"attribute of {self.name}", key, self.attrs, where=where,
                              cls=OpError)
            out[key] = _coerce(self.attrs[key].kind, attrs[key], f"{self.name}.{key}", where)
        return out

    def full_attrs(self, attrs: dict[str, Any], where: str | None = None) -> dict[str, Any]:
        """Return ``attrs`` completed with defaults; a missing required attribute is an error."""
        full = {}
        for key, spec in self.attrs.items():
            if key in attrs:
                full[key] = attrs[key]
            elif spec.default is REQUIRED:
                raise OpError(f"{self.name} needs attribute {key!r}", where=where,
                              hint=f"Give {key}=<{spec.kind}>.")
            else:
                full[key] = spec.default
        return full


def _coerce(kind: str, value: Any, what: str, where: str | None) -> Any:
    try:
        if kind == "int":
            if isinstance(value, (bool, int, np.integer)):
                return int(value)
        elif kind == "float":
            # ONNX stores float attributes as float32: round now, so a graph and its exported
            # and re-imported copy compute exactly the same thing.
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, bool
            ):
                return float(np.float32(value))
        elif kind == "str":
            if isinstance(value, (str, bytes)):
                return value.decode() if isinstance(value, bytes) else value
        elif kind == "ints":
            if not isinstance(value, (str, bytes)):
                items = list(value)
                if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
                    return tuple(int(v) for v in items)
        elif kind == "floats":
            if not isinstance(value, (str, bytes)):
                return tuple(float(np.float32(v)) for v in value)
    except (TypeError, ValueError):
        pass
    raise OpError(f"attribute {what} has the wrong kind", where=where, expected=kind,
                  got=repr(value))


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """Return numpy's broadcast of ``shapes`` or raise ShapeError naming both shapes."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(
            "input shapes do not broadcast",
            expected="shapes equal or 1 in each trailing dimension",
            got=" and ".join(str(tuple(s)) for s in shapes),
        ) from None


def same_dtype(types: Sequence[TensorType | None], name: str) -> np.dtype:
    """Return the common dtype of ``types`` (ignoring missing ones) or raise ShapeError."""
    dtypes = [np.dtype(t.dtype) for t in types if t is not None]
    for d in dtypes[1:]:
        if d != dtypes[0]:
            raise ShapeError(
                f"{name} needs inputs of one dtype",
                expected=DTYPE_SHORT.get(dtypes[0], str(dtypes[0])),
                got=DTYPE_SHORT.get(d, str(d)),
                hint="Cast one input, or build the constant with the other input's dtype.",
            )
    return dtypes[0]


def need_rank(t: TensorType, rank: int | tuple[int, ...], what: str) -> None:
    """Raise ShapeError unless ``t`` has the given rank (or one of several)."""
    ranks = (rank,) if isinstance(rank, int) else rank
    if len(t.shape) not in ranks:
        raise ShapeError(
            f"{what} has the wrong rank",
            expected=" or ".join(f"rank {r}" for r in ranks),
            got=f"shape {t.shape}",
        )


def need_float(t: TensorType, what: str) -> None:
    """Raise ShapeError unless ``t`` is a floating-point tensor."""
    if np.dtype(t.dtype) not in FLOAT_DTYPES:
        raise ShapeError(f"{what} must be floating point", expected="f32, f64 or f16",
                         got=DTYPE_SHORT.get(np.dtype(t.dtype), str(t.dtype)))


def normalized_indices(indices: np.ndarray, size: int, axis: int, op: str) -> np.ndarray:
    """Return ``indices`` as int64 in ``0..size-1`` (negative ones count from the end), or raise
    OpError naming the first one out of range."""
    idx = indices.astype(np.int64)
    bad = (idx < -size) | (idx >= size)
    if bad.any():
        raise OpError(f"{op} index out of range",
                      expected=f"indices in [{-size}, {size - 1}] on axis {axis}",
                      got=int(idx[bad].reshape(-1)[0]))
    return np.where(idx < 0, idx + size, idx)


def normalize_axis(axis: int, rank: int, what: str, *, inclusive: bool = False) -> int:
    """Return ``axis`` in ``0..rank-1`` (``0..rank`` if ``inclusive``) or raise ShapeError."""
    top = rank if inclusive else rank - 1
    if not -rank <= axis <= top:
        raise ShapeError(
            f"{what} is out of range for a rank-{rank} input",
            expected=f"an axis in [{-rank}, {top}]",
            got=axis,
        )
    return axis + rank if axis < 0 else axis


def need_broadcast_to(shape: tuple[int, ...], target: tuple[int, ...], what: str) -> None:
    """Raise ShapeError unless ``shape`` broadcasts to ``target`` without changing it."""
    ok = len(shape) <= len(target)
    if ok:
        try:
            ok = broadcast_shapes(shape, target) == tuple(target)
        except ShapeError:
            ok = False
    if not ok:
        raise ShapeError(
            f"{what} does not broadcast to {tuple(target)}",
            expected=f"a shape broadcastable to {tuple(target)}",
            got=tuple(shape),
        )


def optional_inputs(values: Sequence[Any], count: int) -> list[Any]:
    """Return ``values`` padded with ``None`` to ``count`` entries (absent trailing inputs)."""
    return list(values) + [None] * (count - len(values))


def elementwise_flops(per_element: int) -> Callable[[NodeView], int]:
    """Return a FLOP count of ``per_element`` operations per element of the first output."""

    def flops(view: NodeView) -> int:
        return per_element * view.out_types[0].size

    return flops


def rng_array(shape: Sequence[int], seed: int = 0, dtype: Any = np.float32,
              low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Return a deterministic random array for examples."""
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=tuple(shape)).astype(dtype)

# The known onnxruntime difference of the max-type ops (MaxPool, GlobalMaxPool, ReduceMax) on
# non-finite inputs; docs/ops.md explains it.
MAX_NAN_DIFFERS = (
    "GlobalMaxPool and ReduceMax give NaN for a set holding NaN (the IEEE maximum, as numpy "
    "and onnxruntime's Max op); MaxPool follows onnxruntime's kernel with Indices (first cell, "
    "then any greater one); onnxruntime's vectorized kernels (single-output float MaxPool, "
    "GlobalMaxPool, ReduceMax) give results that depend on where the NaN sits and how many "
    "there are, and start from the lowest finite value, so a window of -inf gives -3.4e38"
)


def with_specials(array: np.ndarray, seed: int = 0, each: int | None = None) -> np.ndarray:
    """Return a copy of a float array with NaN, +inf and -inf each at ``each`` deterministic
    positions (default: one per 12 elements, at least one).

    >>> with_specials(np.zeros(4, np.float32), seed=1)
    array([ inf,  nan,   0., -inf], dtype=float32)
    """
    out = np.array(array, copy=True)
    flat = out.reshape(-1)
    each = each if each is not None else max(1, flat.size // 12)
    specials = np.repeat(np.array([np.nan, np.inf, -np.inf], out.dtype), each)[:flat.size]
    positions = np.random.default_rng(seed).choice(flat.size, size=specials.size, replace=False)
    flat[positions] = specials
    return out


def nonfinite_example(example: Example, ports: Sequence[int] = (0,), seed: int = 0,
                      name: str = "nonfinite", onnxruntime_differs: str = "") -> Example:
    """Return ``example`` with NaN, +inf and -inf placed among the inputs at ``ports``."""
    inputs = list(example.inputs)
    for port in ports:
        inputs[port] = with_specials(np.asarray(inputs[port]), seed + port)
    return Example(tuple(inputs), example.attrs, example.consts, name, onnxruntime_differs)


def nonfinite_examples(examples: Sequence[Example], *indices: int, ports: Sequence[int] = (0,),
                       onnxruntime_differs: str = "") -> tuple[Example, ...]:
    """Return non-finite copies of ``examples`` at ``indices`` (NaN, +inf and -inf among the
    inputs at ``ports``), named ``nonfinite-<name>``."""
    return tuple(nonfinite_example(examples[k], ports, seed=k,
                                   name=f"nonfinite-{examples[k].name or k}",
                                   onnxruntime_differs=onnxruntime_differs)
                 for k in indices)


def with_nonfinite(op: OpDef, *indices: int, ports: Sequence[int] = (0,),
                   onnxruntime_differs: str = "") -> OpDef:
    """Return ``op`` with ``nonfinite_examples`` of its examples at ``indices`` added."""
    from dataclasses import replace

    more = nonfinite_examples(op.examples, *indices, ports=ports,
                              onnxruntime_differs=onnxruntime_differs)
    return replace(op, nonfinite=op.nonfinite + more)
