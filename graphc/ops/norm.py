"""Normalization ops, and Dropout (which is the identity at inference).

BatchNormalization uses the stored statistics; LayerNormalization, InstanceNormalization and
GroupNormalization standardize over their own axes:
``y = scale * (x - mean) / sqrt(var + epsilon) + bias`` with the population variance. The
references compute in float64 and return the input's dtype. LayerNormalization's optional
outputs ``Mean`` and ``InvStdDev`` (``1 / sqrt(var + epsilon)``) keep the normalized axes as 1s
and have the dtype ``stash_type`` names (float32 by default), as ONNX defines them.

BatchNormalization with ``training_mode=1`` (what ``graphc.train.step`` builds for training)
normalizes with the batch's own mean and population variance over every axis but the channels, and
its outputs 1 and 2 are the updated running averages ``momentum * running + (1 - momentum) * batch``
(the course's ``a`` is ``momentum``), as onnxruntime computes them. Dropout in training mode is
refused here: training multiplies by a mask input instead (``graphc.train.step``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc.errors import OpError, ShapeError
from graphc.ops.base import (
    Attr,
    Example,
    LowerCtx,
    NodeView,
    OpDef,
    TensorType,
    elementwise_flops,
    need_broadcast_to,
    need_float,
    normalize_axis,
    onnx_dtype,
    optional_inputs,
    rng_array,
    with_nonfinite,
)

NORM_FLOPS = elementwise_flops(7)
BATCHNORM_FLOPS = elementwise_flops(2)


def _training_refusal(op: str, setting: str) -> OpError:
    return OpError(
        f"{op} in training mode is not an inference op",
        expected="the inference form", got=setting,
        hint="Training mode comes from graphc's training support, which builds it from the "
             "inference form; build the node without training mode.",
    )


def _need_rank_at_least(t: TensorType, rank: int, what: str) -> None:
    if len(t.shape) < rank:
        raise ShapeError(f"{what} has too few dimensions", expected=f"rank >= {rank}",
                         got=f"shape {t.shape}")


def _need_channel_params(op: str, x: TensorType, params: Sequence[TensorType | None],
                         names: Sequence[str]) -> None:
    """Raise ShapeError unless every given parameter has shape (C,), C = X.shape[1]."""
    channels = x.shape[1]
    for name, t in zip(names, params, strict=True):
        if t is not None and t.shape != (channels,):
            raise ShapeError(f"{op} {name} must hold one value per channel",
                             expected=f"shape ({channels},)", got=f"shape {t.shape}",
                             hint=f"The channels are dimension 1 of X, whose shape is {x.shape}.")


def _standardize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> np.ndarray:
    """Return ``(x - mean) / sqrt(var + epsilon)`` over ``axes``, in float64."""
    x64 = x.astype(np.float64)
    centred = x64 - x64.mean(axis=axes, keepdims=True)
    var = np.square(centred).mean(axis=axes, keepdims=True)
    return centred / np.sqrt(var + epsilon)


def _per_channel(p: np.ndarray, rank: int) -> np.ndarray:
    """Return a (C,) parameter in float64, shaped (C, 1, ..., 1) to broadcast over (N, C, ...)."""
    return p.astype(np.float64).reshape((-1,) + (1,) * (rank - 2))


# --- gradients --------------------------------------------------------------------------------


def _axes_const(ctx: Any, axes: Sequence[int]) -> Any:
    return ctx.const(np.array(list(axes), np.int64), np.int64)


def _channel_view(ctx: Any, p: Any, rank: int) -> Any:
    """A (C,) parameter reshaped to (C, 1, ..., 1) to broadcast over (N, C, ...)."""
    return ctx.reshape(p, (ctx.type(p).shape[0],) + (1,) * (rank - 2))


def _centred_inv(ctx: Any, x: Any, axes: Sequence[int], epsilon: float) -> tuple[Any, Any]:
    """Return (x - mean, 1 / sqrt(var + epsilon)) over ``axes`` (population variance, kept
    dims), recomputed from x for a gradient."""
    dtype = ctx.type(x).dtype
    axes_c = _axes_const(ctx, axes)
    centred = ctx.op("Sub", x, ctx.op("ReduceMean", x, axes_c, keepdims=1))
    var = ctx.op("ReduceMean", ctx.op("Mul", centred, centred), axes_c, keepdims=1)
    inv = ctx.op("Div", ctx.const(1.0, dtype),
                 ctx.op("Sqrt", ctx.op("Add", var, ctx.const(epsilon, dtype))))
    return centred, inv


def _standardize_grad(ctx: Any, x: Any, dxhat: Any, axes: Sequence[int],
                      epsilon: float) -> tuple[Any, Any]:
    """Return (xhat, dx) for xhat = (x - mean) / sqrt(var + epsilon) over ``axes`` (population
    variance) given dL/dxhat: dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sigma."""
    mean = lambda v: ctx.op("ReduceMean", v, _axes_const(ctx, axes), keepdims=1)  # noqa: E731
    centred, inv = _centred_inv(ctx, x, axes, epsilon)
    xhat = ctx.op("Mul", centred, inv)
    inner = ctx.op("Sub", ctx.op("Sub", dxhat, mean(dxhat)),
                   ctx.op("Mul", xhat, mean(ctx.op("Mul", dxhat, xhat))))
    return xhat, ctx.op("Mul", inner, inv)


def _batchnorm_train_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Training mode, with m values per channel, xc = X - mean_B, inv = 1 / sqrt(var_B + eps)
    and k = scale inv: dB = sum(dY), dscale = inv sum(dY xc), and
    dX = k (dY - sum(dY) / m - xc inv^2 sum(dY xc) / m) = dY k + xc c1 + c0 with per-channel
    c1 = -k inv^2 sum(dY xc) / m and c0 = -k sum(dY) / m: only Mul, Add and sums touch the
    full-size tensors. The stored statistics do not reach Y; the running averages are not
    differentiated."""
    if any(g is not None for g in grads[1:]):
        raise OpError("BatchNormalization's running averages have no gradient rule",
                      expected="a loss of Y only", got="a loss that reads the running averages")
    x, scale = ctx.inputs[0], ctx.inputs[1]
    shape, dy, dtype = ctx.in_types[0].shape, grads[0], ctx.in_types[0].dtype
    rank = len(shape)
    channels = (shape[1],)
    reduced = [0, *range(2, rank)]
    axes = _axes_const(ctx, reduced)
    m = int(np.prod(shape, dtype=np.int64)) // shape[1]
    centred, inv = _centred_inv(ctx, x, reduced, ctx.attrs["epsilon"])
    k = ctx.op("Mul", _channel_view(ctx, scale, rank), inv)
    sum_dy = ctx.op("ReduceSum", dy, axes, keepdims=1)
    sum_dy_xc = ctx.op("ReduceSum", ctx.op("Mul", dy, centred), axes, keepdims=1)
    minus_k_over_m = ctx.op("Mul", k, ctx.const(-1.0 / m, dtype))
    c1 = ctx.op("Mul", ctx.op("Mul", minus_k_over_m, ctx.op("Mul", inv, inv)), sum_dy_xc)
    c0 = ctx.op("Mul", minus_k_over_m, sum_dy)
    dx = ctx.op("Add", ctx.op("Mul", dy, k), ctx.op("Add", ctx.op("Mul", centred, c1), c0))
    dscale = ctx.reshape(ctx.op("Mul", sum_dy_xc, inv), channels)
    return [dx, dscale, ctx.reshape(sum_dy, channels), None, None]


def _batchnorm_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """With inv = 1 / sqrt(var + eps) per channel: dX = dY scale inv, dscale = sum(dY (x - mean)
    inv), dB = sum(dY), dmean = -sum(dY) scale inv, dvar = -sum(dY (x - mean)) scale inv^3 / 2
    (sums over every axis but the channels)."""
    if ctx.attrs["training_mode"]:
        return _batchnorm_train_vjp(ctx, grads)
    x, scale, _, mean, var = ctx.inputs
    dy = grads[0]
    rank, dtype = len(ctx.in_types[0].shape), ctx.in_types[0].dtype
    channels = (ctx.in_types[0].shape[1],)
    c_shape = (channels[0],) + (1,) * (rank - 2)
    scale_c, mean_c, var_c = (_channel_view(ctx, p, rank) for p in (scale, mean, var))
    inv = ctx.op("Div", ctx.const(1.0, dtype),
                 ctx.op("Sqrt", ctx.op("Add", var_c, ctx.const(ctx.attrs["epsilon"], dtype))))
    scale_inv = ctx.op("Mul", scale_c, inv)
    dx = ctx.op("Mul", dy, scale_inv)
    per_channel = lambda v: ctx.reshape(ctx.unbroadcast(v, c_shape), channels)  # noqa: E731
    sum_dy = ctx.unbroadcast(dy, c_shape)
    sum_dy_centred = ctx.unbroadcast(ctx.op("Mul", dy, ctx.op("Sub", x, mean_c)), c_shape)
    dscale = per_channel(ctx.op("Mul", sum_dy_centred, inv))
    dbias = ctx.reshape(sum_dy, channels)
    dmean = per_channel(ctx.op("Neg", ctx.op("Mul", sum_dy, scale_inv)))
    inv3 = ctx.op("Mul", ctx.op("Mul", inv, inv), scale_inv)
    dvar = per_channel(ctx.op("Mul", ctx.op("Mul", sum_dy_centred, inv3),
                              ctx.const(-0.5, dtype)))
    return [dx, dscale, dbias, dmean, dvar]


def _layernorm_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """y = xhat Scale + B over the axes from ``axis`` on; Scale and B get dY (xhat) summed to
    their shapes. Over the n normalized values, Mean = sum(x) / n adds dMean / n to dX and
    InvStdDev = (var + epsilon)^(-1/2) adds -dInvStdDev InvStdDev^3 (x - Mean) / n."""
    x, scale, bias = (list(ctx.inputs) + [None])[:3]
    shape = ctx.in_types[0].shape
    dtype = ctx.in_types[0].dtype
    axis = normalize_axis(ctx.attrs["axis"], len(shape), "LayerNormalization axis")
    axes = range(axis, len(shape))
    dy, dmean, dinv = (list(grads) + [None, None])[:3]
    dx = dscale = dbias = None
    if dy is not None:
        xhat, dx = _standardize_grad(ctx, x, ctx.op("Mul", dy, scale), axes,
                                     ctx.attrs["epsilon"])
        dscale = ctx.unbroadcast(ctx.op("Mul", dy, xhat), ctx.in_types[1].shape)
        dbias = None if bias is None else ctx.unbroadcast(dy, ctx.in_types[2].shape)
    count = float(np.prod(shape[axis:], dtype=np.int64))
    as_x = lambda v: v if ctx.type(v).dtype == dtype else ctx.op(  # noqa: E731
        "Cast", v, to=onnx_dtype(dtype))
    stats = []
    if dmean is not None:
        stats.append(ctx.op("Mul", as_x(dmean), ctx.const(1.0 / count, dtype)))
    if dinv is not None:
        centred, inv = _centred_inv(ctx, x, axes, ctx.attrs["epsilon"])
        cube = ctx.op("Mul", ctx.op("Mul", inv, inv), inv)
        stats.append(ctx.op("Mul", ctx.op("Mul", as_x(dinv), cube),
                            ctx.op("Mul", centred, ctx.const(-1.0 / count, dtype))))
    for term in stats:
        if dx is None and ctx.type(term).shape != shape:
            # dMean / n alone has Mean's shape: each value of x gets it.
            term = ctx.op("Expand", term, ctx.const(np.array(shape, np.int64), np.int64))
        dx = term if dx is None else ctx.op("Add", dx, term)
    out = [dx, dscale]
    if bias is not None:
        out.append(dbias)
    return out


def _instancenorm_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Standardized per (sample, channel) over the spatial axes; scale, B per channel."""
    x, scale, _ = ctx.inputs
    shape = ctx.in_types[0].shape
    rank, dy = len(shape), grads[0]
    c_shape = (shape[1],) + (1,) * (rank - 2)
    xhat, dx = _standardize_grad(ctx, x, ctx.op("Mul", dy, _channel_view(ctx, scale, rank)),
                                 range(2, rank), ctx.attrs["epsilon"])
    dscale = ctx.reshape(ctx.unbroadcast(ctx.op("Mul", dy, xhat), c_shape), (shape[1],))
    dbias = ctx.reshape(ctx.unbroadcast(dy, c_shape), (shape[1],))
    return [dx, dscale, dbias]


def _groupnorm_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Standardized per (sample, group) over X reshaped to (N, G, -1); scale, bias per
    channel."""
    x, scale, _ = ctx.inputs
    shape = ctx.in_types[0].shape
    rank, dy, groups = len(shape), grads[0], ctx.attrs["num_groups"]
    c_shape = (shape[1],) + (1,) * (rank - 2)
    grouped = (shape[0], groups, int(np.prod(shape[1:], dtype=np.int64)) // groups)
    dxhat = ctx.op("Mul", dy, _channel_view(ctx, scale, rank))
    xhat, dx = _standardize_grad(ctx, ctx.reshape(x, grouped), ctx.reshape(dxhat, grouped),
                                 (2,), ctx.attrs["epsilon"])
    xhat = ctx.reshape(xhat, shape)
    dscale = ctx.reshape(ctx.unbroadcast(ctx.op("Mul", dy, xhat), c_shape), (shape[1],))
    dbias = ctx.reshape(ctx.unbroadcast(dy, c_shape), (shape[1],))
    return [ctx.reshape(dx, shape), dscale, dbias]


# --- BatchNormalization -----------------------------------------------------------------------


def _batchnorm_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                     consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    need_float(x, "BatchNormalization input X")
    _need_rank_at_least(x, 2, "BatchNormalization input X")
    _need_channel_params("BatchNormalization", x, in_types[1:],
                         ("scale", "B", "input_mean", "input_var"))
    if attrs["training_mode"] not in (0, 1):
        raise OpError("BatchNormalization training_mode must be 0 or 1", expected="0 or 1",
                      got=attrs["training_mode"])
    if attrs["training_mode"]:
        return [x, in_types[3], in_types[4]]
    return [x]


def _batchnorm_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, scale, bias, mean, var = inputs
    if attrs["training_mode"]:
        axes = (0, *range(2, x.ndim))
        batch_mean = x.astype(np.float64).mean(axis=axes)
        batch_var = x.astype(np.float64).var(axis=axes)
        a = attrs["momentum"]
        new_mean = (mean * a + batch_mean * (1 - a)).astype(mean.dtype)
        new_var = (var * a + batch_var * (1 - a)).astype(var.dtype)
        mean, var = batch_mean, batch_var
    scale, bias, mean, var = (_per_channel(p, x.ndim) for p in (scale, bias, mean, var))
    y = ((x.astype(np.float64) - mean) / np.sqrt(var + attrs["epsilon"]) * scale + bias)
    if attrs["training_mode"]:
        return [y.astype(x.dtype), new_mean, new_var]
    return [y.astype(x.dtype)]


def _channel_params(channels: int, seed: int) -> tuple[np.ndarray, ...]:
    """Return scale, bias, mean and a positive variance for ``channels`` channels."""
    return (
        rng_array((channels,), seed=seed, low=0.5, high=1.5),
        rng_array((channels,), seed=seed + 1),
        rng_array((channels,), seed=seed + 2),
        rng_array((channels,), seed=seed + 3, low=0.5, high=2.0),
    )


BATCH_NORMALIZATION = OpDef(
    name="BatchNormalization",
    vjp=_batchnorm_vjp,
    doc="Normalize each channel with stored mean and variance, then scale and shift "
        "(training_mode=1: with the batch's statistics, and output the running averages).",
    inputs=("X", "scale", "B", "input_mean", "input_var"),
    outputs=("Y", "running_mean", "running_var"),
    attrs={
        "epsilon": Attr("float", 1e-5),
        "momentum": Attr("float", 0.9),
        "training_mode": Attr("int", 0, since=14),
    },
    infer=_batchnorm_infer,
    ref=_batchnorm_ref,
    flops=BATCHNORM_FLOPS,
    examples=(
        Example(inputs=(rng_array((2, 3, 4, 4), seed=1), *_channel_params(3, seed=2)),
                consts=(1, 2, 3, 4), name="4d"),
        Example(inputs=(rng_array((4, 3), seed=6), *_channel_params(3, seed=7)),
                attrs={"epsilon": 1e-3}, consts=(1, 2, 3, 4), name="2d"),
        Example(inputs=(rng_array((3, 2, 3, 3), seed=11, low=-2.0, high=3.0),
                        *_channel_params(2, seed=12)),
                attrs={"training_mode": 1, "momentum": 0.7}, consts=(3, 4),
                name="4d-training"),
        Example(inputs=(rng_array((5, 3), seed=16), *_channel_params(3, seed=17)),
                attrs={"training_mode": 1, "epsilon": 1e-3}, consts=(3, 4),
                name="2d-training"),
    ),
)


# --- LayerNormalization -----------------------------------------------------------------------


# stash_type (an ONNX data type number) -> the dtype of Mean and InvStdDev.
STASH_DTYPES = {1: np.dtype(np.float32), 10: np.dtype(np.float16), 11: np.dtype(np.float64)}


def _stash_dtype(stash_type: int) -> np.dtype:
    if stash_type not in STASH_DTYPES:
        raise OpError("LayerNormalization stash_type names a type graphc does not have",
                      expected="1 (f32), 10 (f16) or 11 (f64)", got=stash_type)
    return STASH_DTYPES[stash_type]


def _layernorm_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                     consts: list[np.ndarray | None]) -> list[TensorType]:
    x, scale, bias = optional_inputs(in_types, 3)
    need_float(x, "LayerNormalization input X")
    axis = normalize_axis(attrs["axis"], len(x.shape), "LayerNormalization axis")
    for name, t in (("Scale", scale), ("B", bias)):
        if t is not None:
            need_broadcast_to(t.shape, x.shape[axis:], f"LayerNormalization {name}")
    # Mean and InvStdDev keep the normalized axes as 1s, in the stash type.
    stats = TensorType(x.shape[:axis] + (1,) * (len(x.shape) - axis),
                       _stash_dtype(attrs["stash_type"]))
    return [x, stats, stats]


def _layernorm_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, scale, bias = optional_inputs(inputs, 3)
    axis = normalize_axis(attrs["axis"], x.ndim, "LayerNormalization axis")
    axes = tuple(range(axis, x.ndim))
    y = _standardize(x, axes, attrs["epsilon"]) * scale.astype(np.float64)
    if bias is not None:
        y = y + bias.astype(np.float64)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(np.square(x64 - mean).mean(axis=axes, keepdims=True)
                        + attrs["epsilon"])
    stash = _stash_dtype(attrs["stash_type"])
    return [y.astype(x.dtype), mean.astype(stash), inv.astype(stash)]


LAYER_NORMALIZATION = OpDef(
    name="LayerNormalization",
    vjp=_layernorm_vjp,
    doc="Normalize over the dimensions from axis on, then scale and shift elementwise; "
        "optionally output the Mean and InvStdDev used.",
    inputs=("X", "Scale", "B?"),
    outputs=("Y", "Mean?", "InvStdDev?"),
    attrs={
        "axis": Attr("int", -1),
        "epsilon": Attr("float", 1e-5),
        "stash_type": Attr("int", 1),
    },
    infer=_layernorm_infer,
    ref=_layernorm_ref,
    flops=NORM_FLOPS,
    examples=(
        Example(inputs=(rng_array((2, 3, 4, 5), seed=11), rng_array((5,), seed=12, low=0.5),
                        rng_array((5,), seed=13)), consts=(1, 2), name="axis-last"),
        Example(inputs=(rng_array((2, 3, 4, 5), seed=14), rng_array((3, 4, 5), seed=15),
                        rng_array((3, 4, 5), seed=16)), attrs={"axis": 1}, consts=(1, 2),
                name="axis-1"),
        Example(inputs=(rng_array((3, 6), seed=17), rng_array((6,), seed=18)), consts=(1,),
                name="no-bias"),
    ),
)


# --- InstanceNormalization --------------------------------------------------------------------


def _instancenorm_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                        consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    need_float(x, "InstanceNormalization input")
    # onnxruntime refuses rank 2 ("number of dimensions is less than 3").
    _need_rank_at_least(x, 3, "InstanceNormalization input")
    _need_channel_params("InstanceNormalization", x, in_types[1:], ("scale", "B"))
    return [x]


def _instancenorm_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, scale, bias = inputs
    y = _standardize(x, tuple(range(2, x.ndim)), attrs["epsilon"])
    y = y * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)
    return [y.astype(x.dtype)]


INSTANCE_NORMALIZATION = OpDef(
    name="InstanceNormalization",
    vjp=_instancenorm_vjp,
    doc="Normalize each channel of each sample over its spatial dimensions, then scale, shift.",
    inputs=("input", "scale", "B"),
    outputs=("output",),
    attrs={"epsilon": Attr("float", 1e-5)},
    infer=_instancenorm_infer,
    ref=_instancenorm_ref,
    flops=NORM_FLOPS,
    examples=(
        Example(inputs=(rng_array((2, 3, 4, 5), seed=21), rng_array((3,), seed=22, low=0.5),
                        rng_array((3,), seed=23)), consts=(1, 2), name="4d"),
    ),
)


# --- GroupNormalization -----------------------------------------------------------------------


def _groupnorm_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                     consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    need_float(x, "GroupNormalization input X")
    _need_rank_at_least(x, 2, "GroupNormalization input X")
    groups, channels = attrs["num_groups"], x.shape[1]
    if groups <= 0 or channels % groups:
        raise ShapeError("GroupNormalization num_groups must divide the channels",
                         expected=f"a divisor of C={channels}", got=groups,
                         hint=f"The channels are dimension 1 of X, whose shape is {x.shape}.")
    _need_channel_params("GroupNormalization", x, in_types[1:], ("scale", "bias"))
    return [x]


def _groupnorm_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, scale, bias = inputs
    grouped = x.reshape(x.shape[0], attrs["num_groups"], -1)
    y = _standardize(grouped, (2,), attrs["epsilon"]).reshape(x.shape)
    y = y * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)
    return [y.astype(x.dtype)]


def _groupnorm_lower(ctx: LowerCtx, view: NodeView) -> None:
    """Emit GroupNormalization-21 natively, or decomposed before opset 21.

    GroupNormalization-18 (opsets 18..20) takes scale and bias per group, not per channel, so
    it cannot express this op. The decomposition works at every opset: reshape X to (N, G, -1),
    InstanceNormalization with unit scale and zero bias, reshape back, then multiply by scale
    and add bias per channel.
    """
    if ctx.opset >= 21:
        ctx.node("GroupNormalization", view.inputs, view.outputs, **view.attrs)
        return
    x, scale, bias = view.inputs
    x_type = view.in_types[0]
    name, rank, groups = view.name, len(x_type.shape), view.full_attrs["num_groups"]
    dtype = np.dtype(x_type.dtype)
    # onnxruntime's CPU InstanceNormalization has no float64 kernel; stage one runs in float32,
    # as stash_type=1 prescribes for GroupNormalization-21.
    if dtype != np.float32:
        src = ctx.fresh(f"{name}_float")
        ctx.node("Cast", [x], [src], to=onnx_dtype(np.float32))
        x = src
    grouped_shape = ctx.const(f"{name}_grouped_shape", np.array([0, groups, -1], np.int64))
    grouped = ctx.fresh(f"{name}_grouped")
    ctx.node("Reshape", [x, grouped_shape], [grouped])
    ones = ctx.const(f"{name}_ones", np.ones(groups, np.float32))
    zeros = ctx.const(f"{name}_zeros", np.zeros(groups, np.float32))
    normalized = ctx.fresh(f"{name}_normalized")
    ctx.node("InstanceNormalization", [grouped, ones, zeros], [normalized],
             epsilon=view.full_attrs["epsilon"])
    x_shape = ctx.const(f"{name}_shape", np.array([0, *x_type.shape[1:]], np.int64))
    ungrouped = ctx.fresh(f"{name}_ungrouped")
    ctx.node("Reshape", [normalized, x_shape], [ungrouped])
    if dtype != np.float32:
        back = ctx.fresh(f"{name}_normalized_{dtype}")
        ctx.node("Cast", [ungrouped], [back], to=onnx_dtype(dtype))
        ungrouped = back
    if rank > 2:
        channel_shape = ctx.const(f"{name}_channel_shape",
                                  np.array([x_type.shape[1]] + [1] * (rank - 2), np.int64))
        scale_c, bias_c = ctx.fresh(f"{name}_scale"), ctx.fresh(f"{name}_bias")
        ctx.node("Reshape", [scale, channel_shape], [scale_c])
        ctx.node("Reshape", [bias, channel_shape], [bias_c])
        scale, bias = scale_c, bias_c
    scaled = ctx.fresh(f"{name}_scaled")
    ctx.node("Mul", [ungrouped, scale], [scaled])
    ctx.node("Add", [scaled, bias], [view.outputs[0]])


GROUP_NORMALIZATION = OpDef(
    name="GroupNormalization",
    vjp=_groupnorm_vjp,
    doc="Normalize each group of channels of each sample, then scale and shift per channel.",
    inputs=("X", "scale", "bias"),
    outputs=("Y",),
    attrs={
        "epsilon": Attr("float", 1e-5),
        "num_groups": Attr("int"),
        "stash_type": Attr("int", 1),
    },
    infer=_groupnorm_infer,
    ref=_groupnorm_ref,
    lower=_groupnorm_lower,
    flops=NORM_FLOPS,
    examples=(
        Example(inputs=(rng_array((2, 4, 3, 3), seed=31), rng_array((4,), seed=32, low=0.5),
                        rng_array((4,), seed=33)), attrs={"num_groups": 2}, consts=(1, 2),
                name="2-groups"),
        Example(inputs=(rng_array((2, 4, 3, 3), seed=34), rng_array((4,), seed=35, low=0.5),
                        rng_array((4,), seed=36)), attrs={"num_groups": 4}, consts=(1, 2),
                name="groups-eq-channels"),
    ),
)


# --- Dropout ----------------------------------------------------------------------------------


def _dropout_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                   consts: list[np.ndarray | None]) -> list[TensorType]:
    x, ratio, training = optional_inputs(in_types, 3)
    need_float(x, "Dropout input data")
    for name, t in (("ratio", ratio), ("training_mode", training)):
        if t is not None and t.shape != ():
            raise ShapeError(f"Dropout {name} must be a scalar", expected="shape ()",
                             got=f"shape {t.shape}")
    if training is not None and np.dtype(training.dtype) != np.bool_:
        raise ShapeError("Dropout training_mode must be a boolean", expected="bool",
                         got=str(training))
    ratio_value = optional_inputs(consts, 2)[1]
    if ratio_value is not None and not 0.0 <= float(ratio_value) < 1.0:
        raise OpError("Dropout ratio must be a probability below 1", expected="in [0, 1)",
                      got=float(ratio_value))
    return [x, TensorType(x.shape, np.dtype(np.bool_))]


def _dropout_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, _, training = optional_inputs(inputs, 3)
    if training is not None and bool(training):
        raise _training_refusal("Dropout", "training_mode=True")
    return [x.copy(), np.ones(x.shape, dtype=np.bool_)]



def _dropout_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Inference Dropout is the identity: the gradient passes through."""
    return [grads[0]]

DROPOUT = OpDef(
    name="Dropout",
    vjp=_dropout_vjp,
    doc="Pass data through unchanged (inference form); the mask is all True.",
    inputs=("data", "ratio?", "training_mode?"),
    outputs=("output", "mask?"),
    attrs={"seed": Attr("int", 0)},
    infer=_dropout_infer,
    ref=_dropout_ref,
    # The inference form copies its input, like Identity.
    flops=elementwise_flops(0),
    examples=(
        Example(inputs=(rng_array((2, 3, 4), seed=41), np.array(0.25, np.float32)), consts=(1,),
                name="ratio"),
        Example(inputs=(rng_array((2, 3, 4), seed=42),), name="no-ratio"),
        Example(inputs=(rng_array((2, 3), seed=43), np.array(0.5, np.float32), np.array(False)),
                consts=(1, 2), name="training-false"),
    ),
)


OPS: list[OpDef] = [
    with_nonfinite(BATCH_NORMALIZATION, 0, 2, 3),
    # Non-finite Scale and B: with an infinity in a row of X, onnxruntime's vectorized kernel
    # gives NaN as that row's Mean (unless it is the row's last value), where the mean is the
    # infinity (so says ONNX's reference), and the test cannot leave out +inf.
    with_nonfinite(with_nonfinite(LAYER_NORMALIZATION, 0, ports=(1, 2)), 2, ports=(1,)),
    with_nonfinite(INSTANCE_NORMALIZATION, 0),
    with_nonfinite(GROUP_NORMALIZATION, 0, 1),
    with_nonfinite(DROPOUT, 0, 2),
]
