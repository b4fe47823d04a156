"""The per-axis arithmetic of Resize (graphc.ops.resize): where each output cell reads the
input (the coordinate transforms) and with which weights (the taps of nearest, linear, cubic and
antialiased resizing), computed in float32 as onnxruntime's CPU kernel does.

One axis of input size ``n`` resized to ``m`` is a linear map: ``taps`` gives, per output
index, input indices and weights; ``matrix`` the same as an (m, n) matrix, which the gradient
applies transposed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

F32 = np.float32


def coordinates(n: int, m: int, scale: float, attrs: dict[str, Any],
                 box: tuple[float, float] | None) -> np.ndarray:
    """Return the input coordinate of each output index, in float32 like onnxruntime."""
    x = np.arange(m, dtype=F32)
    s = F32(scale)
    mode = attrs["coordinate_transformation_mode"]
    if mode == "tf_crop_and_resize":
        start, end, last = F32(box[0]), F32(box[1]), F32(n - 1)
        if m == 1:
            return np.full(m, F32(0.5) * (start + end) * last, F32)
        return start * last + x * (end - start) * last / F32(m - 1)
    if mode == "asymmetric":
        return x / s
    if mode == "half_pixel_symmetric":
        # The output's offset when m is n * scale rounded down: the sampled box stays centred.
        adjustment = F32(m) / (s * F32(n))
        offset = F32(n) / F32(2) * (F32(1) - adjustment)
        return offset + (x + F32(0.5)) / s - F32(0.5)
    if mode == "align_corners":
        return np.zeros(m, F32) if m == 1 else x * F32(n - 1) / F32(m - 1)
    if mode == "pytorch_half_pixel" and m == 1:
        return np.zeros(m, F32)
    return (x + F32(0.5)) / s - F32(0.5)


def round_coordinate(c: np.ndarray, mode: str) -> np.ndarray:
    """Return the nearest input cell of each coordinate by ``nearest_mode``."""
    if mode == "floor":
        return np.floor(c)
    if mode == "ceil":
        return np.ceil(c)
    away = np.sign(c) * np.floor(np.abs(c) + F32(0.5))  # std::round: halves away from zero
    half = c == np.trunc(c) + F32(0.5)
    return np.where(half, np.floor(c) if mode == "round_prefer_floor" else np.ceil(c), away)


def cubic_weights(t: np.ndarray, a: float) -> list[np.ndarray]:
    """Return the weights of the neighbours at -1, 0, 1, 2 for a fraction ``t`` (Keys' cubic
    convolution with coefficient ``a``, written as onnxruntime computes it, in float32)."""
    a, one, two = F32(a), F32(1), F32(2)
    return [((a * (t + one) - 5 * a) * (t + one) + 8 * a) * (t + one) - 4 * a,
            ((a + two) * t - (a + 3)) * t * t + one,
            ((a + two) * (one - t) - (a + 3)) * (one - t) * (one - t) + one,
            ((a * (two - t) - 5 * a) * (two - t) + 8 * a) * (two - t) - 4 * a]


def outside_cells(n: int, m: int, scale: float, attrs: dict[str, Any],
             box: tuple[float, float] | None) -> np.ndarray | None:
    """Return which output indices tf_crop_and_resize places outside the input (they take
    extrapolation_value), or None for the other coordinate transforms."""
    if box is None:
        return None
    c = coordinates(n, m, scale, attrs, box)
    return (c < 0) | (c > F32(n - 1))


def axis_taps(n: int, m: int, scale: float, attrs: dict[str, Any],
          box: tuple[float, float] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the taps of one axis: (input index, weight) per output index, one tap for
    nearest, two for linear, four for cubic."""
    c = coordinates(n, m, scale, attrs, box)
    mode = attrs["mode"]
    if mode == "nearest":
        idx = np.clip(round_coordinate(c, attrs["nearest_mode"]), 0, n - 1).astype(np.int64)
        return [(idx, np.ones(m))]
    if attrs["antialias"]:
        return antialias_taps(n, c, scale, attrs)
    if mode == "linear":
        c = np.clip(c, F32(0), F32(n - 1))
        lo = np.minimum(c.astype(np.int64), n - 1)
        hi = np.minimum(lo + 1, n - 1)
        frac = np.where(lo == hi, 0.5, (c - lo.astype(F32)).astype(np.float64))
        return [(lo, 1.0 - frac), (hi, frac)]
    # cubic: the coordinate is not clamped; neighbours outside the input repeat the edge, or
    # with exclude_outside get weight 0 and the others are scaled to sum to 1.
    base = np.floor(c)
    weights = [w.astype(np.float64) for w in cubic_weights(c - base, attrs["cubic_coeff_a"])]
    idx = [base.astype(np.int64) + k for k in (-1, 0, 1, 2)]
    if attrs["exclude_outside"]:
        weights = [np.where((i >= 0) & (i < n), w, 0.0) for i, w in zip(idx, weights,
                                                                           strict=True)]
        total = sum(weights)
        weights = [w / total for w in weights]
    return [(np.clip(i, 0, n - 1), w) for i, w in zip(idx, weights, strict=True)]


def keys_kernel(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at distances ``x``."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def antialias_taps(n: int, c: np.ndarray, scale: float, attrs: dict[str, Any]
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Taps of antialiased linear or cubic resizing: when downsampling by ``scale``, the
    triangle (Keys') filter is stretched by ``1 / scale`` over ``2 - 2 * start`` neighbours,
    ``start = floor(-support / scale) + 1``, its weights scaled to sum to 1 (ONNX's text)."""
    s = min(scale, 1.0)
    c = c.astype(np.float64)
    base = np.floor(c)
    ratio = c - base
    # A coordinate on a cell takes ratio 1 from the cell before (the neighbours to the left).
    on_cell = ratio == 0
    base, ratio = np.where(on_cell, base - 1, base), np.where(on_cell, 1.0, ratio)
    support = 1.0 if attrs["mode"] == "linear" else 2.0
    start = int(np.floor(-support / s)) + 1
    taps = []
    for k in range(start, 2 - start):
        x = (k - ratio) * s
        w = np.clip(1 - np.abs(x), 0, 1) if attrs["mode"] == "linear" else keys_kernel(
            x, attrs["cubic_coeff_a"])
        taps.append(((base + k).astype(np.int64), w))
    if attrs["exclude_outside"]:
        taps = [(i, np.where((i >= 0) & (i < n), w, 0.0)) for i, w in taps]
    total = sum(w for _, w in taps)
    return [(np.clip(i, 0, n - 1), w / total) for i, w in taps]


def axis_matrix(n: int, m: int, scale: float, attrs: dict[str, Any],
            box: tuple[float, float] | None) -> np.ndarray:
    """Return the (m, n) matrix that resizes one axis (rows outside the roi: zero)."""
    a = np.zeros((m, n))
    rows = np.arange(m)
    for idx, w in axis_taps(n, m, scale, attrs, box):
        np.add.at(a, (rows, idx), w)
    outside = outside_cells(n, m, scale, attrs, box)
    if outside is not None:
        a[outside] = 0.0
    return a


def is_identity(n: int, m: int, scale: float, box: tuple[float, float] | None) -> bool:
    """Return whether resizing an axis of ``n`` to ``m`` by ``scale`` (in ``box``) copies it."""
    return n == m and scale == 1.0 and box in (None, (0.0, 1.0))
