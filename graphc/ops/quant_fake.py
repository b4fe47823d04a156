"""FakeQuantizeLinear: quantize then dequantize, with a straight-through gradient (a graphc op
for quantization-aware training).

``FakeQuantizeLinear(x, scale, zero_point) = DequantizeLinear(QuantizeLinear(x))`` with the
same scale, zero point and ``axis`` (per tensor or per axis), computed and exported as exactly
that pair (``graphc.ops.quant``), so a trained graph needs no rewrite to ship.

Why an op of its own: gradients in this IR have their value's type, so none can flow through
the uint8 or int8 tensor between QuantizeLinear and DequantizeLinear; the straight-through
estimator needs x and the float output in one rule. Its vjp, with ``lo = scale * (qmin - zp)``
and ``hi = scale * (qmax - zp)`` (the clipping range, bounds included):

- ``dx = dY`` where ``lo <= x <= hi`` and 0 outside: round's derivative is taken as 1 and the
  clamp keeps its own (PyTorch's fake quantization masks on the rounded code instead, which
  differs only within half a step beyond the bounds);
- ``dscale = dY * (round(x/scale) - x/scale)`` inside, ``dY * (qmin - zp)`` below and
  ``dY * (qmax - zp)`` above, summed per scale: the same estimator applied to the scale (LSQ,
  Esser et al. 2020), which equals the true derivative outside the range;
- no gradient for the integer zero point.

The estimator is not the derivative (between rounding steps that is 0), so finite differences
cannot check it; tests/test_quant_ops.py asserts its values by hand. Blocked fake quantization
(``block_size``) is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ops.base import (
    Attr,
    Example,
    LowerCtx,
    NodeView,
    OpDef,
    TensorType,
    elementwise_flops,
    nonfinite_examples,
    optional_inputs,
    rng_array,
)
from graphc.ops.quant import (
    as_float,
    check_quantize,
    dequantize,
    f32,
    grain_of,
    ir_like_x,
    quantize,
    sum_to_param,
    tie_inputs,
)
from graphc.ops.quant_lower import F32, check_since, emit_dequantize, emit_quantize, qrange

ATTRS = {"axis": Attr("int", 1, since=13)}


def _infer(in_types: list[TensorType | None], attrs: dict[str, Any],
           consts: list[np.ndarray | None]) -> list[TensorType]:
    check_quantize("FakeQuantizeLinear", in_types, attrs)
    return [TensorType(in_types[0].shape, F32)]


def _ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, s, z = optional_inputs(inputs, 3)
    grain = grain_of("FakeQuantizeLinear", x.shape, s.shape, attrs)
    dtype = np.dtype(z.dtype) if z is not None else np.dtype(np.uint8)
    return [dequantize(quantize(x, s, z, dtype, grain), s, z, grain)]


def _lower(ctx: LowerCtx, view: NodeView) -> None:
    check_since(ctx, view, ATTRS, "FakeQuantizeLinear")
    z = view.in_types[2] if len(view.in_types) > 2 else None
    dtype = np.dtype(z.dtype) if z is not None else np.dtype(np.uint8)
    x_shape = view.in_types[0].shape
    grain = grain_of("FakeQuantizeLinear", x_shape, view.in_types[1].shape, view.full_attrs)
    q = ctx.fresh(view.name + "_q")
    emit_quantize(ctx, view, view.inputs, q, dtype, view.name + "/quantize", grain)
    emit_dequantize(ctx, view, [q, *view.inputs[1:]], TensorType(x_shape, dtype),
                    view.outputs[0], view.name, grain)


def _vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Straight-through estimator: dx = dY inside [s (qmin - zp), s (qmax - zp)], else 0;
    dscale = dY * (round(x/s) - x/s) inside, dY * (qmin - zp) below, dY * (qmax - zp) above."""
    dy = grads[0]
    x, scale, zp = optional_inputs(ctx.inputs, 3)
    x_shape, p_shape = ctx.in_types[0].shape, ctx.in_types[1].shape
    grain = grain_of("FakeQuantizeLinear", x_shape, p_shape, ctx.attrs)
    qmin, qmax = qrange(ctx.in_types[2].dtype if zp is not None else np.uint8)
    s = ir_like_x(ctx, scale, x_shape, grain)
    low, high = ctx.const(np.float32(qmin), F32), ctx.const(np.float32(qmax), F32)
    if zp is not None:
        zf = ir_like_x(ctx, as_float(ctx, zp), x_shape, grain)
        low, high = ctx.op("Sub", low, zf), ctx.op("Sub", high, zf)
    below = ctx.op("Less", x, ctx.op("Mul", s, low))
    above = ctx.op("Greater", x, ctx.op("Mul", s, high))
    dx = ctx.op("Mul", dy, as_float(ctx, ctx.op("Not", ctx.op("Or", below, above))))
    v = ctx.op("Div", x, s)
    slope = ctx.op("Where", below, low,
                   ctx.op("Where", above, high, ctx.op("Sub", ctx.op("Round", v), v)))
    dscale = sum_to_param(ctx, ctx.op("Mul", dy, slope), x_shape, p_shape, grain)
    return [dx, dscale, None]


def _examples() -> tuple[Example, ...]:
    # The zero point is fed at run time in every example: the STE is not the derivative, and
    # the table-driven finite-difference test skips examples with an integer graph input.
    per_axis = rng_array((2, 3, 4), seed=61, low=-3.0, high=3.0)
    return (
        Example((tie_inputs(0.5, 128, np.uint8), f32(0.5), np.uint8(128)), {}, (1,), "ties-u8"),
        Example((tie_inputs(0.25, -3, np.int8), f32(0.25), np.int8(-3)), {}, (1,),
                "ties-i8-negative-zp"),
        Example((per_axis, f32([0.05, 0.02, 0.1]), np.array([-5, 0, 7], np.int8)), {"axis": 1},
                (1,), "per-axis"),
    )


OPS: list[OpDef] = [
    OpDef(
        name="FakeQuantizeLinear",
        doc="Quantize then dequantize with a straight-through gradient (graphc op, exported "
            "as QuantizeLinear + DequantizeLinear).",
        inputs=("x", "y_scale", "y_zero_point?"),
        outputs=("y",),
        attrs=ATTRS,
        infer=_infer,
        ref=_ref,
        lower=_lower,
        vjp=_vjp,
        flops=elementwise_flops(5),
        nonfinite=nonfinite_examples(_examples(), 0, 1, 2),
        examples=_examples(),
    ),
]
