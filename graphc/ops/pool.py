"""Pooling ops over 1, 2 or 3 spatial axes: MaxPool, AveragePool, GlobalAveragePool and
GlobalMaxPool on (N, C, L), (N, C, H, W) or (N, C, D, H, W).

Semantics are ONNX's as onnxruntime and ``onnx.reference`` compute them. The window arithmetic
is Conv's (``graphc.ops.window``), which also refuses the pooling cases onnxruntime refuses or
computes against the ONNX text: ``auto_pad`` SAME with dilations, and SAME pooling that would
need negative pads.

MaxPool's optional ``Indices`` output is onnxruntime's (checked against it): the flat index of
the chosen element in the whole input, N and C included, row-major over the spatial axes
(``storage_order`` 0) or column-major (1: in 2-D, ``h + w * H``). Each window is scanned in
row-major order over its input cells (padding is never chosen): the first cell is taken, then
any strictly greater one, so a tie keeps the first maximum in scan order. A window that covers
only padding gives the lowest value of the dtype (-inf for f16) and the index onnxruntime
computes from coordinate -1 on every spatial axis: in 2-D row-major, ``(n * C + c) * H * W - W
- 1``.
"""

from __future__ import annotations

import math
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
    nonfinite_example,
    nonfinite_examples,
    rng_array,
    with_specials,
)
from graphc.ops.conv import _WINDOW_ATTRS, _work
from graphc.ops.pool_grad import avgpool_vjp, gap_vjp, gmp_vjp, maxpool_vjp
from graphc.ops.window import (
    all_tap_slices,
    counts,
    need_spatial,
    outer_and,
    padded,
    pool_window,
    storage_order,
    tap_positions,
)

MAXPOOL_DTYPES = (*FLOAT_DTYPES, np.dtype(np.int8), np.dtype(np.uint8))


# --- MaxPool, AveragePool -------------------------------------------------------------------


def _pool_infer(op: str, in_types: list[TensorType | None],
                attrs: dict[str, Any]) -> list[TensorType]:
    x = in_types[0]
    assert x is not None
    need_spatial(f"{op} input X", len(x.shape))
    dtypes = MAXPOOL_DTYPES if op == "MaxPool" else FLOAT_DTYPES
    if np.dtype(x.dtype) not in dtypes:
        raise ShapeError(f"{op} input X has an unsupported dtype",
                         expected=", ".join(DTYPE_SHORT[d] for d in dtypes),
                         got=DTYPE_SHORT.get(np.dtype(x.dtype), str(x.dtype)))
    win = pool_window(op, x, attrs)
    return [TensorType((x.shape[0], x.shape[1], *win.out), np.dtype(x.dtype))]


def _maxpool_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                   consts: list[np.ndarray | None]) -> list[TensorType]:
    storage_order(attrs)
    (y,) = _pool_infer("MaxPool", in_types, attrs)
    return [y, TensorType(y.shape, np.dtype(np.int64))]


def _avgpool_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                   consts: list[np.ndarray | None]) -> list[TensorType]:
    if attrs.get("count_include_pad", 0) not in (0, 1):
        raise OpError("AveragePool attribute count_include_pad must be 0 or 1",
                      expected="0 or 1", got=attrs["count_include_pad"])
    return _pool_infer("AveragePool", in_types, attrs)


def _along(values: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Reshape a 1-D array to lie along spatial ``axis`` of a k-D grid."""
    return values.reshape((1,) * axis + (-1,) + (1,) * (k - 1 - axis))


def _index_strides(sizes: tuple[int, ...], order: int) -> list[int]:
    """The multiplier of each spatial coordinate in a flat index: row-major (storage_order 0)
    or column-major (1)."""
    k = len(sizes)
    if order == 0:
        return [math.prod(sizes[a + 1:]) for a in range(k)]
    return [math.prod(sizes[:a]) for a in range(k)]


def _maxpool_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    win = pool_window("MaxPool", x, attrs)
    sizes, k = tuple(x.shape[2:]), win.rank
    positions = [tap_positions(win, a) for a in range(k)]
    valid = [(p >= 0) & (p < s) for p, s in zip(positions, sizes, strict=True)]
    # onnxruntime scans each window row by row over its input cells: it takes the first one,
    # then any strictly greater one (ties keep the first maximum; a NaN in the first cell
    # stays, later ones do not). The first input cell is the first valid tap on each axis.
    first = [ok.argmax(axis=1) for ok in valid]
    xp = padded(x, win, 0)
    start = [_along(np.arange(win.out[a]) * win.strides[a] + first[a] * win.dilations[a], a, k)
             for a in range(k)]
    y = np.ascontiguousarray(xp[(slice(None), slice(None), *start)])
    first_id = _along(first[0], 0, k)
    for a in range(1, k):
        first_id = first_id * win.kernel[a] + _along(first[a], a, k)
    tap_id = np.broadcast_to(first_id.astype(np.int32), y.shape).copy()
    everywhere = all(ok.all() for ok in valid)
    taps = zip(win.taps(), all_tap_slices(win), strict=True)
    for t, (index, slices) in enumerate(taps):
        read = xp[(slice(None), slice(None), *slices)]
        take = read > y
        if not everywhere:
            take &= outer_and([ok[:, i] for ok, i in zip(valid, index, strict=True)])
        np.copyto(y, read, where=take)
        np.copyto(tap_id, np.int32(t), where=take)
    # Indices: the flat index into the whole input, N and C included; row-major, or with
    # storage_order 1 column-major over the spatial axes.
    strides = _index_strides(sizes, storage_order(attrs))
    cells = math.prod(sizes)
    plane = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(*x.shape[:2], *(1,) * k)
    indices = None
    rest = tap_id
    for a in reversed(range(k)):
        # The tap on axis a (tap_id in row-major order), and the input coordinate it reads.
        taps = rest % win.kernel[a] if a else rest
        rest = rest // win.kernel[a] if a else rest
        coordinate = positions[a][_along(np.arange(win.out[a]), a, k), taps]
        if strides[a] != 1:
            coordinate *= strides[a]
        indices = coordinate if indices is None else np.add(indices, coordinate, out=indices)
    indices += plane * cells
    empty = ~outer_and([ok.any(axis=1) for ok in valid])
    if empty.any():
        # A window that sees only padding: the dtype's lowest value (float16: -inf) and the
        # index of coordinate -1 on every spatial axis of its (n, c) plane, as onnxruntime.
        y[..., empty] = (-np.inf if x.dtype == np.float16 else np.finfo(x.dtype).min
                         if x.dtype.kind == "f" else np.iinfo(x.dtype).min)
        indices[..., empty] = (plane * cells - sum(strides)).reshape(*x.shape[:2], 1)
    return [y, indices]


def _avgpool_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    win = pool_window("AveragePool", x, attrs)
    xp = padded(_work(x)[0], win, 0)
    total = np.zeros((*x.shape[:2], *win.out), dtype=xp.dtype)
    for slices in all_tap_slices(win):
        total += xp[(slice(None), slice(None), *slices)]
    count = counts(x.shape, win, bool(attrs.get("count_include_pad", 0)))
    return [(total / np.maximum(count, 1).astype(total.dtype)).astype(x.dtype, copy=False)]


def _pool_flops(view: NodeView) -> int:
    return view.out_types[0].size * math.prod(view.full_attrs["kernel_shape"])


# --- GlobalAveragePool, GlobalMaxPool -------------------------------------------------------


def _global_infer(op: str, in_types: list[TensorType | None]) -> list[TensorType]:
    x = in_types[0]
    assert x is not None
    k = need_spatial(f"{op} input X", len(x.shape))
    need_float(x, f"{op} input X")
    return [TensorType((x.shape[0], x.shape[1], *(1,) * k), np.dtype(x.dtype))]


def _gap_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
               consts: list[np.ndarray | None]) -> list[TensorType]:
    return _global_infer("GlobalAveragePool", in_types)


def _gmp_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
               consts: list[np.ndarray | None]) -> list[TensorType]:
    return _global_infer("GlobalMaxPool", in_types)


def _spatial_axes(ndim: int) -> tuple[int, ...]:
    return tuple(range(2, ndim))


def _gap_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    mean = _work(x)[0].mean(axis=_spatial_axes(x.ndim), keepdims=True)
    return [mean.astype(x.dtype, copy=False)]


def _gmp_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    return [x.max(axis=_spatial_axes(x.ndim), keepdims=True)]


def _elements_in(view: NodeView) -> int:
    x = view.in_types[0]
    assert x is not None
    return x.size


# --- examples -------------------------------------------------------------------------------


def _maxpool_examples() -> tuple[Example, ...]:
    x = rng_array((1, 3, 7, 8), seed=31)
    ties = np.random.default_rng(33).integers(-2, 3, size=(2, 2, 5, 6)).astype(np.float32)
    x1 = rng_array((2, 3, 9), seed=36)
    ties1 = np.random.default_rng(37).integers(-2, 3, size=(2, 2, 7)).astype(np.float32)
    x3 = rng_array((1, 2, 4, 5, 5), seed=38)
    ties3 = np.random.default_rng(39).integers(-2, 3, size=(1, 2, 4, 4, 5)).astype(np.float32)
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
        # storage_order 1: column-major Indices (h + w * H).
        Example((ties,), {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [1, 0, 1, 1],
                          "storage_order": 1}, (), "ties-storage-order1"),
        Example((x,), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 1],
                       "storage_order": 1}, (), "storage-order1"),
        # 1-D (N, C, L) and 3-D (N, C, D, H, W).
        Example((x1,), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, (), "1d-pads"),
        Example((x1,), {"kernel_shape": [2], "strides": [3], "dilations": [2], "ceil_mode": 1},
                (), "1d-dilation-ceil"),
        Example((ties1,), {"kernel_shape": [3], "pads": [2, 1]}, (), "1d-ties-pads"),
        Example((x1,), {"kernel_shape": [2], "strides": [2], "auto_pad": "SAME_UPPER"}, (),
                "1d-same-upper"),
        Example((x1[:, :, :3],), {"kernel_shape": [2], "pads": [1, 1], "dilations": [4]}, (),
                "1d-padding-only-windows"),
        Example((x3,), {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}, (), "3d-stride2"),
        Example((x3,), {"kernel_shape": [3, 2, 3], "strides": [2, 1, 2],
                        "pads": [1, 0, 1, 1, 1, 0], "ceil_mode": 1}, (), "3d-pads-ceil"),
        Example((ties3,), {"kernel_shape": [2, 3, 2], "dilations": [2, 1, 1],
                           "pads": [1, 1, 0, 0, 1, 1]}, (), "3d-ties-dilation"),
        Example((ties3,), {"kernel_shape": [2, 2, 3], "strides": [1, 2, 2],
                           "pads": [0, 1, 1, 1, 0, 1], "storage_order": 1}, (),
                "3d-ties-storage-order1"),
        Example((x3,), {"kernel_shape": [2, 3, 3], "strides": [2, 2, 2],
                        "auto_pad": "SAME_LOWER"}, (), "3d-same-lower"),
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
        nonfinite_example(Example((with_specials(rng_array((2, 2, 12), seed=40), seed=41),),
                                  {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
                          ports=(), name="nonfinite-1d", onnxruntime_differs=MAX_NAN_DIFFERS),
        nonfinite_example(Example((with_specials(rng_array((1, 2, 4, 4, 4), seed=42), seed=43),),
                                  {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
                          ports=(), name="nonfinite-3d", onnxruntime_differs=MAX_NAN_DIFFERS),
    )


def _avgpool_examples() -> tuple[Example, ...]:
    x = rng_array((1, 3, 7, 8), seed=41)
    x1 = rng_array((2, 2, 10), seed=44)
    x3 = rng_array((1, 2, 5, 4, 5), seed=45)
    return (
        Example((x,), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (),
                "pads-exclude"),
        Example((x,), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                       "count_include_pad": 1}, (), "pads-include"),
        Example((x,), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, (), "ceil"),
        Example((x,), {"kernel_shape": [4, 3], "strides": [2, 3], "pads": [1, 0, 1, 0],
                       "ceil_mode": 1, "count_include_pad": 1}, (), "ceil-include"),
        Example((x,), {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER"}, (), "same-lower"),
        Example((x1,), {"kernel_shape": [3], "strides": [2], "pads": [1, 2],
                        "count_include_pad": 1}, (), "1d-pads-include"),
        Example((x1,), {"kernel_shape": [4], "strides": [3], "pads": [1, 0], "ceil_mode": 1},
                (), "1d-ceil-exclude"),
        Example((x3,), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 1],
                        "pads": [1, 1, 0, 0, 1, 1]}, (), "3d-pads-exclude"),
        Example((x3,), {"kernel_shape": [3, 2, 3], "strides": [2, 2, 2], "pads": [1, 0, 1, 0, 0, 1],
                        "ceil_mode": 1, "count_include_pad": 1}, (), "3d-ceil-include"),
        Example((x3,), {"kernel_shape": [2, 2, 3], "strides": [1, 2, 2],
                        "auto_pad": "SAME_UPPER"}, (), "3d-same-upper"),
    )


# --- records --------------------------------------------------------------------------------

OPS: list[OpDef] = [
    OpDef(
        name="MaxPool",
        vjp=maxpool_vjp,
        doc="Max pooling over 1, 2 or 3 spatial axes: strides, dilations, padding, "
            "ceil_mode; argmax Indices (row- or column-major).",
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
        doc="Average pooling over 1, 2 or 3 spatial axes with strides, padding, ceil_mode "
            "and count_include_pad.",
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
        vjp=avgpool_vjp,
        ref=_avgpool_ref,
        nonfinite=nonfinite_examples(_avgpool_examples(), 0, 1, 2, 5, 8),
        examples=_avgpool_examples(),
        flops=_pool_flops,
    ),
    OpDef(
        name="GlobalAveragePool",
        doc="Average over the spatial axes: (N, C, *S) -> (N, C, 1, ...) for 1 to 3 axes.",
        inputs=("X",),
        outputs=("Y",),
        attrs={},
        infer=_gap_infer,
        vjp=gap_vjp,
        ref=_gap_ref,
        nonfinite=(nonfinite_example(Example((rng_array((2, 3, 5, 4), seed=53),))),
                   nonfinite_example(Example((rng_array((2, 3, 7), seed=55),)),
                                     name="nonfinite-1d"),
                   nonfinite_example(Example((rng_array((1, 2, 3, 4, 3), seed=56),)),
                                     name="nonfinite-3d")),
        examples=(Example((rng_array((2, 3, 5, 4), seed=51),), {}, (), "global-avg"),
                  Example((rng_array((2, 3, 7), seed=57),), {}, (), "1d"),
                  Example((rng_array((1, 2, 3, 4, 3), seed=58),), {}, (), "3d")),
        flops=_elements_in,
    ),
    OpDef(
        name="GlobalMaxPool",
        doc="Maximum over the spatial axes: (N, C, *S) -> (N, C, 1, ...) for 1 to 3 axes.",
        inputs=("X",),
        outputs=("Y",),
        attrs={},
        infer=_gmp_infer,
        vjp=gmp_vjp,
        ref=_gmp_ref,
        nonfinite=(nonfinite_example(Example((rng_array((2, 3, 5, 4), seed=54),)),
                                     onnxruntime_differs=MAX_NAN_DIFFERS),
                   nonfinite_example(Example((rng_array((2, 3, 7), seed=59),)),
                                     name="nonfinite-1d", onnxruntime_differs=MAX_NAN_DIFFERS),
                   nonfinite_example(Example((rng_array((1, 2, 3, 4, 3), seed=60),)),
                                     name="nonfinite-3d", onnxruntime_differs=MAX_NAN_DIFFERS)),
        examples=(Example((rng_array((2, 3, 5, 4), seed=52),), {}, (), "global-max"),
                  Example((rng_array((2, 3, 7), seed=61),), {}, (), "1d"),
                  Example((rng_array((1, 2, 3, 4, 3), seed=62),), {}, (), "3d")),
        flops=_elements_in,
    ),
]
