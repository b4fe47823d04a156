"""Sliding-window arithmetic shared by Conv, ConvTranspose, the pools and Im2Col, for 1, 2 and 3
spatial axes (inputs (N, C, L), (N, C, H, W) and (N, C, D, H, W)).

``window(op, sizes, kernel, attrs)`` gives, per spatial axis, where the window goes: its
stride, dilation, the pads at the begin and the end (explicit, or from ``auto_pad``) and the
output size. Shape rules, numpy references and gradient rules all read it, so the three agree.
Cases where onnxruntime refuses or departs from the ONNX text are refused with an OpError:
``auto_pad`` SAME with dilations, and SAME pooling that would need negative pads.

>>> w = window("Conv", (7,), (3,), {"strides": [2], "pads": [1, 1]})
>>> w.out, w.begin, w.end
((4,), (1,), (1,))
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from graphc.errors import OpError, ShapeError, unknown

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
SPATIAL_RANKS = (1, 2, 3)
AXES = {1: "(L)", 2: "(H, W)", 3: "(D, H, W)"}


class Window(NamedTuple):
    """Where a sliding window goes: one entry per spatial axis."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begin: tuple[int, ...]
    end: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def extent(self) -> tuple[int, ...]:
        """The span of one dilated window."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations, strict=True))

    @property
    def rank(self) -> int:
        return len(self.kernel)

    def taps(self) -> Iterator[tuple[int, ...]]:
        """Every kernel tap (one index per spatial axis), in row-major order."""
        return itertools.product(*(range(k) for k in self.kernel))


def need_spatial(op: str, rank: int) -> int:
    """Return the number of spatial axes of a rank-``rank`` (N, C, ...) input, or raise."""
    if rank - 2 not in SPATIAL_RANKS:
        raise ShapeError(f"{op} needs 1, 2 or 3 spatial axes",
                         expected="rank 3 (N, C, L), 4 (N, C, H, W) or 5 (N, C, D, H, W)",
                         got=f"rank {rank}")
    return rank - 2


def spatial(op: str, attrs: dict[str, Any], key: str, default: int, minimum: int,
            k: int) -> tuple[int, ...]:
    """Return an ints attribute with one value per spatial axis (empty: ``default`` on each)."""
    value = attrs.get(key)
    if not value:
        return (default,) * k
    if len(value) != k:
        raise OpError(f"{op} attribute {key} needs one value per spatial axis",
                      expected=f"{k} values {AXES.get(k, '')}".rstrip(), got=list(value))
    if min(value) < minimum:
        raise OpError(f"{op} attribute {key} is out of range", expected=f"values >= {minimum}",
                      got=list(value))
    # Checked attributes are tuples of ints already; this path is hot in shape inference.
    return value if type(value) is tuple else tuple(int(v) for v in value)


def explicit_pads(op: str, attrs: dict[str, Any], k: int,
                  key: str = "pads") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return ``(begins, ends)`` from ONNX pads [x1_begin, x2_begin, ..., x1_end, x2_end, ...]."""
    value = attrs.get(key)
    if not value:
        zeros = (0,) * k
        return zeros, zeros
    if len(value) != 2 * k:
        raise OpError(f"{op} attribute {key} needs a begin and an end per spatial axis",
                      expected=f"{2 * k} values (the {k} begins, then the {k} ends)",
                      got=list(value))
    if min(value) < 0:
        raise OpError(f"{op} attribute {key} must not be negative", expected="values >= 0",
                      got=list(value), hint="Crop with Slice (or Pad with negative pads).")
    value = tuple(int(v) for v in value) if type(value) is not tuple else value
    return value[:k], value[k:]


def window(op: str, sizes: tuple[int, ...], kernel: tuple[int, ...], attrs: dict[str, Any],
           ceil_mode: bool = False) -> Window:
    """Return the window of ``op`` over input spatial sizes ``sizes``, honouring ``auto_pad``.

    Raises ShapeError when the window does not fit the (padded) input, and OpError for the
    ``auto_pad`` cases that onnxruntime refuses or computes against the ONNX text.
    """
    k = len(kernel)
    strides = spatial(op, attrs, "strides", 1, 1, k)
    dilations = spatial(op, attrs, "dilations", 1, 1, k)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        raise unknown(f"{op} auto_pad", auto_pad, AUTO_PADS, cls=OpError)
    same = auto_pad in ("SAME_UPPER", "SAME_LOWER")
    if same and any(d != 1 for d in dilations):
        # onnxruntime's Conv refuses this; its pools size the pads from the undilated kernel.
        raise OpError(f"{op} with auto_pad {auto_pad} and dilations is not supported",
                      expected="dilations of 1 with SAME padding", got=list(dilations),
                      hint="Give explicit pads (auto_pad NOTSET) instead.")
    explicit = explicit_pads(op, attrs, k)
    begin: list[int] = []
    end: list[int] = []
    out: list[int] = []
    for axis in range(k):
        size, kk, s, d = sizes[axis], kernel[axis], strides[axis], dilations[axis]
        extent = (kk - 1) * d + 1
        if same:
            n_out = -(-size // s)
            total = (n_out - 1) * s + extent - size
            if total < 0 and op not in ("Conv", "Im2Col"):
                # The ONNX text gives negative pads here; onnxruntime's MaxPool and
                # AveragePool-11 refuse them and AveragePool-19 crops the start instead.
                raise OpError(
                    f"{op} with auto_pad {auto_pad} would need negative pads",
                    expected=f"stride <= kernel on spatial axis {axis}, or size {size} "
                             "a multiple of the stride",
                    got=f"stride {s}, kernel {extent}",
                    hint="Give explicit pads (auto_pad NOTSET) or use auto_pad VALID.",
                )
            total = max(0, total)
            small, large = total // 2, total - total // 2
            b, e = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        else:
            b, e = (explicit[0][axis], explicit[1][axis]) if auto_pad == "NOTSET" else (0, 0)
            span = size + b + e - extent
            if ceil_mode:
                # With ceil_mode a window may overhang a padded input smaller than itself.
                n_out = -(-span // s) + 1
                # Trap: onnxruntime and onnx.reference drop a last window that would start in
                # the end padding; onnx 1.23's C++ shape inference keeps it (one more output).
                if (n_out - 1) * s >= size + b:
                    n_out -= 1
            else:
                n_out = span // s + 1
        if n_out < 1:
            raise ShapeError(
                f"the {op} window does not fit the padded input",
                expected=f"padded size >= dilated kernel {extent} on spatial axis {axis}",
                got=f"size {size} + pads {b}+{e}",
                hint="Use a smaller kernel or dilation, or pad the input.",
            )
        begin.append(b)
        end.append(e)
        out.append(n_out)
    return Window(tuple(kernel), strides, dilations, tuple(begin), tuple(end), tuple(out))


def padded(x: np.ndarray, win: Window, fill: Any) -> np.ndarray:
    """Return ``x`` padded so that every window tap of ``win`` indexes inside it."""
    widths = [(0, 0)] * (x.ndim - win.rank)
    for axis in range(win.rank):
        need = (win.out[axis] - 1) * win.strides[axis] + win.extent[axis]
        size = x.shape[x.ndim - win.rank + axis]
        widths.append((win.begin[axis], max(0, need - size - win.begin[axis])))
    return np.pad(x, widths, mode="constant", constant_values=fill)


def tap_slices(win: Window, tap: tuple[int, ...]) -> tuple[slice, ...]:
    """The slices, per spatial axis, of the padded input that kernel ``tap`` reads at every
    output position."""
    return tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                 for t, d, o, s in zip(tap, win.dilations, win.out, win.strides, strict=True))


def all_tap_slices(win: Window) -> Iterator[tuple[slice, ...]]:
    """``tap_slices`` of every kernel tap, in the row-major order of ``Window.taps``."""
    per_axis = [[slice(t * d, t * d + (o - 1) * s + 1, s) for t in range(k)]
                for k, d, o, s in zip(win.kernel, win.dilations, win.out, win.strides,
                                      strict=True)]
    return itertools.product(*per_axis)


def tap(xp: np.ndarray, win: Window, *index: int) -> np.ndarray:
    """Return the strided view of the padded input read by kernel tap ``index``."""
    return xp[(slice(None), slice(None), *tap_slices(win, index))]


def tap_positions(win: Window, axis: int) -> np.ndarray:
    """Return, per output position and kernel tap on one axis, the input coordinate it reads."""
    return (np.arange(win.out[axis])[:, None] * win.strides[axis] - win.begin[axis]
            + np.arange(win.kernel[axis])[None, :] * win.dilations[axis])


def outer_and(masks: list[np.ndarray]) -> np.ndarray:
    """Return the k-D AND of one 1-D boolean mask per axis."""
    out = masks[0]
    for m in masks[1:]:
        out = out[..., None] & m
    return out


def outer_product(vectors: list[np.ndarray]) -> np.ndarray:
    """Return the k-D product of one 1-D vector per axis."""
    out = vectors[0]
    for v in vectors[1:]:
        out = np.multiply.outer(out, v)
    return out


def transpose_window(sizes: tuple[int, ...], kernel: tuple[int, ...],
                     attrs: dict[str, Any]) -> tuple[Window, tuple[int, ...]]:
    """Return the window of a ConvTranspose (``out`` = its output size, ``begin``/``end`` = the
    pads cropped from the full output) and its output_padding.

    The full output is ``stride*(in-1) + output_padding + (k-1)*dilation + 1`` per axis.
    ``output_shape`` fixes the output size and ``auto_pad`` SAME makes it ``in * stride``;
    either crops the difference, with the odd cell at the end for SAME_UPPER and at the begin
    otherwise (explicit pads are then ignored), as the ONNX text says and onnxruntime computes.
    An ``output_shape`` up to ``stride - 1`` cells longer than the full output adds cells of
    zeros at the end (``end`` is then negative).
    """
    op = "ConvTranspose"
    k = len(kernel)
    strides = spatial(op, attrs, "strides", 1, 1, k)
    dilations = spatial(op, attrs, "dilations", 1, 1, k)
    out_pad = spatial(op, attrs, "output_padding", 0, 0, k)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        raise unknown(f"{op} auto_pad", auto_pad, AUTO_PADS, cls=OpError)
    if any(p >= s for p, s in zip(out_pad, strides, strict=True)):
        # The ONNX text bounds output_padding by "stride/dilation"; onnxruntime wants < stride.
        raise OpError("ConvTranspose output_padding must be smaller than the stride",
                      expected=f"values < strides {list(strides)}", got=list(out_pad),
                      hint="Add the extra rows or columns with Pad instead.")
    wanted = tuple(attrs.get("output_shape") or ())
    if wanted and len(wanted) != k:
        raise OpError("ConvTranspose attribute output_shape needs one size per spatial axis",
                      expected=f"{k} values {AXES.get(k, '')}".rstrip(), got=list(wanted),
                      hint="Give the spatial sizes only, without N and C.")
    begin, end = explicit_pads(op, attrs, k)
    begin, end = list(begin), list(end)
    out = []
    for a in range(k):
        full = strides[a] * (sizes[a] - 1) + out_pad[a] + (kernel[a] - 1) * dilations[a] + 1
        if wanted or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = int(wanted[a]) if wanted else sizes[a] * strides[a]
            if wanted and not 1 <= target < full + strides[a]:
                raise ShapeError("ConvTranspose output_shape is out of range",
                                 expected=f"1 <= size <= {full + strides[a] - 1} (the "
                                          f"uncropped output {full} + stride - 1) on spatial "
                                          f"axis {a}", got=list(wanted),
                                 hint="Add the extra cells with Pad instead.")
            if wanted and target > full:
                # Cells past the full output (an implied output_padding, < stride as
                # onnxruntime checks): a negative end, filled with zeros (plus the bias).
                begin[a], end[a] = 0, full - target
            else:
                # Trap: SAME with a kernel shorter than the stride leaves fewer than
                # in * stride cells; onnxruntime and ONNX shape inference then keep the full
                # output.
                total = max(0, full - target)
                small, large = total // 2, total - total // 2
                begin[a], end[a] = ((small, large) if auto_pad == "SAME_UPPER"
                                    else (large, small))
        elif auto_pad == "VALID":
            begin[a], end[a] = 0, 0
        size = full - begin[a] - end[a]
        if size < 1:
            raise ShapeError("the ConvTranspose output is empty", expected="output size >= 1",
                             got=f"{size} on spatial axis {a}", hint="Reduce pads.")
        out.append(size)
    return Window(tuple(kernel), strides, dilations, tuple(begin), tuple(end), tuple(out)), out_pad


# --- pooling -------------------------------------------------------------------------------


def pool_window(op: str, x: Any, attrs: dict[str, Any]) -> Window:
    """Return the window of pooling op ``op`` over ``x`` (its kernel_shape and ceil_mode)."""
    kernel = tuple(attrs["kernel_shape"])
    k = len(x.shape) - 2
    if len(kernel) != k or min(kernel) < 1:
        raise OpError(f"{op} attribute kernel_shape needs one positive size per spatial axis",
                      expected=f"{k} values {AXES.get(k, '')} >= 1", got=list(kernel),
                      hint="The input's rank fixes the number of spatial axes: (N, C, L), "
                           "(N, C, H, W) or (N, C, D, H, W).")
    ceil_mode = attrs.get("ceil_mode", 0)
    if ceil_mode not in (0, 1):
        raise OpError(f"{op} attribute ceil_mode must be 0 or 1", expected="0 or 1",
                      got=ceil_mode)
    return window(op, tuple(x.shape[2:]), kernel, attrs, bool(ceil_mode))


def storage_order(attrs: dict[str, Any]) -> int:
    """Return MaxPool's storage_order (0 row-major, 1 column-major Indices), checked."""
    order = attrs.get("storage_order", 0)
    if order not in (0, 1):
        raise OpError("MaxPool attribute storage_order must be 0 or 1", expected="0 or 1",
                      got=order)
    return int(order)


def window_counts(size: int, win: Window, axis: int, include_pad: bool) -> np.ndarray:
    """Return, per output position on one axis, how many taps fall on the input (or its pads)."""
    pos = tap_positions(win, axis)
    # Trap: count_include_pad=1 counts the explicit (or auto) pads but not the cells that only
    # ceil_mode adds past the end padding; onnxruntime divides by the clipped window.
    high = size + win.end[axis] if include_pad else size
    low = -win.begin[axis] if include_pad else 0
    return ((pos >= low) & (pos < high)).sum(axis=1)


def counts(shape: tuple[int, ...], win: Window, include: bool) -> np.ndarray:
    """Return the divisor of AveragePool at every output position."""
    return outer_product([window_counts(shape[2 + a], win, a, include)
                          for a in range(win.rank)])
