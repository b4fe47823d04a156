"""Ops that move, select or rescale tensor elements: Flatten, Reshape, Transpose, Concat,
Identity, Clip, Softmax and LogSoftmax (ONNX opset 13+ semantics).

Also the small helpers other op modules share: axis normalization, unidirectional broadcast
checks and per-element FLOP counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc.errors import ShapeError
from graphc.ops.base import (
    Attr,
    Example,
    OpDef,
    TensorType,
    elementwise_flops,
    need_float,
    normalize_axis,
    optional_inputs,
    rng_array,
    same_dtype,
    type_of,
    with_nonfinite,
)


def _same(in_types: list[TensorType | None], attrs: dict[str, Any],
          consts: list[np.ndarray | None]) -> list[TensorType]:
    return [in_types[0]]


def _identity(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [inputs[0].copy()]


# --- Flatten ----------------------------------------------------------------------------------


def _flatten_shape(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    axis = normalize_axis(axis, len(shape), "Flatten axis", inclusive=True)
    return (int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64)))


def _flatten_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                   consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    return [TensorType(_flatten_shape(x.shape, attrs["axis"]), x.dtype)]


def _flatten_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    return [x.reshape(_flatten_shape(x.shape, attrs["axis"]))]



def _reshape_back_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """The gradient of a reshape is the gradient reshaped back."""
    return [ctx.reshape(grads[0], ctx.in_types[0].shape), None]

FLATTEN = OpDef(
    name="Flatten",
    vjp=_reshape_back_vjp,
    doc="Flatten to 2-D: dimensions before axis become rows, the rest become columns.",
    inputs=("input",),
    outputs=("output",),
    attrs={"axis": Attr("int", 1)},
    infer=_flatten_infer,
    ref=_flatten_ref,
    flops=elementwise_flops(0),
    examples=(
        Example(inputs=(rng_array((2, 3, 4, 5), seed=1),), name="axis-1"),
        Example(inputs=(rng_array((2, 3, 4, 5), seed=2),), attrs={"axis": 2}, name="axis-2"),
        Example(inputs=(rng_array((2, 3, 4), seed=2),), attrs={"axis": -1}, name="negative-axis"),
    ),
)


# --- Reshape ----------------------------------------------------------------------------------


def _reshape_target(data_shape: tuple[int, ...], shape: np.ndarray,
                    allowzero: int) -> tuple[int, ...]:
    """Return the output shape of Reshape, resolving 0 (copy, unless allowzero) and -1."""
    spec = [int(d) for d in shape]
    if spec.count(-1) > 1:
        raise ShapeError("Reshape shape has more than one -1", expected="at most one -1",
                         got=spec)
    if any(d < -1 for d in spec):
        raise ShapeError("Reshape shape has a negative dimension",
                         expected="dimensions >= 0, or one -1", got=spec)
    if allowzero and 0 in spec and -1 in spec:
        raise ShapeError("Reshape with allowzero=1 cannot mix 0 and -1",
                         expected="either 0 or -1", got=spec,
                         hint="With allowzero=1 a 0 is a literal empty dimension.")
    out = []
    for i, d in enumerate(spec):
        if d == 0 and not allowzero:
            if i >= len(data_shape):
                raise ShapeError("Reshape shape copies a dimension the data does not have",
                                 expected=f"0 only at positions < {len(data_shape)}", got=spec)
            d = data_shape[i]
        out.append(d)
    size = int(np.prod(data_shape, dtype=np.int64))
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise ShapeError("Reshape cannot infer the -1 dimension",
                             expected=f"a shape whose known dimensions divide {size}",
                             got=f"{spec} for data of shape {tuple(data_shape)}")
        out[out.index(-1)] = size // known
    if int(np.prod(out, dtype=np.int64)) != size:
        raise ShapeError("Reshape changes the number of elements", expected=size,
                         got=f"{int(np.prod(out, dtype=np.int64))} (shape {spec})")
    return tuple(out)


def _reshape_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                   consts: list[np.ndarray | None]) -> list[TensorType]:
    data, shape_type = in_types[0], in_types[1]
    shape = consts[1]
    if shape is None:
        raise ShapeError("Reshape needs a constant shape input", expected="an int64 initializer",
                         got="a computed value",
                         hint="graphc shapes are static: give the target shape as a constant.")
    if shape.dtype != np.int64 or shape.ndim != 1:
        raise ShapeError("Reshape shape must be a 1-D int64 tensor", expected="(k,) i64",
                         got=str(shape_type or type_of(shape)))
    return [TensorType(_reshape_target(data.shape, shape, attrs["allowzero"]), data.dtype)]


def _reshape_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, shape = inputs
    return [data.reshape(_reshape_target(data.shape, shape, attrs["allowzero"]))]


RESHAPE = OpDef(
    name="Reshape",
    vjp=_reshape_back_vjp,
    doc="Give the data a new shape with the same elements; 0 copies a dimension, -1 infers one.",
    inputs=("data", "shape"),
    outputs=("reshaped",),
    attrs={"allowzero": Attr("int", 0)},
    infer=_reshape_infer,
    ref=_reshape_ref,
    flops=elementwise_flops(0),
    examples=(
        Example(inputs=(rng_array((2, 3, 4), seed=3), np.array([-1, 4], np.int64)),
                consts=(1,), name="minus-one"),
        Example(inputs=(rng_array((2, 3, 4), seed=4), np.array([0, 2, -1, 2], np.int64)),
                consts=(1,), name="zero-copies"),
    ),
)


# --- Transpose --------------------------------------------------------------------------------


def _perm(rank: int, perm: Sequence[int] | None) -> tuple[int, ...]:
    if perm is None:
        return tuple(range(rank - 1, -1, -1))
    if sorted(perm) != list(range(rank)):
        raise ShapeError("Transpose perm is not a permutation of the input's axes",
                         expected=f"a permutation of {list(range(rank))}", got=list(perm))
    return tuple(perm)


def _transpose_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                     consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    perm = _perm(len(x.shape), attrs["perm"])
    return [TensorType(tuple(x.shape[p] for p in perm), x.dtype)]


def _transpose_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    return [np.transpose(x, _perm(x.ndim, attrs["perm"]))]



def _transpose_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Transpose the gradient by the inverse permutation."""
    perm = _perm(len(ctx.in_types[0].shape), ctx.attrs["perm"])
    return [ctx.op("Transpose", grads[0], perm=[int(i) for i in np.argsort(perm)])]

TRANSPOSE = OpDef(
    name="Transpose",
    vjp=_transpose_vjp,
    doc="Permute the axes (perm absent: reverse them).",
    inputs=("data",),
    outputs=("transposed",),
    # None stands for ONNX's absent perm, which means "reverse the axes".
    attrs={"perm": Attr("ints", None)},
    infer=_transpose_infer,
    ref=_transpose_ref,
    flops=elementwise_flops(0),
    examples=(
        Example(inputs=(rng_array((2, 3, 4), seed=5),), attrs={"perm": [0, 2, 1]}, name="perm"),
        Example(inputs=(rng_array((2, 3, 4), seed=6),), name="reversed"),
    ),
)


# --- Concat -----------------------------------------------------------------------------------


def _concat_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                  consts: list[np.ndarray | None]) -> list[TensorType]:
    dtype = same_dtype(in_types, "Concat")
    first = in_types[0].shape
    axis = normalize_axis(attrs["axis"], len(first), "Concat axis")
    total = 0
    for i, t in enumerate(in_types):
        same_rank = len(t.shape) == len(first)
        if not same_rank or any(a != b for k, (a, b) in enumerate(zip(t.shape, first, strict=True))
                                if k != axis):
            expected = tuple("*" if k == axis else d for k, d in enumerate(first))
            raise ShapeError(f"Concat input {i} does not match input 0 outside axis {axis}",
                             expected=str(expected).replace("'", ""), got=t.shape)
        total += t.shape[axis]
    shape = first[:axis] + (total,) + first[axis + 1:]
    return [TensorType(shape, dtype)]


def _concat_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.concatenate(inputs, axis=attrs["axis"])]


def _concat_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Each input's gradient is its slice of dY along the axis (a Pad with negative pads)."""
    shape = ctx.out_types[0].shape
    rank = len(shape)
    axis = normalize_axis(ctx.attrs["axis"], rank, "Concat axis")
    out: list[Any] = []
    offset = 0
    for t in ctx.in_types:
        size = t.shape[axis]
        pads = [0] * (2 * rank)
        pads[axis] = -offset
        pads[axis + rank] = -(shape[axis] - offset - size)
        offset += size
        if not any(pads):
            out.append(grads[0])
            continue
        out.append(ctx.op("Pad", grads[0], ctx.const(np.array(pads, np.int64), np.int64),
                          mode="constant"))
    return out


CONCAT = OpDef(
    name="Concat",
    vjp=_concat_vjp,
    doc="Join tensors along an axis; all other dimensions must agree.",
    inputs=("inputs*",),
    outputs=("concat_result",),
    attrs={"axis": Attr("int")},
    infer=_concat_infer,
    ref=_concat_ref,
    flops=elementwise_flops(1),
    examples=(
        Example(inputs=(rng_array((2, 3, 4), seed=7), rng_array((2, 1, 4), seed=8),
                        rng_array((2, 2, 4), seed=9)), attrs={"axis": 1}, name="axis-1"),
        Example(inputs=(rng_array((2, 3, 4), seed=10), rng_array((2, 3, 2), seed=11)),
                attrs={"axis": -1}, name="negative-axis"),
    ),
)


# --- Identity ---------------------------------------------------------------------------------



def _identity_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """The gradient passes through."""
    return [grads[0]]

IDENTITY = OpDef(
    name="Identity",
    vjp=_identity_vjp,
    doc="Pass the input through unchanged.",
    inputs=("input",),
    outputs=("output",),
    attrs={},
    infer=_same,
    ref=_identity,
    flops=elementwise_flops(0),
    examples=(Example(inputs=(rng_array((2, 3), seed=12),), name="copy"),),
)


# --- Clip -------------------------------------------------------------------------------------


def _clip_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                consts: list[np.ndarray | None]) -> list[TensorType]:
    x, lo, hi = optional_inputs(in_types, 3)
    same_dtype(in_types, "Clip")
    for name, t in (("min", lo), ("max", hi)):
        if t is not None and t.size != 1:
            raise ShapeError(f"Clip {name} must be a scalar", expected="shape ()",
                             got=f"shape {t.shape}")
    return [x]


def _clip_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, lo, hi = optional_inputs(inputs, 3)
    # ONNX: an absent bound is the dtype's lowest or largest finite value, so -inf and +inf
    # become -max and max without a bound (onnxruntime does so); NaN stays NaN.
    info = np.finfo(x.dtype) if x.dtype.kind == "f" else np.iinfo(x.dtype)
    lo = np.asarray(info.min, x.dtype) if lo is None else lo.reshape(())
    hi = np.asarray(info.max, x.dtype) if hi is None else hi.reshape(())
    # ONNX: when min > max every element becomes max, so apply min first, then max.
    y = np.minimum(np.maximum(x, lo), hi)
    return [np.array(y, dtype=x.dtype, copy=True)]



def _clip_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """The gradient passes where min <= x <= max and is 0 elsewhere; the bounds get none."""
    x = ctx.inputs[0]
    inside = None
    for port, op in ((1, "GreaterOrEqual"), (2, "LessOrEqual")):
        if port < len(ctx.inputs) and ctx.inputs[port] is not None:
            test = ctx.op(op, x, ctx.inputs[port])
            inside = test if inside is None else ctx.op("And", inside, test)
    if inside is None:
        return [grads[0]]
    zero = ctx.const(0.0, ctx.out_types[0].dtype)
    return [ctx.op("Where", inside, grads[0], zero), None, None]

CLIP = OpDef(
    name="Clip",
    vjp=_clip_vjp,
    doc="Limit each element to [min, max]; an absent bound is the lowest or largest finite value.",
    inputs=("input", "min?", "max?"),
    outputs=("output",),
    attrs={},
    infer=_clip_infer,
    ref=_clip_ref,
    flops=elementwise_flops(1),
    examples=(
        Example(inputs=(rng_array((2, 3, 4), seed=13), np.array(-0.5, np.float32),
                        np.array(0.25, np.float32)), consts=(1, 2), name="min-max"),
        Example(inputs=(rng_array((2, 3, 4), seed=14), None, np.array(0.5, np.float32)),
                consts=(2,), name="max-only"),
        Example(inputs=(rng_array((2, 3, 4), seed=15), np.array(-0.5, np.float32)),
                consts=(1,), name="min-only"),
        Example(inputs=(rng_array((2, 3, 4), seed=16),), name="no-bounds"),
    ),
)


# --- Softmax, LogSoftmax ----------------------------------------------------------------------


def _softmax_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                   consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    need_float(x, "Softmax input")
    normalize_axis(attrs["axis"], len(x.shape), "Softmax axis")
    return [x]


def _log_softmax64(x: np.ndarray, axis: int) -> np.ndarray:
    """Return log(softmax(x)) along ``axis`` in float64, shifted by the max for stability."""
    z = x.astype(np.float64) - np.max(x, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def _softmax_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    return [np.exp(_log_softmax64(x, attrs["axis"])).astype(x.dtype)]


def _logsoftmax_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    return [_log_softmax64(x, attrs["axis"]).astype(x.dtype)]


def _softmax_examples() -> tuple[Example, ...]:
    x = rng_array((2, 3, 4), seed=15, low=-3.0, high=3.0)
    return (
        Example(inputs=(x,), name="axis-last"),
        Example(inputs=(x,), attrs={"axis": 1}, name="axis-1"),
    )



def _softmax_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dx = y * (dy - sum(dy * y)) along the axis."""
    y, dy = ctx.outputs[0], grads[0]
    axes = ctx.const(np.array([ctx.attrs["axis"]], np.int64), np.int64)
    total = ctx.op("ReduceSum", ctx.op("Mul", dy, y), axes, keepdims=1)
    return [ctx.op("Mul", y, ctx.op("Sub", dy, total))]


def _log_softmax_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dx = dy - softmax(x) * sum(dy) along the axis, with softmax(x) = exp(y)."""
    y, dy = ctx.outputs[0], grads[0]
    axes = ctx.const(np.array([ctx.attrs["axis"]], np.int64), np.int64)
    total = ctx.op("ReduceSum", dy, axes, keepdims=1)
    return [ctx.op("Sub", dy, ctx.op("Mul", ctx.op("Exp", y), total))]

SOFTMAX = OpDef(
    name="Softmax",
    vjp=_softmax_vjp,
    doc="Exponentiate and normalize along one axis so that it sums to 1 (opset 13).",
    inputs=("input",),
    outputs=("output",),
    attrs={"axis": Attr("int", -1)},
    infer=_softmax_infer,
    ref=_softmax_ref,
    flops=elementwise_flops(1),
    examples=_softmax_examples(),
)

LOG_SOFTMAX = OpDef(
    name="LogSoftmax",
    vjp=_log_softmax_vjp,
    doc="Logarithm of Softmax along one axis, computed without overflow (opset 13).",
    inputs=("input",),
    outputs=("output",),
    attrs={"axis": Attr("int", -1)},
    infer=_softmax_infer,
    ref=_logsoftmax_ref,
    flops=elementwise_flops(1),
    examples=_softmax_examples(),
)


OPS: list[OpDef] = [
    with_nonfinite(FLATTEN, 0),
    with_nonfinite(RESHAPE, 0),
    with_nonfinite(TRANSPOSE, 0),
    with_nonfinite(CONCAT, 0, 1, ports=(0, 1)),
    with_nonfinite(IDENTITY, 0),
    with_nonfinite(CLIP, 0, 1, 2, 3),
    with_nonfinite(SOFTMAX, 0, 1),
    with_nonfinite(LOG_SOFTMAX, 0, 1),
]
