"""Pooling ops (NCHW, 2-D spatial): MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

Semantics are ONNX's as onnxruntime and ``onnx.reference`` compute them. The window arithmetic
is Conv's (``_window`` in ``graphc.ops.conv``), which also refuses the pooling cases
onnxruntime refuses or computes against the ONNX text: ``auto_pad`` SAME with dilations, and
SAME pooling that would need negative pads.

MaxPool's optional ``Indices`` output is onnxruntime's (checked against it): the row-major
index of the chosen element in the whole input, N and C included (storage_order 0 only). Each
window is scanned row by row over its input cells (padding is never chosen): the first cell is
taken, then any strictly greater one, so a tie keeps the first maximum in scan order. A window
that covers only padding gives the lowest value of the dtype (-inf for f16) and the index
onnxruntime computes from row = column = -1: ``(n * C + c) * H * W - W - 1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.errors import OpError, ShapeError
from graphc.ops.base import (
    DTYPE_SHORT,
    FLOAT_DTYPES,
    MAX_NAN_DIFFERS,
    Attr,
    Example,
    NodeView,
    OpDef,
    TensorType,
    need_float,
    need_rank,
    nonfinite_example,
    nonfinite_examples,
    onnx_dtype,
    rng_array,
    with_specials,
)
from graphc.ops.conv import _WINDOW_ATTRS, _padded, _tap, _Window, _window, _work
from graphc.ops.reduce import first_max_grad

MAXPOOL_DTYPES = (*FLOAT_DTYPES, np.dtype(np.int8), np.dtype(np.uint8))


# --- MaxPool, AveragePool -------------------------------------------------------------------


def _pool_window(op: str, x: TensorType | np.ndarray, attrs: dict[str, Any]) -> _Window:
    kernel = tuple(attrs["kernel_shape"])
    if len(kernel) != 2 or min(kernel) < 1:
        raise OpError(f"{op} attribute kernel_shape needs one positive size per spatial axis",
                      expected="2 values (kH, kW) >= 1", got=list(kernel),
                      hint="Only 2-D (NCHW) pooling is supported.")
    ceil_mode = attrs.get("ceil_mode", 0)
    if ceil_mode not in (0, 1):
        raise OpError(f"{op} attribute ceil_mode must be 0 or 1", expected="0 or 1",
                      got=ceil_mode)
    return _window(op, tuple(x.shape[2:]), (kernel[0], kernel[1]), attrs, bool(ceil_mode))


def _pool_infer(op: str, in_types: list[TensorType | None],
                attrs: dict[str, Any]) -> list[TensorType]:
    x = in_types[0]
    assert x is not None
    need_rank(x, 4, f"{op} input X (N, C, H, W)")
    dtypes = MAXPOOL_DTYPES if op == "MaxPool" else FLOAT_DTYPES
    if np.dtype(x.dtype) not in dtypes:
        raise ShapeError(f"{op} input X has an unsupported dtype",
                         expected=", ".join(DTYPE_SHORT[d] for d in dtypes),
                         got=DTYPE_SHORT.get(np.dtype(x.dtype), str(x.dtype)))
    win = _pool_window(op, x, attrs)
    return [TensorType((x.shape[0], x.shape[1], *win.out), np.dtype(x.dtype))]


def _maxpool_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                   consts: list[np.ndarray | None]) -> list[TensorType]:
    order = attrs.get("storage_order", 0)
    if order == 1:
        raise OpError("MaxPool storage_order=1 (column-major Indices) is not supported",
                      expected="storage_order 0", got=1,
                      hint="storage_order only changes the Indices output; drop it.")
    if order != 0:
        raise OpError("MaxPool attribute storage_order must be 0 or 1", expected="0 or 1",
                      got=order)
    (y,) = _pool_infer("MaxPool", in_types, attrs)
    return [y, TensorType(y.shape, np.dtype(np.int64))]


def _avgpool_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                   consts: list[np.ndarray | None]) -> list[TensorType]:
    if attrs.get("count_include_pad", 0) not in (0, 1):
        raise OpError("AveragePool attribute count_include_pad must be 0 or 1",
                      expected="0 or 1", got=attrs["count_include_pad"])
    return _pool_infer("AveragePool", in_types, attrs)


def _tap_positions(win: _Window, axis: int) -> np.ndarray:
    """Return, per output position and kernel tap on one axis, the input coordinate it reads."""
    return (np.arange(win.out[axis])[:, None] * win.strides[axis] - win.begin[axis]
            + np.arange(win.kernel[axis])[None, :] * win.dilations[axis])


def _maxpool_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    win = _pool_window("MaxPool", x, attrs)
    (h, w), (kh, kw) = x.shape[2:], win.kernel
    rows, cols = _tap_positions(win, 0), _tap_positions(win, 1)
    row_ok, col_ok = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    # onnxruntime scans each window row by row over its input cells: it takes the first one,
    # then any strictly greater one (ties keep the first maximum; a NaN in the first cell
    # stays, later ones do not). The first input cell is (first valid row, first valid column).
    i0, j0 = row_ok.argmax(axis=1), col_ok.argmax(axis=1)
    xp = _padded(x, win, 0)
    oh, ow = np.arange(win.out[0]), np.arange(win.out[1])
    y = np.ascontiguousarray(xp[:, :, (oh * win.strides[0] + i0 * win.dilations[0])[:, None],
                                (ow * win.strides[1] + j0 * win.dilations[1])[None, :]])
    tap_id = np.broadcast_to((i0[:, None] * kw + j0[None, :]).astype(np.int32), y.shape).copy()
    for i in range(kh):
        for j in range(kw):
            tap = _tap(xp, win, i, j)
            take = tap > y
            valid = row_ok[:, i][:, None] & col_ok[:, j][None, :]
            if not valid.all():
                take &= valid
            np.copyto(y, tap, where=take)
            np.copyto(tap_id, np.int32(i * kw + j), where=take)
    # Indices: the row-major index into the whole input, N and C included.
    plane = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(*x.shape[:2], 1, 1)
    row = rows[oh[:, None], tap_id // kw]
    col = cols[ow[None, :], tap_id % kw]
    indices = plane * (h * w) + row * w + col
    empty = ~(row_ok.any(axis=1)[:, None] & col_ok.any(axis=1)[None, :])
    if empty.any():
        # A window that sees only padding: the dtype's lowest value (float16: -inf) and the
        # index of row -1, column -1 of its (n, c) plane, as onnxruntime gives.
        y[..., empty] = (-np.inf if x.dtype == np.float16 else np.finfo(x.dtype).min
                         if x.dtype.kind == "f" else np.iinfo(x.dtype).min)
        indices[..., empty] = (plane * (h * w) - w - 1).reshape(*x.shape[:2], 1)
    return [y, indices]


def _window_counts(size: int, win: _Window, axis: int, include_pad: bool) -> np.ndarray:
    """Return, per output position on one axis, how many taps fall on the input (or its pads)."""
    pos = _tap_positions(win, axis)
    # Trap: count_include_pad=1 counts the explicit (or auto) pads but not the cells that only
    # ceil_mode adds past the end padding; onnxruntime divides by the clipped window.
    high = size + win.end[axis] if include_pad else size
    low = -win.begin[axis] if include_pad else 0
    return ((pos >= low) & (pos < high)).sum(axis=1)


def _avgpool_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    win = _pool_window("AveragePool", x, attrs)
    xp = _padded(_work(x)[0], win, 0)
    total = np.zeros((*x.shape[:2], *win.out), dtype=xp.dtype)
    for i in range(win.kernel[0]):
        for j in range(win.kernel[1]):
            total += _tap(xp, win, i, j)
    include = bool(attrs.get("count_include_pad", 0))
    count = np.outer(_window_counts(x.shape[2], win, 0, include),
                     _window_counts(x.shape[3], win, 1, include))
    return [(total / np.maximum(count, 1).astype(total.dtype)).astype(x.dtype, copy=False)]



# Largest (OH*OW, H*W) upsampling matrix the tiled MaxPool gradient builds (4 MB of f32).
UPSAMPLE_LIMIT = 1 << 20


def _tiles(win: _Window, shape: tuple[int, ...]) -> bool:
    """Whether the windows tile the input exactly (stride = kernel, no padding or dilation)
    and the upsampling matrix of ``_tiled_max_grad`` stays small."""
    return (win.strides == win.kernel and win.dilations == (1, 1) and win.begin == (0, 0)
            and win.end == (0, 0) and shape[2] == win.kernel[0] * win.out[0]
            and shape[3] == win.kernel[1] * win.out[1]
            and win.out[0] * win.out[1] * shape[2] * shape[3] <= UPSAMPLE_LIMIT)


def _tiled_max_grad(ctx: Any, win: _Window, dy: Any) -> Any:
    """MaxPool's gradient when the windows tile X, without the Indices output (computing it
    costs onnxruntime ten times the pooling).

    ``up`` copies each pooled value over its window: one MatMul of the (N*C, OH*OW) values
    with a constant 0/1 matrix (exact: one product by 1 per output). The maxima are where
    X equals up(Y); a score of K - (position in the window) at the maxima, pooled again,
    marks the first maximum in row-major window order, as onnxruntime's Indices do at ties.
    """
    n, c, h, w = ctx.in_types[0].shape
    (kh, kw), (oh, ow) = win.kernel, win.out
    dtype = np.dtype(ctx.in_types[0].dtype)
    to = onnx_dtype(dtype)
    rows, cols = np.indices((h, w))
    window = (rows // kh) * ow + cols // kw
    matrix = (np.arange(oh * ow)[:, None] == window.reshape(1, -1)).astype(dtype)
    position = (rows % kh) * kw + cols % kw
    score_of = (kh * kw - position).astype(dtype)
    spread = ctx.const(matrix, dtype)

    def up(value: Any) -> Any:
        flat = ctx.op("MatMul", ctx.reshape(value, (n * c, oh * ow)), spread)
        return ctx.reshape(flat, (n, c, h, w))

    is_max = ctx.op("Cast", ctx.op("Equal", ctx.inputs[0], up(ctx.outputs[0])), to=to)
    score = ctx.op("Mul", is_max, ctx.const(score_of, dtype))
    best = ctx.op("MaxPool", score, kernel_shape=[kh, kw], strides=[kh, kw])
    first = ctx.op("Cast", ctx.op("Equal", score, up(best)), to=to)
    return ctx.op("Mul", first, up(dy))


def _maxpool_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dX = dY scattered (added) at the forward's Indices: each window's gradient goes to the
    first maximum, as onnxruntime picks it (a mask built with Equal(x, max) would be wrong at
    ties). Windows that cover only padding have no input cell: their gradient is dropped."""
    x_type = ctx.in_types[0]
    dtype = np.dtype(x_type.dtype)
    win = _pool_window("MaxPool", x_type, ctx.attrs)
    if _tiles(win, x_type.shape):
        return [_tiled_max_grad(ctx, win, grads[0])]
    live = np.ones(win.out, dtype=bool)
    for axis in (0, 1):
        pos = _tap_positions(win, axis)
        reads = ((pos >= 0) & (pos < x_type.shape[2 + axis])).any(axis=1)
        live &= reads[:, None] if axis == 0 else reads[None, :]
    dy, indices = grads[0], ctx.outputs[1]
    if not live.all():
        keep = ctx.const(live, np.bool_)
        dy = ctx.op("Where", keep, dy, ctx.const(0.0, dtype))
        indices = ctx.op("Where", keep, indices, ctx.const(0, np.int64))
    count = int(np.prod(ctx.out_types[0].shape))
    total = int(np.prod(x_type.shape))
    zeros = ctx.op("Expand", ctx.const(0.0, dtype), ctx.const(np.array([total], np.int64),
                                                              np.int64))
    scattered = ctx.op("ScatterElements", zeros, ctx.reshape(indices, (count,)),
                       ctx.reshape(dy, (count,)), axis=0, reduction="add")
    return [ctx.reshape(scattered, x_type.shape)]

def _avgpool_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dX = R^T (dY / count) C: the window is separable, so per axis an (out, in) matrix marks
    which input cells each output position's taps read (R for rows, C for columns), and the
    divisor is the forward's per-window count. Exact for every pads / ceil_mode /
    count_include_pad / dilations setting, since it reuses the forward's window arithmetic."""
    x_type = ctx.in_types[0]
    shape, dtype = x_type.shape, np.dtype(x_type.dtype)
    win = _pool_window("AveragePool", x_type, ctx.attrs)
    include = bool(ctx.attrs.get("count_include_pad", 0))
    taps = []
    for axis in (0, 1):
        size, pos = shape[2 + axis], _tap_positions(win, axis)
        m = np.zeros((win.out[axis], size), dtype)
        for o in range(win.out[axis]):
            for p in pos[o]:
                if 0 <= p < size:
                    m[o, p] += 1
        taps.append(m)
    count = np.outer(_window_counts(shape[2], win, 0, include),
                     _window_counts(shape[3], win, 1, include))
    scaled = ctx.op("Mul", grads[0], ctx.const(1.0 / np.maximum(count, 1), dtype))
    rows = ctx.op("MatMul", ctx.const(taps[0].T, dtype), scaled)
    return [ctx.op("MatMul", rows, ctx.const(taps[1], dtype))]


def _pool_flops(view: NodeView) -> int:
    kh, kw = view.full_attrs["kernel_shape"]
    return view.out_types[0].size * int(kh) * int(kw)


# --- GlobalAveragePool, GlobalMaxPool -------------------------------------------------------


def _global_infer(op: str, in_types: list[TensorType | None]) -> list[TensorType]:
    x = in_types[0]
    assert x is not None
    need_rank(x, 4, f"{op} input X (N, C, H, W)")
    need_float(x, f"{op} input X")
    return [TensorType((x.shape[0], x.shape[1], 1, 1), np.dtype(x.dtype))]


def _gap_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
               consts: list[np.ndarray | None]) -> list[TensorType]:
    return _global_infer("GlobalAveragePool", in_types)


def _gmp_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
               consts: list[np.ndarray | None]) -> list[TensorType]:
    return _global_infer("GlobalMaxPool", in_types)


def _gap_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    return [_work(x)[0].mean(axis=(2, 3), keepdims=True).astype(x.dtype, copy=False)]


def _gmp_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    return [x.max(axis=(2, 3), keepdims=True)]


def _gap_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Every cell of a plane gets dY / (H * W)."""
    shape, dtype = ctx.in_types[0].shape, ctx.in_types[0].dtype
    dy = ctx.op("Mul", grads[0], ctx.const(1.0 / (shape[2] * shape[3]), dtype))
    return [ctx.op("Expand", dy, ctx.const(np.array(shape, np.int64), np.int64))]


def _gmp_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dY to the first maximum of each plane (row-major), one share per plane at ties."""
    return [first_max_grad(ctx, ctx.outputs[0], grads[0], [2, 3])]


def _elements_in(view: NodeView) -> int:
    x = view.in_types[0]
    assert x is not None
    return x.size


# --- examples -------------------------------------------------------------------------------


def _maxpool_examples() -> tuple[Example, ...]:
    x = rng_array((1, 3, 7, 8), seed=31)
    ties = np.random.default_rng(33).integers(-2, 3, size=(2, 2, 5, 6)).astype(np.float32)
    return (
        Example((x,), {"kernel_shape": [2, 2], "strides": [2, 2]}, (), "stride2"),
        Example((x,), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (),
                "pads"),
        Example((x,), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, (), "ceil"),
        Example((x,), {"kernel_shape": [4, 4], "strides": [2, 3], "pads": [1, 1, 1, 0],
                       "ceil_mode": 1}, (), "ceil-pads"),
        Example((x,), {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 0, 1]}, (),
                "dilation"),
        Example((x,), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, (),
                "same-upper"),
        # Indices: ties (first maximum in scan order), N and C offsets, padded windows.
        Example((ties,), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, (), "ties-pads"),
        Example((ties,), {"kernel_shape": [2, 3], "strides": [2, 2], "dilations": [1, 2],
                          "ceil_mode": 1}, (), "ties-dilation-ceil"),
        Example((-np.abs(x) - 1,), {"kernel_shape": [3, 3], "strides": [2, 2],
                                    "pads": [1, 1, 1, 1]}, (), "negative-pads"),
        Example((ties.astype(np.int8),), {"kernel_shape": [2, 2]}, (), "int8-ties"),
        Example((rng_array((2, 3, 2, 3), seed=32),), {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1],
                                                      "dilations": [3, 1]}, (),
                "padding-only-windows"),
    )


def _maxpool_nonfinite() -> tuple[Example, ...]:
    x = with_specials(rng_array((1, 2, 6, 6), seed=34), seed=35, each=4)
    x[0, 1, :2, :2] = -np.inf  # a window of -inf only
    x[0, 1, 2:4, 2:4] = [[np.nan, np.inf], [1.0, 2.0]]  # the window
    return (
        nonfinite_example(Example((x,), {"kernel_shape": [2, 2], "strides": [2, 2]}), ports=(),
                          onnxruntime_differs=MAX_NAN_DIFFERS),
        nonfinite_example(Example((x,), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
                          ports=(), name="nonfinite-pads", onnxruntime_differs=MAX_NAN_DIFFERS),
    )


def _avgpool_examples() -> tuple[Example, ...]:
    x = rng_array((1, 3, 7, 8), seed=41)
    return (
        Example((x,), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (),
                "pads-exclude"),
        Example((x,), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                       "count_include_pad": 1}, (), "pads-include"),
        Example((x,), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, (), "ceil"),
        Example((x,), {"kernel_shape": [4, 3], "strides": [2, 3], "pads": [1, 0, 1, 0],
                       "ceil_mode": 1, "count_include_pad": 1}, (), "ceil-include"),
        Example((x,), {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER"}, (), "same-lower"),
    )


# --- records --------------------------------------------------------------------------------

OPS: list[OpDef] = [
    OpDef(
        name="MaxPool",
    vjp=_maxpool_vjp,
        doc="2-D max pooling (NCHW): strides, dilations, padding, ceil_mode; argmax Indices.",
        inputs=("X",),
        outputs=("Y", "Indices?"),
        attrs={
            **_WINDOW_ATTRS,
            "ceil_mode": Attr("int", 0),
            "dilations": Attr("ints", ()),
            "kernel_shape": Attr("ints"),
            "storage_order": Attr("int", 0),
        },
        infer=_maxpool_infer,
        ref=_maxpool_ref,
        nonfinite=_maxpool_nonfinite(),
        examples=_maxpool_examples(),
        flops=_pool_flops,
    ),
    OpDef(
        name="AveragePool",
        doc="2-D average pooling (NCHW) with strides, padding, ceil_mode and count_include_pad.",
        inputs=("X",),
        outputs=("Y",),
        attrs={
            **_WINDOW_ATTRS,
            "ceil_mode": Attr("int", 0),
            "count_include_pad": Attr("int", 0),
            "dilations": Attr("ints", (), since=19),
            "kernel_shape": Attr("ints"),
        },
        infer=_avgpool_infer,
        vjp=_avgpool_vjp,
        ref=_avgpool_ref,
        nonfinite=nonfinite_examples(_avgpool_examples(), 0, 1, 2),
        examples=_avgpool_examples(),
        flops=_pool_flops,
    ),
    OpDef(
        name="GlobalAveragePool",
        doc="Average over the spatial axes (N, C, H, W) -> (N, C, 1, 1).",
        inputs=("X",),
        outputs=("Y",),
        attrs={},
        infer=_gap_infer,
        vjp=_gap_vjp,
        ref=_gap_ref,
        nonfinite=(nonfinite_example(Example((rng_array((2, 3, 5, 4), seed=53),))),),
        examples=(Example((rng_array((2, 3, 5, 4), seed=51),), {}, (), "global-avg"),),
        flops=_elements_in,
    ),
    OpDef(
        name="GlobalMaxPool",
        doc="Maximum over the spatial axes (N, C, H, W) -> (N, C, 1, 1).",
        inputs=("X",),
        outputs=("Y",),
        attrs={},
        infer=_gmp_infer,
        vjp=_gmp_vjp,
        ref=_gmp_ref,
        nonfinite=(nonfinite_example(Example((rng_array((2, 3, 5, 4), seed=54),)),
                                     onnxruntime_differs=MAX_NAN_DIFFERS),),
        examples=(Example((rng_array((2, 3, 5, 4), seed=52),), {}, (), "global-max"),),
        flops=_elements_in,
    ),
]
