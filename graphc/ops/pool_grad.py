"""Gradient rules of the pooling ops (1, 2 or 3 spatial axes), from the forward's window.

- MaxPool: dY goes to the first maximum of each window, as onnxruntime's Indices pick it
  (scattered and added at the row-major Indices); windows of padding only get nothing. When 2-D
  windows tile the input, an upsampling MatMul replaces the Indices (cheaper on onnxruntime).
- AveragePool: dY / count carried back along each axis by a 0/1 matrix of the cells each
  output reads (the window is separable).
- GlobalAveragePool: dY / cells everywhere; GlobalMaxPool: dY to the first maximum per plane.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.ops.base import onnx_dtype
from graphc.ops.reduce import first_max_grad
from graphc.ops.window import (
    Window,
    counts,
    outer_and,
    pool_window,
    storage_order,
    tap_positions,
)

# Largest (OH*OW, H*W) upsampling matrix the tiled MaxPool gradient builds (4 MB of f32).
UPSAMPLE_LIMIT = 1 << 20


def _tiles(win: Window, shape: tuple[int, ...]) -> bool:
    """Whether 2-D windows tile the input exactly (stride = kernel, no padding or dilation)
    and the upsampling matrix of ``_tiled_max_grad`` stays small."""
    return (win.rank == 2 and win.strides == win.kernel and win.dilations == (1, 1)
            and win.begin == (0, 0) and win.end == (0, 0)
            and shape[2] == win.kernel[0] * win.out[0] and shape[3] == win.kernel[1] * win.out[1]
            and win.out[0] * win.out[1] * shape[2] * shape[3] <= UPSAMPLE_LIMIT)


def _tiled_max_grad(ctx: Any, win: Window, dy: Any) -> Any:
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
    cell_window = (rows // kh) * ow + cols // kw
    matrix = (np.arange(oh * ow)[:, None] == cell_window.reshape(1, -1)).astype(dtype)
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


def maxpool_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dX = dY scattered (added) at the forward's Indices: each window's gradient goes to the
    first maximum, as onnxruntime picks it (a mask built with Equal(x, max) would be wrong at
    ties). Windows that cover only padding have no input cell: their gradient is dropped."""
    x_type = ctx.in_types[0]
    dtype = np.dtype(x_type.dtype)
    win = pool_window("MaxPool", x_type, ctx.attrs)
    if _tiles(win, x_type.shape):
        return [_tiled_max_grad(ctx, win, grads[0])]
    reads = [tap_positions(win, a) for a in range(win.rank)]
    live = outer_and([((pos >= 0) & (pos < x_type.shape[2 + a])).any(axis=1)
                      for a, pos in enumerate(reads)])
    indices = ctx.outputs[1]
    if storage_order(ctx.attrs) == 1:
        # The forward's Indices are column-major; the scatter needs the row-major ones.
        attrs = {key: value for key, value in ctx.attrs.items() if key != "storage_order"}
        indices = ctx.op("MaxPool", ctx.inputs[0], **attrs)._replace(out=1)
    dy = grads[0]
    if not live.all():
        keep = ctx.const(live, np.bool_)
        dy = ctx.op("Where", keep, dy, ctx.const(0.0, dtype))
        indices = ctx.op("Where", keep, indices, ctx.const(0, np.int64))
    count = math.prod(ctx.out_types[0].shape)
    total = math.prod(x_type.shape)
    zeros = ctx.op("Expand", ctx.const(0.0, dtype), ctx.const(np.array([total], np.int64),
                                                              np.int64))
    scattered = ctx.op("ScatterElements", zeros, ctx.reshape(indices, (count,)),
                       ctx.reshape(dy, (count,)), axis=0, reduction="add")
    return [ctx.reshape(scattered, x_type.shape)]


def avgpool_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dX = dY / count carried back along each spatial axis by the (out, in) 0/1 matrix that
    marks which input cells each output position's taps read (the window is separable: in 2-D,
    dX = R^T (dY / count) C). Exact for every pads / ceil_mode / count_include_pad /
    dilations setting, since it reuses the forward's window arithmetic."""
    x_type = ctx.in_types[0]
    shape, dtype = tuple(x_type.shape), np.dtype(x_type.dtype)
    win = pool_window("AveragePool", x_type, ctx.attrs)
    k = win.rank
    reads = []
    for axis in range(k):
        size, pos = shape[2 + axis], tap_positions(win, axis)
        m = np.zeros((win.out[axis], size), dtype)
        for o in range(win.out[axis]):
            for p in pos[o]:
                if 0 <= p < size:
                    m[o, p] += 1
        reads.append(m)
    count = counts(shape, win, bool(ctx.attrs.get("count_include_pad", 0)))
    grad = ctx.op("Mul", grads[0], ctx.const(1.0 / np.maximum(count, 1), dtype))
    # The last axis: a MatMul on the right; the others: on the left, with the axes after
    # them (already at their input sizes) merged into one.
    grad = ctx.op("MatMul", grad, ctx.const(reads[-1], dtype))
    for axis in reversed(range(k - 1)):
        lead = (*shape[:2], *win.out[:axis])
        merged = ctx.reshape(grad, (*lead, win.out[axis], math.prod(shape[3 + axis:])))
        grad = ctx.op("MatMul", ctx.const(reads[axis].T, dtype), merged)
        grad = ctx.reshape(grad, (*lead, *shape[2 + axis:]))
    return [grad]


def gap_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Every cell of a plane gets dY / (number of cells)."""
    shape, dtype = ctx.in_types[0].shape, ctx.in_types[0].dtype
    dy = ctx.op("Mul", grads[0], ctx.const(1.0 / math.prod(shape[2:]), dtype))
    return [ctx.op("Expand", dy, ctx.const(np.array(shape, np.int64), np.int64))]


def gmp_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dY to the first maximum of each plane (row-major), one share per plane at ties."""
    axes = list(range(2, len(ctx.in_types[0].shape)))
    return [first_max_grad(ctx, ctx.outputs[0], grads[0], axes)]
