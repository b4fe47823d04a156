"""How QuantizeLinear and DequantizeLinear are written in ONNX at each opset.

Up to opset 27 they are the ONNX nodes themselves. Trap: onnxruntime 1.32 has no kernel for
QuantizeLinear-28 and DequantizeLinear-28 (that version only adds float6 types), so from opset
28 on both are written as the arithmetic they compute: ``Cast(Round(clamp(x / scale)) + zp)``
with NaN sent to the low end as onnxruntime's kernel does, and ``Cast(Cast(x) - Cast(zp)) *
scale`` in int32 then float32. The numbers are the same, but onnxruntime's QDQ fusion no longer
sees the pattern: export a model meant to run int8 fast at an opset up to 27 (the default is 17).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from graphc.errors import ExportError
from graphc.ops.base import Attr, LowerCtx, NodeView, TensorType, onnx_dtype

F32 = np.dtype(np.float32)
# The last opset whose QuantizeLinear/DequantizeLinear onnxruntime 1.32 has a kernel for.
NATIVE_QDQ_MAX_OPSET = 27


def qrange(dtype: Any) -> tuple[int, int]:
    """Return (qmin, qmax) of an integer type."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


class Grain(NamedTuple):
    """How a scale maps onto x: ``kind`` is "tensor", "axis" or "block"."""

    kind: str
    axis: int = 0
    block: int = 0


def check_since(ctx: LowerCtx, view: NodeView, spec: dict[str, Attr], op: str) -> None:
    """Refuse an explicit attribute newer than the export opset (as the default lowering)."""
    for key in view.attrs:
        if spec[key].since > ctx.opset:
            raise ExportError(f"attribute {key} of {op} does not exist at opset {ctx.opset}",
                              expected=f"opset >= {spec[key].since}", got=ctx.opset,
                              hint=f"Export with --opset {spec[key].since} or newer.")


def _explicit(view: NodeView, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in view.attrs.items() if k in keys}


def _like_x(ctx: LowerCtx, base: str, name: str, x_shape: tuple[int, ...],
            grain: Grain) -> str:
    """Emit what makes parameter ``name`` broadcast against x; return its value name."""
    if grain.kind == "tensor":
        return name
    out = ctx.fresh(base)
    if grain.kind == "axis":
        shape = [1] * len(x_shape)
        shape[grain.axis] = x_shape[grain.axis]
        ctx.node("Reshape", [name, ctx.const(base + "_shape", np.array(shape, np.int64))],
                 [out])
    else:
        # Blocked: repeat each value block_size times along the axis, cut to x's length.
        index = np.arange(x_shape[grain.axis], dtype=np.int64) // grain.block
        ctx.node("Gather", [name, ctx.const(base + "_index", index)], [out],
                 axis=grain.axis)
    return out


def _emit(ctx: LowerCtx, base: str, op: str, inputs: list[str], **attrs: Any) -> str:
    out = ctx.fresh(base)
    ctx.node(op, inputs, [out], **attrs)
    return out


def emit_quantize(ctx: LowerCtx, view: NodeView, inputs: list[str], out: str, dtype: np.dtype,
                  name: str, grain: Grain) -> None:
    """Emit QuantizeLinear of ``inputs`` (x, scale, zero point or "") into ``out``: the ONNX
    node up to ``NATIVE_QDQ_MAX_OPSET``, its arithmetic after."""
    x, s, z = (list(inputs) + ["", ""])[:3]
    if ctx.opset <= NATIVE_QDQ_MAX_OPSET:
        keys = ("axis", "block_size", "saturate", "output_dtype")
        ctx.node("QuantizeLinear", [x, s, z] if z else [x, s], [out],
                 **_explicit(view, keys))
        return
    x_shape = view.in_types[0].shape
    base = name
    v = _emit(ctx, base + "_div", "Div", [x, _like_x(ctx, base + "_scale", s, x_shape, grain)])
    qmin, qmax = qrange(dtype)
    lo, hi = ctx.const(base + "_qmin", np.float32(qmin)), ctx.const(base + "_qmax",
                                                                       np.float32(qmax))
    zf = ""
    if z:
        zf = _emit(ctx, base + "_zp", "Cast", [_like_x(ctx, base + "_zp_x", z, x_shape, grain)],
                   to=onnx_dtype(F32))
        lo, hi = _emit(ctx, base + "_lo", "Sub", [lo, zf]), _emit(ctx, base + "_hi", "Sub",
                                                                  [hi, zf])
    v = _emit(ctx, base + "_nan", "Where", [_emit(ctx, base + "_isnan", "IsNaN", [v]), lo, v])
    v = _emit(ctx, base + "_round", "Round",
              [_emit(ctx, base + "_min", "Min", [_emit(ctx, base + "_max", "Max", [v, lo]), hi])])
    if zf:
        v = _emit(ctx, base + "_add", "Add", [v, zf])
    ctx.node("Cast", [v], [out], to=onnx_dtype(dtype))


def emit_dequantize(ctx: LowerCtx, view: NodeView, inputs: list[str], x_type: TensorType,
                    out: str, name: str, grain: Grain) -> None:
    """Emit DequantizeLinear of ``inputs`` (x, scale, zero point or "") into ``out``: the ONNX
    node up to ``NATIVE_QDQ_MAX_OPSET``, its arithmetic after."""
    x, s, z = (list(inputs) + ["", ""])[:3]
    if ctx.opset <= NATIVE_QDQ_MAX_OPSET:
        ctx.node("DequantizeLinear", [x, s, z] if z else [x, s], [out],
                 **_explicit(view, ("axis", "block_size")))
        return
    base = name
    i32 = onnx_dtype(np.int32)
    d = x if np.dtype(x_type.dtype) == np.int32 else _emit(ctx, base + "_x", "Cast", [x], to=i32)
    if z:
        zi = _emit(ctx, base + "_zp", "Cast", [_like_x(ctx, base + "_zp_x", z, x_type.shape,
                                                       grain)], to=i32)
        d = _emit(ctx, base + "_sub", "Sub", [d, zi])
    f = _emit(ctx, base + "_float", "Cast", [d], to=onnx_dtype(F32))
    ctx.node("Mul", [f, _like_x(ctx, base + "_scale", s, x_type.shape, grain)], [out])
