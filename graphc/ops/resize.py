"""Resize: nearest-neighbour, (bi/tri)linear and bicubic resampling (ONNX opset 13+ semantics,
as onnxruntime's CPU kernel computes them).

For each resized axis of input size ``n`` and output size ``m`` (``floor(n * scale)`` from
``scales``, or given by ``sizes`` with ``scale = m / n``), output index ``x`` reads the input at
the coordinate

- ``half_pixel``: ``(x + 0.5) / scale - 0.5``
- ``pytorch_half_pixel``: the same, but 0 when ``m == 1``
- ``align_corners``: ``x * (n - 1) / (m - 1)`` (0 when ``m == 1``)
- ``asymmetric``: ``x / scale``
- ``half_pixel_symmetric``: ``half_pixel`` shifted by ``n / 2 * (1 - m / (n * scale))``
- ``tf_crop_and_resize``: ``start * (n - 1) + x * (end - start) * (n - 1) / (m - 1)`` for the
  constant ``roi``'s ``start`` and ``end`` on that axis (the middle of the box when ``m == 1``);
  an output cell whose coordinate on any axis falls outside ``0..n-1`` is
  ``extrapolation_value``

computed in float32 as onnxruntime does. ``nearest`` rounds it by ``nearest_mode`` and clamps
it to ``0..n-1``; ``linear`` clamps it and mixes the two neighbours by distance; ``cubic``
mixes the four neighbours around it with Keys' weights (``cubic_coeff_a``), repeating the edge
outside the input, or with ``exclude_outside`` dropping those neighbours and rescaling the
others. A resize that keeps every axis's size at scale 1 is a copy, as onnxruntime and ONNX's
reference implementation compute it (NaN and infinities stay in their cells; with one axis
resized, an axis of scale 1 that the kernel covers is interpolated, its neighbours of weight 0
read). Each is a linear map along each axis (a matrix of 1, 2 or 4 weights per row), so the
gradient applies each axis's matrix transposed. The shape rule refuses what onnxruntime's CPU
kernel or graphc does not compute: linear (cubic) resizing of axes other than the innermost
two of a rank-2 or rank-4 input (or for linear three of a rank-3 or rank-5 one), and antialias
with nearest. ``antialias`` (opset 18: when downsampling, the filter stretched by
``1 / scale``), ``half_pixel_symmetric`` (opset 19) and the aspect-ratio policies ``not_larger``
and ``not_smaller`` (opset 18: one scale for every axis in ``sizes``) are written at those
opsets only.
"""

from __future__ import annotations

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
    normalize_axis,
    optional_inputs,
    rng_array,
    with_nonfinite,
)
from graphc.ops.resize_taps import F32, axis_matrix, axis_taps, is_identity, outside_cells

MODES = ("nearest", "linear", "cubic")
COORDINATES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_crop_and_resize", "half_pixel_symmetric")
POLICIES = ("stretch", "not_larger", "not_smaller")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
# float64 too: the interpreter computes it (gradient checks run in float64), though
# onnxruntime's CPU kernel has no float64 Resize.
DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64), np.dtype(np.int32),
          np.dtype(np.int8), np.dtype(np.uint8))
# onnxruntime's linear and cubic kernels: rank -> number of innermost axes they may resize.
INNER_AXES = {"linear": {2: 2, 3: 3, 4: 2, 5: 3}, "cubic": {2: 2, 4: 2}}


def _check_attrs(attrs: dict[str, Any]) -> None:
    for key, allowed in (("mode", MODES), ("coordinate_transformation_mode", COORDINATES),
                         ("nearest_mode", NEAREST_MODES),
                         ("keep_aspect_ratio_policy", POLICIES)):
        if attrs[key] not in allowed:
            raise OpError(f"Resize {key} {attrs[key]!r} is not supported",
                          expected=" or ".join(repr(a) for a in allowed), got=repr(attrs[key]),
                          hint="graphc computes nearest, linear and cubic resizing.")
    if attrs["antialias"] and attrs["mode"] == "nearest":
        raise OpError("Resize with antialias needs mode 'linear' or 'cubic'",
                      expected="antialias=0 for nearest", got=f"antialias={attrs['antialias']}")


Plan = tuple[tuple[int, ...], list[float], list[tuple[float, float]] | None]


def _roi(roi_type: TensorType | None, roi: np.ndarray | None, rank: int, axes: list[int]
         ) -> list[tuple[float, float]]:
    """Return tf_crop_and_resize's (start, end) per axis, as fractions of the input."""
    if roi_type is None or roi is None or roi.dtype.kind != "f" or roi.shape != (
            2 * len(axes),):
        raise ShapeError("Resize with tf_crop_and_resize needs a constant roi",
                         expected=f"({2 * len(axes)},) floats: the starts, then the ends",
                         got="a computed value" if roi_type is not None and roi is None else
                         "nothing" if roi_type is None else f"{roi.shape} {roi.dtype}")
    box = [(0.0, 1.0)] * rank
    for k, axis in enumerate(axes):
        box[axis] = (float(F32(roi[k])), float(F32(roi[k + len(axes)])))
    return box


def _plan(in_types: list[TensorType | None], attrs: dict[str, Any],
          consts: list[np.ndarray | None]) -> Plan:
    """Return the output shape, the per-axis scale (float32, as onnxruntime uses it) and for
    tf_crop_and_resize the region of interest per axis."""
    _check_attrs(attrs)
    x, roi_type, scales_type, sizes_type = optional_inputs(in_types, 4)
    _, roi, scales, sizes = optional_inputs(consts, 4)
    shape = x.shape
    rank = len(shape)
    if np.dtype(x.dtype) not in DTYPES:
        raise ShapeError("Resize does not take this dtype",
                         expected=", ".join(DTYPE_SHORT[d] for d in DTYPES),
                         got=DTYPE_SHORT.get(np.dtype(x.dtype), str(x.dtype)))
    axes = list(range(rank)) if attrs["axes"] is None else [
        normalize_axis(a, rank, "Resize axis") for a in attrs["axes"]]
    if len(set(axes)) != len(axes):
        raise ShapeError("Resize axes repeat an axis", expected="distinct axes",
                         got=list(attrs["axes"]))
    given_scales = scales_type is not None and scales_type.size > 0
    given_sizes = sizes_type is not None
    if given_scales == given_sizes:
        raise ShapeError("Resize needs either scales or sizes", expected="exactly one of them",
                         got="both" if given_scales else "neither")
    values = scales if given_scales else sizes
    if values is None:
        raise ShapeError("Resize scales and sizes must be constants",
                         expected="an initializer", got="a computed value",
                         hint="graphc shapes are static: give them as constants.")
    # ONNX's scales are float32; a float64 graph (gradient checks) may hold them as float64.
    want = ("f32", "f64") if given_scales else ("i64",)
    got = DTYPE_SHORT.get(values.dtype, str(values.dtype))
    if got not in want or values.shape != (len(axes),):
        raise ShapeError(f"Resize {'scales' if given_scales else 'sizes'} must hold one "
                         f"{want[0]} per resized axis", expected=f"({len(axes)},) {want[0]}",
                         got=f"{values.shape} {got}")
    box = _roi(roi_type, roi, rank, axes) if attrs["coordinate_transformation_mode"] == (
        "tf_crop_and_resize") else None
    out, factor = list(shape), [1.0] * rank
    for axis, v in zip(axes, values.tolist(), strict=True):
        if given_scales:
            if not v > 0:
                raise ShapeError("Resize scale is not positive", expected="scales > 0",
                                 got=values.tolist())
            # floor(size * scale), also with a roi (as ONNX's shape inference, its reference
            # and onnxruntime compute it), in float32.
            out[axis] = int(np.floor(F32(shape[axis]) * F32(v)))
            factor[axis] = float(F32(v))
        else:
            if v < 1:
                raise ShapeError("Resize size is not positive", expected="sizes >= 1",
                                 got=values.tolist())
            out[axis] = int(v)
            factor[axis] = float(F32(v) / F32(shape[axis]))
        if out[axis] < 1:
            raise ShapeError(f"Resize gives axis {axis} no elements", expected="size >= 1",
                             got=f"{shape[axis]} * {v}")
    policy = attrs["keep_aspect_ratio_policy"]
    if given_sizes and policy != "stretch":
        # One scale for every listed axis, the smallest (not_larger) or largest (not_smaller)
        # of sizes / input sizes; each size is then round_coordinate(scale * input size).
        ratios = [F32(int(v)) / F32(shape[a]) for a, v in zip(axes, values.tolist(), strict=True)]
        common = F32(min(ratios) if policy == "not_larger" else max(ratios))
        for axis in axes:
            product = common * F32(shape[axis])
            out[axis] = max(1, int(np.floor(product + F32(0.5))))  # roundf: halves up here
            factor[axis] = float(common)
    mode = attrs["mode"]
    if mode != "nearest":
        if np.dtype(x.dtype).kind != "f":
            raise ShapeError(f"{mode} Resize needs a floating-point input",
                             expected="f32 or f16", got=DTYPE_SHORT[np.dtype(x.dtype)],
                             hint="Cast to f32 first.")
        resized = [k for k in range(rank) if out[k] != shape[k] or factor[k] != 1.0 or (
            box is not None and box[k] != (0.0, 1.0))]
        inner = INNER_AXES[mode].get(rank, 0)
        if any(k < rank - inner for k in resized):
            ranks = " or ".join(str(r) for r in INNER_AXES[mode])
            raise ShapeError(f"{mode} Resize of these axes has no onnxruntime kernel",
                             expected=f"only the innermost {inner} axes resized" if inner else
                             f"an input of rank {ranks}", got=f"axes {resized} of shape {shape}",
                             hint="Resize with mode 'nearest', or transpose the axes inward.")
    return tuple(out), factor, box


def _infer(in_types: list[TensorType | None], attrs: dict[str, Any],
           consts: list[np.ndarray | None]) -> list[TensorType]:
    shape, _, _ = _plan(in_types, attrs, consts)
    return [TensorType(shape, in_types[0].dtype)]


def _ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    types = [None if a is None else TensorType(a.shape, a.dtype) for a in inputs]
    shape, factor, box = _plan(types, attrs, list(inputs))
    boxes = [None] * x.ndim if box is None else box
    identity = [is_identity(n, m, factor[axis], boxes[axis])
                for axis, (n, m) in enumerate(zip(x.shape, shape, strict=True))]
    if all(identity):
        # Every axis keeps its size at scale 1: a copy, in onnxruntime and in ONNX's reference
        # implementation, so an infinity or NaN stays in its cell (neighbours of weight 0 are
        # not read).
        return [x.copy()]
    y = x
    outside = np.zeros((1,) * x.ndim, bool)
    # Otherwise onnxruntime's linear and cubic kernels interpolate every axis they cover, also
    # one of scale 1: there the neighbours have weight 0, and an infinity or NaN there gives
    # NaN.
    covered = x.ndim - INNER_AXES.get(attrs["mode"], {}).get(x.ndim, 0)
    for axis, (n, m) in enumerate(zip(x.shape, shape, strict=True)):
        if identity[axis] and axis < covered:
            continue
        where = [1] * x.ndim
        where[axis] = m
        out = outside_cells(n, m, factor[axis], attrs, boxes[axis])
        if out is not None:
            outside = outside | out.reshape(where)
        taps = axis_taps(n, m, factor[axis], attrs, boxes[axis])
        if attrs["mode"] == "nearest":
            y = np.take(y, taps[0][0], axis=axis)
            continue
        y = sum(np.take(y, idx, axis=axis).astype(np.float64) * w.reshape(where)
                for idx, w in taps)
    y = np.asarray(y).astype(x.dtype)
    if outside.any():
        y = np.where(outside, np.asarray(attrs["extrapolation_value"], x.dtype), y)
    return [y]


def _lower(ctx: LowerCtx, view: NodeView) -> None:
    """One Resize node; below opset 18, ``axes`` becomes full-rank scales or sizes (and roi)."""
    attrs = dict(view.attrs)
    axes = attrs.get("axes")
    newer = {("coordinate_transformation_mode", "half_pixel_symmetric"): 19,
             ("keep_aspect_ratio_policy", "not_larger"): 18,
             ("keep_aspect_ratio_policy", "not_smaller"): 18, ("antialias", 1): 18}
    for (key, value), since in newer.items():
        if view.full_attrs[key] == value and ctx.opset < since:
            raise ExportError(f"Resize {key} {value!r} does not exist at opset {ctx.opset}",
                              expected=f"opset >= {since}", got=ctx.opset,
                              hint=f"Export with --opset {since} or newer.")
    for key in ("antialias", "keep_aspect_ratio_policy"):
        if key in attrs and ctx.opset < 18:
            attrs.pop(key)  # their defaults: the same as leaving them out
    inputs = list(view.inputs)
    if axes is not None and ctx.opset < 18:
        attrs.pop("axes")
        rank = len(view.in_types[0].shape)
        scales = view.consts[2] if len(view.consts) > 2 else None
        port = 2 if scales is not None and scales.size else 3
        given = view.consts[port]
        full = np.ones(rank, F32) if port == 2 else np.array(view.in_types[0].shape, np.int64)
        roi = view.consts[1] if len(view.consts) > 1 else None
        box = None if roi is None else np.concatenate([np.zeros(rank), np.ones(rank)]).astype(
            roi.dtype)
        for k, a in enumerate(axes):
            axis = normalize_axis(a, rank, "Resize axis")
            full[axis] = given[k]
            if box is not None:
                box[axis], box[axis + rank] = roi[k], roi[k + len(axes)]
        inputs = (inputs + [""] * 4)[:4]
        inputs[port] = ctx.const(f"{view.name}.{'scales' if port == 2 else 'sizes'}", full)
        if box is not None:
            inputs[1] = ctx.const(f"{view.name}.roi", box)
        inputs = inputs[:port + 1]
    ctx.node("Resize", inputs, view.outputs, **attrs)


def _vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Resizing multiplies each axis by a constant (m, n) matrix A; dX applies A^T to dY on
    each resized axis (MatMul on the last two, through a Transpose elsewhere)."""
    g = grads[0]
    x, dtype = ctx.in_types[0], ctx.out_types[0].dtype
    consts = [ctx.g.const_value(v) for v in ctx.inputs]
    shape, factor, box = _plan(ctx.in_types, ctx.attrs, consts)
    boxes = [None] * len(shape) if box is None else box
    rank = len(shape)
    for axis, (n, m) in enumerate(zip(x.shape, shape, strict=True)):
        if is_identity(n, m, factor[axis], boxes[axis]):
            continue
        a = axis_matrix(n, m, factor[axis], ctx.attrs, boxes[axis]).astype(dtype)
        if axis == rank - 1:
            g = ctx.op("MatMul", g, ctx.const(a, dtype))
        elif axis == rank - 2:
            g = ctx.op("MatMul", ctx.const(a.T.copy(), dtype), g)
        else:
            perm = [k for k in range(rank) if k != axis] + [axis]
            moved = ctx.op("MatMul", ctx.op("Transpose", g, perm=perm), ctx.const(a, dtype))
            g = ctx.op("Transpose", moved, perm=[int(k) for k in np.argsort(perm)])
    return [g, None, None, None]


def _examples() -> tuple[Example, ...]:
    x = rng_array((1, 2, 3, 4), seed=1)
    scales = lambda *v: np.array(v, np.float32)  # noqa: E731
    sizes = lambda *v: np.array(v, np.int64)  # noqa: E731
    nearest = {"mode": "nearest"}
    linear = {"mode": "linear"}
    return (
        # F.interpolate(scale_factor=2, mode="nearest") as PyTorch exports it.
        Example((x, None, scales(1, 1, 2, 2)), {**nearest, "coordinate_transformation_mode":
                                                "asymmetric", "nearest_mode": "floor"},
                consts=(2,), name="nearest-torch"),
        Example((x, None, scales(1, 1, 1.5, 0.5)), nearest, consts=(2,),
                name="nearest-half-pixel"),
        Example((rng_array((2, 5, 3), seed=2), None, None, sizes(2, 8, 2)),
                {**nearest, "nearest_mode": "round_prefer_ceil"}, consts=(3,),
                name="nearest-sizes-ceil"),
        Example((x, None, scales(1, 1, 2.5, 1.75)), {**nearest, "nearest_mode": "ceil",
                                                     "coordinate_transformation_mode":
                                                     "align_corners"}, consts=(2,),
                name="nearest-align-corners"),
        # F.interpolate(scale_factor=2, mode="bilinear", align_corners=False).
        Example((x, None, scales(1, 1, 2, 2)), {**linear, "coordinate_transformation_mode":
                                                "pytorch_half_pixel"}, consts=(2,),
                name="bilinear-torch"),
        Example((x, None, None, sizes(1, 2, 5, 3)), linear, consts=(3,),
                name="bilinear-sizes"),
        Example((x, None, scales(1, 1, 0.5, 1.5)), {**linear, "coordinate_transformation_mode":
                                                    "align_corners"}, consts=(2,),
                name="bilinear-align-corners"),
        Example((rng_array((3, 4), seed=3), None, scales(1.5, 0.75)),
                {**linear, "coordinate_transformation_mode": "asymmetric"}, consts=(2,),
                name="linear-2d"),
        Example((rng_array((2, 3, 2), seed=4), None, scales(2, 1, 3)), linear, consts=(2,),
                name="trilinear"),
        # F.interpolate(scale_factor=2, mode="bicubic", align_corners=False).
        Example((x, None, scales(1, 1, 2, 2)), {"mode": "cubic", "cubic_coeff_a": -0.75,
                                                "coordinate_transformation_mode":
                                                "pytorch_half_pixel"}, consts=(2,),
                name="bicubic-torch"),
        Example((x, None, None, sizes(1, 2, 2, 7)), {"mode": "cubic", "exclude_outside": 1,
                                                     "coordinate_transformation_mode":
                                                     "align_corners"}, consts=(3,),
                name="bicubic-exclude-outside"),
        Example((rng_array((5, 4), seed=5), None, scales(0.6, 1.5)),
                {"mode": "cubic", "coordinate_transformation_mode": "asymmetric"}, consts=(2,),
                name="cubic-2d-default-a"),
        # TensorFlow's crop_and_resize: a box of the input, cells outside it extrapolated.
        Example((rng_array((1, 1, 4, 4), seed=6), np.array([0, 0, 0.4, 0.6, 1, 1, 0.6, 0.8],
                                                           np.float32), None, sizes(1, 1, 3, 3)),
                {**linear, "coordinate_transformation_mode": "tf_crop_and_resize"},
                consts=(1, 3), name="linear-tf-crop"),
        Example((x, np.array([-0.2, 0.3, 1.2, 0.9], np.float32), scales(2, 1.5)),
                {**nearest, "coordinate_transformation_mode": "tf_crop_and_resize",
                 "extrapolation_value": 10.0, "axes": (2, 3)}, consts=(1, 2),
                name="nearest-tf-crop-extrapolated"),
        Example((x, np.array([0, 0, 0.1, -0.1, 1, 1, 0.7, 0.95], np.float32),
                 scales(1, 1, 2, 1.5)), {"mode": "cubic", "coordinate_transformation_mode":
                                         "tf_crop_and_resize", "extrapolation_value": -1.0},
                consts=(1, 2), name="cubic-tf-crop"),
        # opset 18's axes (lowered to full-rank scales below opset 18).
        Example((x, None, scales(2, 3)), {**linear, "axes": (-2, 3)}, consts=(2,),
                name="linear-axes"),
        Example((np.arange(12, dtype=np.uint8).reshape(1, 1, 3, 4), None, scales(1, 1, 2, 2)),
                nearest, consts=(2,), name="nearest-uint8"),
        # Sizes equal to the input's: a copy (found by graphc.fuzz: NaN spread to neighbours).
        Example((x, None, None, sizes(1, 2, 3, 4)), linear, consts=(3,),
                name="linear-same-size"),
        Example((rng_array((3, 5), seed=7), None, scales(1, 1)),
                {"mode": "cubic", "exclude_outside": 1, "coordinate_transformation_mode":
                 "asymmetric"}, consts=(2,), name="cubic-same-scale"),
    )


RESIZE = OpDef(
    name="Resize",
    doc="Resample to new sizes by nearest-neighbour, (bi/tri)linear or bicubic interpolation.",
    inputs=("X", "roi?", "scales?", "sizes?"),
    outputs=("Y",),
    attrs={
        "antialias": Attr("int", 0, since=18),
        "axes": Attr("ints", None, since=18),
        "coordinate_transformation_mode": Attr("str", "half_pixel"),
        "cubic_coeff_a": Attr("float", -0.75),
        "exclude_outside": Attr("int", 0),
        "extrapolation_value": Attr("float", 0.0),
        "keep_aspect_ratio_policy": Attr("str", "stretch", since=18),
        "mode": Attr("str", "nearest"),
        "nearest_mode": Attr("str", "round_prefer_floor"),
    },
    infer=_infer,
    ref=_ref,
    examples=_examples(),
    lower=_lower,
    flops=lambda view: 4 * view.out_types[0].size,
    vjp=_vjp,
)

OPS: list[OpDef] = [with_nonfinite(RESIZE, 0, 1, 4, 5, 8, 9, 10, 11, 12, 13, 14, 17, 18)]
