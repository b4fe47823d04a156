"""Reductions: ReduceSum, ReduceMean and ReduceMax (the ops gradient graphs need to unbroadcast a
gradient, sum bias gradients and take normalization statistics), and the running sum CumSum.

All three are declared in their newest form, with ``axes`` as an optional constant int64 input
(ReduceSum since opset 13, ReduceMean and ReduceMax since opset 18) and the attributes
``keepdims`` and ``noop_with_empty_axes``. Absent or empty axes reduce over every axis, unless
``noop_with_empty_axes=1``, which makes the op the identity. The output has the input's dtype.
Below opset 18 ReduceMean and ReduceMax are lowered to their attribute form (``axes`` an
attribute, no ``noop_with_empty_axes``; a no-op reduction becomes Identity).

CumSum (opset 11+) sums along one ``axis`` (a scalar or one-element int32/int64 input) and keeps
every partial sum: ``y[i] = x[0] + ... + x[i]``; ``exclusive=1`` leaves ``x[i]`` out of
``y[i]`` (``y[0] = 0``), ``reverse=1`` sums from the end. Pruned weights stored as a bitmask use
it to number the kept entries (graphc.compress.sparse); onnxruntime folds it when its input is
constant.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.errors import ExportError, ShapeError
from graphc.ops.base import (
    DTYPE_SHORT,
    MAX_NAN_DIFFERS,
    Attr,
    Example,
    LowerCtx,
    NodeView,
    OpDef,
    TensorType,
    normalize_axis,
    onnx_dtype,
    optional_inputs,
    rng_array,
    with_nonfinite,
)

_ATTRS = {"keepdims": Attr("int", 1), "noop_with_empty_axes": Attr("int", 0)}


def _axes(axes: np.ndarray | None, rank: int, noop: int, op: str) -> tuple[int, ...] | None:
    """Return the reduced axes in ``0..rank-1`` (sorted), or ``None`` for a no-op reduction."""
    if axes is None or axes.size == 0:
        return None if noop else tuple(range(rank))
    values = [normalize_axis(int(a), rank, f"{op} axis") for a in axes.reshape(-1)]
    if len(set(values)) != len(values):
        raise ShapeError(f"{op} axes name an axis twice", expected="distinct axes",
                         got=[int(a) for a in axes.reshape(-1)])
    return tuple(sorted(values))


def _out_shape(shape: tuple[int, ...], axes: tuple[int, ...] | None,
               keepdims: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(shape)
    if keepdims:
        return tuple(1 if k in axes else d for k, d in enumerate(shape))
    return tuple(d for k, d in enumerate(shape) if k not in axes)


def _infer(op: str):
    def infer(in_types: list[TensorType | None], attrs: dict[str, Any],
              consts: list[np.ndarray | None]) -> list[TensorType]:
        x, axes_type = optional_inputs(in_types, 2)
        # ReduceMax takes bool (any, from opset 20); the other reductions need numbers.
        if np.dtype(x.dtype) == np.bool_ and op != "ReduceMax":
            raise ShapeError(f"{op} input must be numeric", expected="a float or integer tensor",
                             got="bool", hint="Cast the input to an integer type first.")
        axes = None
        if axes_type is not None:
            if np.dtype(axes_type.dtype) != np.int64 or len(axes_type.shape) != 1:
                raise ShapeError(f"{op} axes must be a 1-D int64 tensor", expected="(k,) i64",
                                 got=str(axes_type))
            axes = optional_inputs(consts, 2)[1]
            if axes is None:
                raise ShapeError(f"{op} needs constant axes", expected="an int64 initializer",
                                 got="a computed value",
                                 hint="graphc shapes are static: give the axes as a constant.")
        reduced = _axes(axes, len(x.shape), attrs["noop_with_empty_axes"], op)
        return [TensorType(_out_shape(x.shape, reduced, attrs["keepdims"]), x.dtype)]

    return infer


def _reduce(x: np.ndarray, axes_input: np.ndarray | None, attrs: dict[str, Any], op: str,
            kernel) -> list[np.ndarray]:
    axes = _axes(axes_input, x.ndim, attrs["noop_with_empty_axes"], op)
    if axes is None:
        return [x.copy()]
    y = kernel(x, axes)
    if not attrs["keepdims"]:
        y = y.reshape(_out_shape(x.shape, axes, 0))
    return [np.asarray(y, dtype=x.dtype)]


def _is_float(x: np.ndarray) -> bool:
    return np.issubdtype(x.dtype, np.floating)


def _sum(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    # Floats accumulate in float64; integers wrap around in their own dtype, as onnxruntime does.
    dtype = np.float64 if _is_float(x) else x.dtype
    return np.sum(x, axis=axes, keepdims=True, dtype=dtype)


def _mean(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    total = _sum(x, axes)
    if count == 0:
        # ONNX leaves the mean of nothing undefined; onnxruntime returns 0.
        return np.zeros_like(total)
    if _is_float(x):
        return total / count
    # onnxruntime divides integers truncating toward zero.
    return np.sign(total) * (np.abs(total) // count)


def _max(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    # The maximum of nothing is the dtype's lowest value (-inf for floats), as in ONNX.
    lowest = -np.inf if _is_float(x) else False if x.dtype == np.bool_ else np.iinfo(x.dtype).min
    return np.max(x, axis=axes, keepdims=True, initial=lowest)


def _ref(op: str, kernel):
    def ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
        x, axes = optional_inputs(inputs, 2)
        return _reduce(x, axes, attrs, op, kernel)

    return ref


def _flops(view: NodeView) -> int:
    return view.in_types[0].size


def _lower_axes_input_from_18(op: str):
    def lower(ctx: LowerCtx, view: NodeView) -> None:
        """Emit the opset-18 node (axes input), or below 18 the attribute form."""
        if np.dtype(view.in_types[0].dtype) == np.bool_ and ctx.opset < 20:
            raise ExportError(f"{op} of bool needs opset 20 or newer", expected="opset >= 20",
                              got=ctx.opset, hint="Export with --opset 20 or newer.")
        if ctx.opset >= 18:
            ctx.node(op, view.inputs, view.outputs, **view.attrs)
            return
        axes = None
        if len(view.inputs) > 1 and view.inputs[1]:
            axes = optional_inputs(view.consts, 2)[1]
            if axes is None:
                raise ExportError(f"{op} below opset 18 needs constant axes",
                                  expected="an int64 initializer", got="a computed value",
                                  hint="Export with --opset 18 or newer, or make axes constant.")
        attrs = {k: v for k, v in view.attrs.items() if k == "keepdims"}
        if axes is None or axes.size == 0:
            if view.full_attrs["noop_with_empty_axes"]:
                ctx.node("Identity", view.inputs[:1], view.outputs)
                return
        else:
            attrs["axes"] = [int(a) for a in axes.reshape(-1)]
        ctx.node(op, view.inputs[:1], view.outputs, **attrs)

    return lower


def _examples(op: str, seed: int, with_ints: Any = None) -> tuple[Example, ...]:
    axes = lambda *a: np.array(a, np.int64)  # noqa: E731
    examples = [
        Example(inputs=(rng_array((2, 3, 4, 5), seed=seed), axes(0, 2, 3)), consts=(1,),
                name="batchnorm-statistic"),
        Example(inputs=(rng_array((4, 3), seed=seed + 1), axes(0)), attrs={"keepdims": 0},
                consts=(1,), name="axis-0-no-keepdims"),
        Example(inputs=(rng_array((2, 3, 4), seed=seed + 2), axes(-1)), consts=(1,),
                name="negative-axis"),
        Example(inputs=(rng_array((2, 3, 4), seed=seed + 3), axes(-3, 1)), attrs={"keepdims": 0},
                consts=(1,), name="negative-axes-no-keepdims"),
        Example(inputs=(rng_array((3, 4), seed=seed + 4),), name="axes-absent"),
        Example(inputs=(rng_array((3, 4), seed=seed + 5),), attrs={"keepdims": 0},
                name="axes-absent-no-keepdims"),
        Example(inputs=(rng_array((3, 4), seed=seed + 6), axes()), consts=(1,),
                name="axes-empty"),
        Example(inputs=(rng_array((3, 4), seed=seed + 7),), attrs={"noop_with_empty_axes": 1},
                name="noop-axes-absent"),
        Example(inputs=(rng_array((3, 4), seed=seed + 8), axes()),
                attrs={"noop_with_empty_axes": 1}, consts=(1,), name="noop-axes-empty"),
        Example(inputs=(rng_array((3, 4), seed=seed + 9), axes(1)),
                attrs={"noop_with_empty_axes": 1, "keepdims": 0}, consts=(1,),
                name="noop-flag-with-axes"),
    ]
    if with_ints is not None:
        ints = rng_array((3, 5), seed=seed + 10, dtype=np.float64, low=-50, high=50)
        examples.append(Example(inputs=(ints.astype(with_ints), axes(0)), consts=(1,),
                                name=f"{DTYPE_SHORT[np.dtype(with_ints)]}-axis-0"))
    return tuple(examples)



def _reduced_axes(ctx: Any) -> list[int]:
    rank = len(ctx.in_types[0].shape)
    axes = ctx.g.const_value(ctx.inputs[1]) if len(ctx.inputs) > 1 else None
    if axes is None or axes.size == 0:
        return [] if ctx.attrs["noop_with_empty_axes"] else list(range(rank))
    return sorted(int(a) % rank for a in axes.reshape(-1))


def _sum_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Every summed element gets the gradient of its sum: dY expanded back to X's shape."""
    shape = ctx.in_types[0].shape
    axes = _reduced_axes(ctx)
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    dy = ctx.reshape(grads[0], kept)
    return [ctx.op("Expand", dy, ctx.const(np.array(shape, np.int64), np.int64)), None]


def _mean_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """As for the sum, divided by the number of elements averaged."""
    shape = ctx.in_types[0].shape
    count = int(np.prod([shape[a] for a in _reduced_axes(ctx)], dtype=np.int64))
    dx = _sum_vjp(ctx, grads)[0]
    return [ctx.op("Mul", dx, ctx.const(1.0 / count, ctx.in_types[0].dtype)), None]


def first_max_grad(ctx: Any, y: Any, dy: Any, axes: list[int], x: Any = None) -> Any:
    """The gradient of a maximum over ``axes`` of X (``x``, default ``ctx.inputs[0]``): dY goes
    to the first maximum of each reduced slice (row-major over the reduced axes), so ties get
    one share, not one per tied element. ``y`` and ``dy`` are reshaped to X's shape with 1s on
    ``axes``.

    A score of K - (row-major position) at the maxima and 0 elsewhere has a unique maximum
    at the first maximum; Equal against its ReduceMax picks it. The masks are 0/1 numbers
    multiplied in (onnxruntime runs Mul several times faster than Where).
    """
    x = ctx.inputs[0] if x is None else x
    shape, dtype = ctx.type(x).shape, np.dtype(ctx.type(x).dtype)
    to = onnx_dtype(dtype)
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    sub = tuple(d if i in axes else 1 for i, d in enumerate(shape))
    count = int(np.prod(sub, dtype=np.int64))
    rank_of = (count - np.arange(count)).reshape(sub).astype(dtype)
    is_max = ctx.op("Cast", ctx.op("Equal", x, ctx.reshape(y, kept)), to=to)
    score = ctx.op("Mul", is_max, ctx.const(rank_of, dtype))
    best = ctx.op("ReduceMax", score, ctx.const(np.array(axes, np.int64), np.int64), keepdims=1)
    first = ctx.op("Cast", ctx.op("Equal", score, best), to=to)
    return ctx.op("Mul", first, ctx.reshape(dy, kept))


def _max_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dY to the first maximum of each reduced slice (exact at ties: one share per slice)."""
    axes = _reduced_axes(ctx)
    if not axes:
        return [ctx.reshape(grads[0], ctx.in_types[0].shape), None]
    return [first_max_grad(ctx, ctx.outputs[0], grads[0], axes), None]


REDUCE_SUM = OpDef(
    name="ReduceSum",
    vjp=_sum_vjp,
    doc="Sum over the given axes (absent: all axes, or none with noop_with_empty_axes=1).",
    inputs=("data", "axes?"),
    outputs=("reduced",),
    attrs=dict(_ATTRS),
    infer=_infer("ReduceSum"),
    ref=_ref("ReduceSum", _sum),
    flops=_flops,
    examples=_examples("ReduceSum", 50, with_ints=np.int64),
)

REDUCE_MEAN = OpDef(
    name="ReduceMean",
    vjp=_mean_vjp,
    doc="Mean over the given axes (absent: all axes, or none with noop_with_empty_axes=1).",
    inputs=("data", "axes?"),
    outputs=("reduced",),
    attrs=dict(_ATTRS),
    infer=_infer("ReduceMean"),
    ref=_ref("ReduceMean", _mean),
    lower=_lower_axes_input_from_18("ReduceMean"),
    flops=_flops,
    examples=_examples("ReduceMean", 70, with_ints=np.int64),
)

REDUCE_MAX = OpDef(
    name="ReduceMax",
    vjp=_max_vjp,
    doc="Maximum over the given axes (absent: all axes, or none with noop_with_empty_axes=1).",
    inputs=("data", "axes?"),
    outputs=("reduced",),
    attrs=dict(_ATTRS),
    infer=_infer("ReduceMax"),
    ref=_ref("ReduceMax", _max),
    lower=_lower_axes_input_from_18("ReduceMax"),
    flops=_flops,
    examples=_examples("ReduceMax", 90, with_ints=np.int32),
)


CUMSUM_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64))


def _cumsum_axis(axis_type: TensorType, axis: np.ndarray | None, rank: int) -> int | None:
    if np.dtype(axis_type.dtype) not in (np.dtype(np.int32), np.dtype(np.int64)) or \
            axis_type.size != 1 or len(axis_type.shape) > 1:
        raise ShapeError("CumSum axis must be one int32 or int64 value",
                         expected="a scalar or (1,) i64 or i32", got=str(axis_type))
    return None if axis is None else normalize_axis(int(axis.reshape(-1)[0]), rank,
                                                    "CumSum axis")


def _cumsum_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                  consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    if np.dtype(x.dtype) not in CUMSUM_DTYPES:
        raise ShapeError("CumSum input must be float32, float64, int32 or int64",
                         expected="f32, f64, i32 or i64",
                         got=DTYPE_SHORT.get(np.dtype(x.dtype), str(x.dtype)),
                         hint="Cast the input first (onnxruntime has no other CumSum).")
    if not x.shape:
        raise ShapeError("CumSum needs an input of rank >= 1", expected="rank >= 1",
                         got="a scalar")
    _cumsum_axis(in_types[1], consts[1] if len(consts) > 1 else None, len(x.shape))
    return [TensorType(x.shape, x.dtype)]


def _cumsum_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, axis_value = inputs[0], inputs[1]
    axis = normalize_axis(int(np.asarray(axis_value).reshape(-1)[0]), x.ndim, "CumSum axis")
    y = np.flip(x, axis) if attrs["reverse"] else x
    # Integers wrap around in their own dtype, as onnxruntime's do.
    y = np.cumsum(y, axis=axis, dtype=y.dtype)
    if attrs["exclusive"]:
        y = np.concatenate([np.zeros_like(np.take(y, [0], axis=axis)),
                            np.take(y, np.arange(y.shape[axis] - 1), axis=axis)], axis=axis)
    if attrs["reverse"]:
        y = np.flip(y, axis)
    return [np.ascontiguousarray(y, dtype=x.dtype)]


def _cumsum_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dX[j] sums dY[i] over the i whose sum holds x[j]: the same scan run the other way."""
    return [ctx.op("CumSum", grads[0], ctx.inputs[1], exclusive=ctx.attrs["exclusive"],
                   reverse=1 - ctx.attrs["reverse"]), None]


def _cumsum_examples() -> tuple[Example, ...]:
    axis = lambda a, t=np.int64: np.array(a, t)  # noqa: E731
    ints = rng_array((4, 6), seed=131, dtype=np.float64, low=-9, high=9).astype(np.int32)
    return (
        Example((rng_array((5,), seed=120), axis(0)), consts=(1,), name="1d"),
        Example((rng_array((2, 3, 4), seed=121), axis(1)), consts=(1,), name="axis-1"),
        Example((rng_array((3, 4), seed=122), axis(-1)), {"exclusive": 1}, consts=(1,),
                name="exclusive-negative-axis"),
        Example((rng_array((3, 4), seed=123), axis([0])), {"reverse": 1}, consts=(1,),
                name="reverse-axis-1d"),
        Example((rng_array((3, 4), seed=124), axis(1, np.int32)),
                {"exclusive": 1, "reverse": 1}, consts=(1,), name="exclusive-reverse-i32-axis"),
        Example((ints, axis(0)), consts=(1,), name="int32"),
        Example((np.array([0, 1, 1, 0, 1, 0, 0, 1], np.int64), axis(0)), consts=(1,),
                name="int64-mask-numbering"),
    )


CUMSUM = OpDef(
    name="CumSum",
    vjp=_cumsum_vjp,
    doc="Running sum along one axis (exclusive: leave each element out; reverse: from the end).",
    inputs=("x", "axis"),
    outputs=("y",),
    attrs={"exclusive": Attr("int", 0), "reverse": Attr("int", 0)},
    infer=_cumsum_infer,
    ref=_cumsum_ref,
    flops=_flops,
    examples=_cumsum_examples(),
)


OPS: list[OpDef] = [
    with_nonfinite(REDUCE_SUM, 0, 1, 4),
    with_nonfinite(REDUCE_MEAN, 0, 1, 4),
    with_nonfinite(REDUCE_MAX, 0, 1, 4, onnxruntime_differs=MAX_NAN_DIFFERS),
    with_nonfinite(CUMSUM, 0, 1, 2, 3),
]
