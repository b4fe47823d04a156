"""SpaceToDepth and DepthToSpace: blocks of pixels moved into channels and back (ONNX 13+).

``SpaceToDepth(x, blocksize=b)`` on NCHW makes each b x b block of pixels b^2 channels. In mode
``DCR`` (the default) output channel ``(i * b + j) * C + c`` at (h, w) holds
``x[c, h * b + i, w * b + j]``; in mode ``CRD`` (an attribute from opset 28; below it the
export writes Reshape, Transpose, Reshape) channel ``c * b^2 + i * b + j`` does, the order of
a pixel shuffle. ``DepthToSpace`` in the same mode undoes it. Neither computes anything, so
every dtype moves as it is, and each one's gradient is the other's move.

quantize-int8 uses SpaceToDepth on uint8 to run a strided stem convolution of few channels
(resnet18's 7x7 stride 2 on 3 channels) as a stride-1 convolution of b^2 times the channels,
which onnxruntime's int8 kernels run faster (graphc.compress.int8).

>>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
>>> y = space_to_depth(x, 2)
>>> y[0, :, 0, 0].tolist()  # the top-left 2x2 block, one pixel per channel
[0.0, 1.0, 4.0, 5.0]
>>> bool(np.array_equal(_depth_to_space(y, 2, "DCR"), x))
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.errors import ShapeError
from graphc.ops.base import (
    Attr,
    Example,
    LowerCtx,
    NodeView,
    OpDef,
    TensorType,
    elementwise_flops,
    rng_array,
    with_nonfinite,
)

MODES = ("DCR", "CRD")


# The axes of (n, c, h / b, b, w / b, b) in SpaceToDepth's output order, by mode.
S2D_PERM = {"DCR": (0, 3, 5, 1, 2, 4), "CRD": (0, 1, 3, 5, 2, 4)}
# SpaceToDepth's mode attribute is new in this opset.
S2D_MODE_OPSET = 28


def space_to_depth(x: np.ndarray, b: int, mode: str = "DCR") -> np.ndarray:
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // b, b, w // b, b).transpose(S2D_PERM[mode])
    return blocks.reshape(n, c * b * b, h // b, w // b)


def _depth_to_space(x: np.ndarray, b: int, mode: str) -> np.ndarray:
    n, c, h, w = x.shape
    if mode == "DCR":
        moved = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        moved = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return moved.reshape(n, c // (b * b), h * b, w * b)


def _check(x: TensorType, attrs: dict[str, Any], op: str) -> int:
    b = attrs["blocksize"]
    if len(x.shape) != 4:
        raise ShapeError(f"{op} takes NCHW input", expected="rank 4", got=x.shape)
    if b < 1:
        raise ShapeError(f"{op} blocksize must be positive", expected=">= 1", got=b)
    if attrs["mode"] not in MODES:
        raise ShapeError(f"{op} mode is DCR or CRD", expected=" or ".join(MODES),
                         got=attrs["mode"])
    return b


def _s2d_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
               consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    b = _check(x, attrs, "SpaceToDepth")
    n, c, h, w = x.shape
    if h % b or w % b:
        raise ShapeError("SpaceToDepth needs height and width divisible by blocksize",
                         expected=f"multiples of {b}", got=(h, w),
                         hint="Pad the input to a multiple of the block first.")
    return [TensorType((n, c * b * b, h // b, w // b), x.dtype)]


def _d2s_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
               consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    b = _check(x, attrs, "DepthToSpace")
    n, c, h, w = x.shape
    if c % (b * b):
        raise ShapeError("DepthToSpace needs channels divisible by blocksize squared",
                         expected=f"a multiple of {b * b}", got=c)
    return [TensorType((n, c // (b * b), h * b, w * b), x.dtype)]


def _s2d_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.ascontiguousarray(space_to_depth(inputs[0], attrs["blocksize"], attrs["mode"]))]


def _s2d_lower(ctx: LowerCtx, view: NodeView) -> None:
    """One SpaceToDepth node; mode CRD below opset 28 as Reshape, Transpose, Reshape."""
    mode, b = view.full_attrs["mode"], view.full_attrs["blocksize"]
    if ctx.opset >= S2D_MODE_OPSET or mode == "DCR":
        attrs = {"blocksize": b}
        if "mode" in view.attrs and ctx.opset >= S2D_MODE_OPSET:
            attrs["mode"] = mode
        ctx.node("SpaceToDepth", view.inputs, view.outputs, **attrs)
        return
    _, c, h, w = view.in_types[0].shape
    split, moved = ctx.fresh(f"{view.name}_split"), ctx.fresh(f"{view.name}_moved")
    # 0: the batch as it comes (a file with a free batch dimension runs at any batch size).
    shape = ctx.const(f"{view.name}.split_shape",
                      np.array([0, c, h // b, b, w // b, b], np.int64))
    ctx.node("Reshape", [view.inputs[0], shape], [split])
    ctx.node("Transpose", [split], [moved], perm=list(S2D_PERM["CRD"]))
    out_shape = ctx.const(f"{view.name}.shape", np.array([0, c * b * b, h // b, w // b],
                                                         np.int64))
    ctx.node("Reshape", [moved, out_shape], view.outputs)


def _d2s_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.ascontiguousarray(_depth_to_space(inputs[0], attrs["blocksize"], attrs["mode"]))]


def _s2d_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """DepthToSpace in the same mode is SpaceToDepth's inverse."""
    return [ctx.op("DepthToSpace", grads[0], blocksize=ctx.attrs["blocksize"],
                   mode=ctx.attrs["mode"])]


def _d2s_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """SpaceToDepth in the same mode is DepthToSpace's inverse."""
    return [ctx.op("SpaceToDepth", grads[0], blocksize=ctx.attrs["blocksize"],
                   mode=ctx.attrs["mode"])]


def _examples(shape: tuple[int, ...], seed: int, **attrs: Any) -> list[Example]:
    return [Example(inputs=(rng_array(shape, seed=seed),), attrs=attrs,
                    name="-".join(f"{k}-{v}" for k, v in attrs.items()) or "default")]


SPACE_TO_DEPTH = with_nonfinite(OpDef(
    name="SpaceToDepth",
    vjp=_s2d_vjp,
    doc="Move each blocksize x blocksize block of pixels into channels (mode DCR or CRD).",
    inputs=("input",),
    outputs=("output",),
    attrs={"blocksize": Attr("int"), "mode": Attr("str", "DCR")},
    infer=_s2d_infer,
    ref=_s2d_ref,
    lower=_s2d_lower,
    flops=elementwise_flops(0),
    examples=(*_examples((2, 3, 4, 6), 1, blocksize=2),
              *_examples((1, 2, 6, 3), 2, blocksize=3),
              *_examples((2, 2, 4, 2), 6, blocksize=2, mode="CRD"),
              Example(inputs=(np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4),),
                      attrs={"blocksize": 2}, name="uint8")),
), 0)

DEPTH_TO_SPACE = with_nonfinite(OpDef(
    name="DepthToSpace",
    vjp=_d2s_vjp,
    doc="Move channels into blocksize x blocksize blocks of pixels (mode DCR or CRD).",
    inputs=("input",),
    outputs=("output",),
    attrs={"blocksize": Attr("int"), "mode": Attr("str", "DCR")},
    infer=_d2s_infer,
    ref=_d2s_ref,
    flops=elementwise_flops(0),
    examples=(*_examples((2, 8, 3, 2), 3, blocksize=2),
              *_examples((1, 18, 2, 2), 4, blocksize=3, mode="CRD"),
              *_examples((2, 12, 2, 3), 5, blocksize=2, mode="DCR")),
), 1)

OPS = [SPACE_TO_DEPTH, DEPTH_TO_SPACE]
