"""Comparisons, boolean logic, selection and the data movement gradient graphs need: Greater,
GreaterOrEqual, Less, LessOrEqual, Equal, Not, And, Or, Where, Cast, Expand, ScatterElements
(ONNX opset 16+ semantics).

Comparisons broadcast like numpy and return bool; Not, And and Or take bool only. The dtypes
each shape rule accepts are the ones ONNX allows and onnxruntime's CPU kernels run: Where has no
bool kernel there, and ScatterElements has no float16 kernel with ``reduction="add"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphc.errors import ExportError, OpError, ShapeError
from graphc.ops.base import (
    DTYPE_SHORT,
    Attr,
    Example,
    LowerCtx,
    NodeView,
    OpDef,
    TensorType,
    broadcast_shapes,
    elementwise_flops,
    normalize_axis,
    normalized_indices,
    onnx_dtype,
    rng_array,
    same_dtype,
    type_of,
    with_nonfinite,
)

BOOL = np.dtype(np.bool_)
ALL_DTYPES = tuple(DTYPE_SHORT)
NUMERIC_DTYPES = tuple(d for d in ALL_DTYPES if d != BOOL)
INDEX_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))


def _short(dtype: Any) -> str:
    return DTYPE_SHORT.get(np.dtype(dtype), str(dtype))


def _need_dtype(t: TensorType, allowed: Sequence[np.dtype], what: str, hint: str | None = None
                ) -> None:
    """Raise ShapeError unless ``t``'s dtype is one of ``allowed``."""
    if np.dtype(t.dtype) not in allowed:
        raise ShapeError(f"{what} has an unsupported dtype",
                         expected=", ".join(_short(d) for d in allowed), got=_short(t.dtype),
                         hint=hint)


def _ints(values: Sequence[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _ties(shape: Sequence[int], seed: int, dtype: Any = np.float32) -> np.ndarray:
    """Small integers (-2..2) as ``dtype``, so that comparisons meet equal elements."""
    return np.random.default_rng(seed).integers(-2, 3, size=tuple(shape)).astype(dtype)


def _bools(shape: Sequence[int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=tuple(shape)).astype(np.bool_)


# --- Greater, GreaterOrEqual, Less, LessOrEqual, Equal ----------------------------------------


def _comparison(name: str, doc: str, fn: Callable[[Any, Any], Any],
                examples: tuple[Example, ...], allowed: Sequence[np.dtype] = NUMERIC_DTYPES
                ) -> OpDef:
    def infer(in_types: list[TensorType | None], attrs: dict[str, Any],
              consts: list[np.ndarray | None]) -> list[TensorType]:
        a, b = in_types
        same_dtype(in_types, name)
        _need_dtype(a, allowed, f"{name} input A")
        return [TensorType(broadcast_shapes(a.shape, b.shape), BOOL)]

    def ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
        return [np.asarray(fn(inputs[0], inputs[1]), dtype=np.bool_)]

    return OpDef(name=name, doc=doc, inputs=("A", "B"), outputs=("C",), attrs={}, infer=infer,
                 ref=ref, examples=examples, flops=elementwise_flops(1), vjp=None)


def _comparison_examples(bools: bool = False) -> tuple[Example, ...]:
    examples = (
        Example((_ties((2, 3), 1), _ties((2, 3), 2)), name="same-shape"),
        Example((_ties((2, 3, 4), 3), _ties((3, 1), 4)), name="broadcast"),
        # The ReLU mask of a gradient graph: x > 0 against a constant scalar.
        Example((_ties((2, 3, 4), 5), np.array(0.0, np.float32)), consts=(1,),
                name="const-scalar"),
        Example((_ties((4,), 6, np.int64), _ties((2, 1), 7, np.int64)), name="int64"),
        Example((_ties((2, 3), 8, np.float16), _ties((3,), 9, np.float16)), name="float16"),
        Example((np.float32(1.0).reshape(()), np.float32(1.0).reshape(())), name="scalars"),
    )
    if bools:
        examples += (Example((_bools((2, 3), 10), _bools((3,), 11)), name="bool"),)
    return examples


GREATER = _comparison("Greater", "Elementwise A > B with numpy broadcasting (bool output).",
                      np.greater, _comparison_examples())
GREATER_OR_EQUAL = _comparison(
    "GreaterOrEqual", "Elementwise A >= B with numpy broadcasting (bool output).",
    np.greater_equal, _comparison_examples())
LESS = _comparison("Less", "Elementwise A < B with numpy broadcasting (bool output).", np.less,
                   _comparison_examples())
LESS_OR_EQUAL = _comparison(
    "LessOrEqual", "Elementwise A <= B with numpy broadcasting (bool output).", np.less_equal,
    _comparison_examples())
EQUAL = _comparison("Equal", "Elementwise A == B with numpy broadcasting (bool output).",
                    np.equal, _comparison_examples(bools=True), allowed=ALL_DTYPES)


# --- Not, And, Or -------------------------------------------------------------------------------


def _not_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
               consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    _need_dtype(x, (BOOL,), "Not input X", hint="Compare first (Greater, Equal, ...).")
    return [x]


def _not_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.asarray(np.logical_not(inputs[0]))]


NOT = OpDef(
    name="Not",
    doc="Elementwise logical negation of a bool tensor.",
    inputs=("X",),
    outputs=("Y",),
    attrs={},
    infer=_not_infer,
    ref=_not_ref,
    examples=(
        Example((_bools((2, 3, 4), 12),), name="3d"),
        Example((np.array(True),), name="scalar"),
    ),
    flops=elementwise_flops(1),
    vjp=None,
)


def _logical(name: str, doc: str, fn: Callable[[Any, Any], Any]) -> OpDef:
    def infer(in_types: list[TensorType | None], attrs: dict[str, Any],
              consts: list[np.ndarray | None]) -> list[TensorType]:
        a, b = in_types
        for port, t in (("A", a), ("B", b)):
            _need_dtype(t, (BOOL,), f"{name} input {port}",
                        hint="Compare first (Greater, Equal, ...) or Cast to bool.")
        return [TensorType(broadcast_shapes(a.shape, b.shape), BOOL)]

    def ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
        return [np.asarray(fn(inputs[0], inputs[1]))]

    examples = (
        Example((_bools((2, 3), 13), _bools((2, 3), 14)), name="same-shape"),
        Example((_bools((2, 3, 4), 15), _bools((3, 1), 16)), name="broadcast"),
        Example((_bools((4,), 17), np.array(True)), consts=(1,), name="const-scalar"),
    )
    return OpDef(name=name, doc=doc, inputs=("A", "B"), outputs=("C",), attrs={}, infer=infer,
                 ref=ref, examples=examples, flops=elementwise_flops(1), vjp=None)


AND = _logical("And", "Elementwise logical and of two bool tensors with numpy broadcasting.",
               np.logical_and)
OR = _logical("Or", "Elementwise logical or of two bool tensors with numpy broadcasting.",
              np.logical_or)


# --- Where ------------------------------------------------------------------------------------


def _where_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                 consts: list[np.ndarray | None]) -> list[TensorType]:
    cond, x, y = in_types
    _need_dtype(cond, (BOOL,), "Where condition", hint="Compare first (Greater, Equal, ...).")
    dtype = same_dtype([x, y], "Where X and Y")
    _need_dtype(x, NUMERIC_DTYPES, "Where X",
                hint="onnxruntime has no bool Where; combine masks with And, Or and Not.")
    return [TensorType(broadcast_shapes(cond.shape, x.shape, y.shape), dtype)]


def _where_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    cond, x, y = inputs
    return [np.asarray(np.where(cond, x, y), dtype=x.dtype)]



def _where_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """The gradient goes to X where the condition holds and to Y elsewhere."""
    dy = grads[0]
    zero = ctx.const(0.0, ctx.out_types[0].dtype)
    cond = ctx.inputs[0]
    return [None, ctx.unbroadcast(ctx.op("Where", cond, dy, zero), ctx.in_types[1].shape),
            ctx.unbroadcast(ctx.op("Where", cond, zero, dy), ctx.in_types[2].shape)]

WHERE = OpDef(
    name="Where",
    vjp=_where_vjp,
    doc="Select X where condition is true, else Y, with three-way numpy broadcasting.",
    inputs=("condition", "X", "Y"),
    outputs=("output",),
    attrs={},
    infer=_where_infer,
    ref=_where_ref,
    examples=(
        Example((_bools((2, 3), 18), rng_array((2, 3), seed=19), rng_array((2, 3), seed=20)),
                name="same-shape"),
        Example((_bools((3, 1), 21), rng_array((2, 1, 4), seed=22), rng_array((4,), seed=23)),
                name="three-way-broadcast"),
        # The ReLU gradient: where(x > 0, dy, 0).
        Example((_bools((2, 3, 4), 24), rng_array((2, 3, 4), seed=25),
                 np.array(0.0, np.float32)), consts=(2,), name="const-zero"),
        Example((_bools((2, 3), 26), _ties((2, 3), 27, np.int64), _ties((1, 3), 28, np.int64)),
                name="int64"),
    ),
    flops=elementwise_flops(1),
)


# --- Cast -------------------------------------------------------------------------------------


def _cast_dtype(to: int) -> np.dtype:
    """Return the numpy dtype of ONNX data type ``to``, or raise OpError naming the supported."""
    supported = {onnx_dtype(d): d for d in ALL_DTYPES}
    if to in supported:
        return supported[to]
    import onnx

    names = onnx.TensorProto.DataType
    got = f"{names.Name(to)} ({to})" if to in names.values() else str(to)
    raise OpError("Cast attribute to names a data type graphc does not support",
                  expected="one of " + ", ".join(f"{names.Name(k)} ({k}, {_short(d)})"
                                                 for k, d in supported.items()),
                  got=got)


def _cast_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    return [TensorType(x.shape, _cast_dtype(attrs["to"]))]


def _cast_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    # Float to integer truncates toward zero; out-of-range values and NaN are undefined in ONNX.
    return [np.asarray(inputs[0]).astype(_cast_dtype(attrs["to"]))]


def _to(dtype: Any) -> int:
    return onnx_dtype(dtype)


def _cast_examples() -> tuple[Example, ...]:
    x = rng_array((2, 3, 4), seed=29, low=-3.0, high=3.0)
    edges = np.array([-2.75, -1.5, -0.5, -0.0, 0.0, 0.25, 1.5, 2.999], np.float32)
    return (
        Example((edges,), {"to": _to(np.int64)}, name="f32-to-i64-truncates"),
        Example((edges,), {"to": _to(np.bool_)}, name="f32-to-bool"),
        Example((_bools((2, 3), 30),), {"to": _to(np.float32)}, name="bool-to-f32"),
        Example((x,), {"to": _to(np.float16)}, name="f32-to-f16"),
        Example((x.astype(np.float64),), {"to": _to(np.float32)}, name="f64-to-f32"),
        Example((x.astype(np.float16),), {"to": _to(np.float64)}, name="f16-to-f64"),
        Example((np.array([0.0, 1.9, 127.5, 254.9], np.float32),), {"to": _to(np.uint8)},
                name="f32-to-u8"),
        Example((_ints([-3, 0, 7, 1 << 40]),), {"to": _to(np.float32)}, name="i64-to-f32"),
        Example((_ints([-5, 0, 100, -128, 127]),), {"to": _to(np.int8)}, name="i64-to-i8"),
        Example((_ints([[-5, 0], [2, 9]]).astype(np.int32),), {"to": _to(np.int64)},
                name="i32-to-i64"),
        Example((x,), {"to": _to(np.float32)}, name="same-type"),
    )


CAST = OpDef(
    name="Cast",
    doc="Convert to the ONNX data type `to` (f32, f64, f16, i64, i32, i8, u8, bool, i16, u16, "
        "u32, u64).",
    inputs=("input",),
    outputs=("output",),
    attrs={"to": Attr("int")},
    infer=_cast_infer,
    ref=_cast_ref,
    examples=_cast_examples(),
    flops=elementwise_flops(1),
    vjp=None,
)


# --- Expand -----------------------------------------------------------------------------------


def _expand_shape(data_shape: tuple[int, ...], shape: np.ndarray) -> tuple[int, ...]:
    spec = tuple(int(d) for d in shape)
    if any(d < 0 for d in spec):
        raise ShapeError("Expand shape has a negative dimension", expected="dimensions >= 0",
                         got=list(spec))
    try:
        return broadcast_shapes(data_shape, spec)
    except ShapeError:
        raise ShapeError("Expand shape does not broadcast with the input (bidirectionally)",
                         expected=f"a shape whose dimensions equal those of {data_shape} or "
                                  "are 1, aligned at the right", got=list(spec)) from None


def _expand_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                  consts: list[np.ndarray | None]) -> list[TensorType]:
    data, shape_type = in_types
    shape = consts[1]
    if shape is None:
        raise ShapeError("Expand needs a constant shape input", expected="an int64 initializer",
                         got="a computed value",
                         hint="graphc shapes are static: give the target shape as a constant.")
    if shape.dtype != np.int64 or shape.ndim != 1:
        raise ShapeError("Expand shape must be a 1-D int64 tensor", expected="(k,) i64",
                         got=str(shape_type or type_of(shape)))
    return [TensorType(_expand_shape(data.shape, shape), data.dtype)]


def _expand_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, shape = inputs
    return [np.broadcast_to(data, _expand_shape(data.shape, shape)).copy()]


def _expand_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """An expanded element's gradient is the sum over its copies: dY summed back to X's shape
    (the shape input gets none)."""
    return [ctx.unbroadcast(grads[0], ctx.in_types[0].shape), None]


EXPAND = OpDef(
    name="Expand",
    doc="Broadcast the input to a constant shape (bidirectionally, as numpy broadcasts both).",
    inputs=("input", "shape"),
    outputs=("output",),
    attrs={},
    infer=_expand_infer,
    ref=_expand_ref,
    examples=(
        Example((rng_array((3, 1), seed=31), _ints([2, 1, 4])), consts=(1,), name="grow-rank"),
        # The shape may be shorter than the input and keep its dimensions with 1s.
        Example((rng_array((2, 3, 1), seed=32), _ints([1, 4])), consts=(1,),
                name="bidirectional"),
        Example((rng_array((2, 3), seed=33), _ints([2, 3])), consts=(1,), name="same-shape"),
        Example((np.array(1.5, np.float32), _ints([2, 2])), consts=(1,), name="scalar"),
        Example((_bools((1, 3), 34), _ints([2, 3])), consts=(1,), name="bool"),
        Example((_ties((4, 1), 35, np.int64), _ints([4, 3])), consts=(1,), name="int64"),
    ),
    flops=elementwise_flops(0),
    vjp=_expand_vjp,
)


# --- ScatterElements --------------------------------------------------------------------------

SCATTER_REDUCTIONS = ("none", "add", "mul", "max", "min")
# Repeated indices combine with these (numpy's unbuffered ufunc.at, in index order).
SCATTER_UFUNCS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
# The first opset whose ScatterElements has the reduction.
SCATTER_SINCE = {"mul": 16, "max": 18, "min": 18}


def _scatter_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                   consts: list[np.ndarray | None]) -> list[TensorType]:
    data, indices, updates = in_types
    reduction = attrs["reduction"]
    if reduction not in SCATTER_REDUCTIONS:
        raise OpError("ScatterElements reduction is not supported",
                      expected=" or ".join(repr(r) for r in SCATTER_REDUCTIONS),
                      got=repr(reduction))
    _need_dtype(indices, INDEX_DTYPES, "ScatterElements indices")
    dtype = same_dtype([data, updates], "ScatterElements data and updates")
    if reduction == "add" and dtype == np.float16:
        raise ShapeError("ScatterElements with reduction 'add' has no float16 kernel in "
                         "onnxruntime", expected="f32, f64 or an integer dtype", got="f16",
                         hint="Cast to f32 around the scatter.")
    rank = len(data.shape)
    axis = normalize_axis(attrs["axis"], max(rank, 1), "ScatterElements axis")
    if rank == 0 or len(indices.shape) != rank or indices.shape != updates.shape:
        raise ShapeError("ScatterElements indices and updates must have one shape, of the "
                         "data's rank", expected=f"two rank-{rank} shapes (rank >= 1)",
                         got=f"indices {indices.shape}, updates {updates.shape}")
    if any(i > d for k, (i, d) in enumerate(zip(indices.shape, data.shape, strict=True))
           if k != axis):
        raise ShapeError(f"ScatterElements indices are larger than the data outside axis {axis}",
                         expected=f"dimensions <= {data.shape} (except axis {axis})",
                         got=indices.shape)
    return [TensorType(data.shape, dtype)]


def _scatter_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, indices, updates = inputs
    axis = normalize_axis(attrs["axis"], data.ndim, "ScatterElements axis")
    idx = normalized_indices(indices, data.shape[axis], axis, "ScatterElements")
    where = list(np.indices(idx.shape, sparse=True))
    where[axis] = idx
    out = data.copy()
    if attrs["reduction"] in SCATTER_UFUNCS:
        # Repeated indices accumulate; plain fancy assignment would keep only one of them.
        SCATTER_UFUNCS[attrs["reduction"]].at(out, tuple(where), updates)
    else:
        # Repeated indices: the last update wins (as in onnxruntime; ONNX leaves it undefined).
        out[tuple(where)] = updates
    return [out]


def _scatter_flops(view: NodeView) -> int:
    updates = view.in_types[2]
    return updates.size if view.full_attrs["reduction"] != "none" and updates is not None else 0


def _scatter_lower(ctx: LowerCtx, view: NodeView) -> None:
    reduction = view.full_attrs["reduction"]
    if ctx.opset < SCATTER_SINCE.get(reduction, 0):
        raise ExportError(f"ScatterElements reduction {reduction!r} needs a newer opset",
                          expected=f"opset >= {SCATTER_SINCE[reduction]}", got=ctx.opset,
                          hint=f"Export with --opset {SCATTER_SINCE[reduction]} or newer.")
    ctx.node("ScatterElements", view.inputs, view.outputs, **view.attrs)


def _scatter_examples() -> tuple[Example, ...]:
    return (
        Example((rng_array((3, 4), seed=36), _ints([[1, 0, 2, 0], [0, 2, 1, 1]]),
                 rng_array((2, 4), seed=37)), name="axis-0"),
        Example((rng_array((2, 5), seed=38), _ints([[-1, 0, 2], [1, -2, 0]]),
                 rng_array((2, 3), seed=39)), {"axis": 1}, name="negative-indices"),
        Example((rng_array((2, 3, 4), seed=40), _ints([[[3, 0]], [[1, 2]]]),
                 rng_array((2, 1, 2), seed=41)), {"axis": -1}, name="negative-axis"),
        Example((rng_array((3, 4), seed=42), _ints([[0, 1, 2, 0], [0, 1, 2, 2], [0, 0, 0, 0]]),
                 rng_array((3, 4), seed=43)), {"reduction": "add"},
                name="add-duplicates"),
        # MaxPool's gradient: the pooled gradient scattered back to the flattened input at
        # the Indices, where overlapping windows pick one input element several times.
        Example((np.zeros(16, np.float32), _ints([0, 5, 5, 5, 10, 15, 15]),
                 rng_array((7,), seed=44)), {"reduction": "add"}, consts=(0, 1),
                name="maxpool-gradient"),
        Example((_ties((2, 3), 45, np.int64), _ints([[2, 2], [0, 2]]),
                 _ties((2, 2), 46, np.int64)), {"axis": 1, "reduction": "add"},
                name="add-int64"),
        Example((rng_array((3, 4), seed=47), _ints([[0, 1, 2, 0], [0, 1, 2, 2]]),
                 rng_array((2, 4), seed=48)), {"reduction": "mul"}, name="mul-duplicates"),
    )


SCATTER_ELEMENTS = OpDef(
    name="ScatterElements",
    doc="Copy data and write updates at indices on axis (or combine them: reduction add, mul, "
        "max or min).",
    inputs=("data", "indices", "updates"),
    outputs=("output",),
    attrs={"axis": Attr("int", 0), "reduction": Attr("str", "none", since=16)},
    infer=_scatter_infer,
    ref=_scatter_ref,
    examples=_scatter_examples(),
    lower=_scatter_lower,
    flops=_scatter_flops,
    vjp=None,
)


OPS: list[OpDef] = [
    with_nonfinite(GREATER, 0, 1, ports=(0, 1)),
    with_nonfinite(GREATER_OR_EQUAL, 0, 1, ports=(0, 1)),
    with_nonfinite(LESS, 0, 1, ports=(0, 1)),
    with_nonfinite(LESS_OR_EQUAL, 0, 1, ports=(0, 1)),
    with_nonfinite(EQUAL, 0, 1, ports=(0, 1)),
    NOT,
    AND,
    OR,
    with_nonfinite(WHERE, 0, 1, ports=(1, 2)),
    # Float to float or bool only: float to integer of NaN or an infinity is undefined in C++
    # and in ONNX, and onnxruntime gives whatever the CPU's conversion does.
    with_nonfinite(CAST, 1, 3, 4, 5, 10),
    with_nonfinite(EXPAND, 0, 1, 2),
    with_nonfinite(SCATTER_ELEMENTS, 0, 3, ports=(0, 2)),
]
