"""Calibration: run data through a graph, collect each value's range, choose its int8 grid.

A quantized value is ``x = scale * (q - zero_point)``. For an activation, the range ``[lo, hi]``
comes from calibration data by one of three methods:

- ``minmax``: the smallest and largest value seen;
- ``percentile``: the ``percentile`` and ``100 - percentile`` quantiles (default 99.99), so a
  few outliers do not stretch the grid;
- ``entropy``: the clipping threshold whose quantized histogram is closest to the original in
  Kullback-Leibler divergence (the method of NVIDIA TensorRT's int8 calibration).

The range is widened to contain 0, so that zero is exactly representable: zero padding and
ReLU's zeros then quantize without error. Activations are uint8 (asymmetric, zero point in
0..255): onnxruntime's fast int8 kernels take uint8 activations and int8 weights. Weights are
symmetric int8 (zero point 0) with one scale per output channel; the bias is int32 with scale
``s_x * s_w``.

>>> import numpy as np
>>> grid = activation_grid(-1.0, 3.0)
>>> round(grid.scale, 6), grid.zero_point
(0.015686, 64)
>>> float(grid.scale * (grid.zero_point - grid.zero_point))  # 0 is on the grid
0.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import UsageError, unknown
from graphc.ir import Graph, Value

METHODS = ("minmax", "percentile", "entropy")
HISTOGRAM_BINS = 2048


@dataclass(frozen=True)
class Grid:
    """A uint8 activation grid: ``x = scale * (q - zero_point)`` for q in 0..255."""

    scale: float
    zero_point: int

    @property
    def lo(self) -> float:
        return self.scale * (0 - self.zero_point)

    @property
    def hi(self) -> float:
        return self.scale * (255 - self.zero_point)


def activation_grid(lo: float, hi: float) -> Grid:
    """Return the uint8 grid of range ``[lo, hi]`` widened to contain 0 (0 exactly on it)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0 or not np.isfinite(hi - lo):
        return Grid(1.0, 0)
    scale = float(np.float32((hi - lo) / 255.0))
    zero_point = int(np.clip(np.round(-lo / scale), 0, 255))
    return Grid(scale, zero_point)


def weight_scales(w: np.ndarray, axis: int | None, qmax: int = 127) -> np.ndarray:
    """Return symmetric int8 scales ``max|w| / qmax``: one per slice along ``axis`` (per output
    channel), or one for the tensor with ``axis=None``. All-zero slices get scale 1."""
    a = np.abs(np.asarray(w, np.float64))
    if axis is None:
        m = np.array(a.max() if a.size else 0.0)
    else:
        m = a.max(axis=tuple(k for k in range(a.ndim) if k != axis))
    return np.where(m > 0, m / qmax, 1.0).astype(np.float32)


def quantize_weight(w: np.ndarray, scales: np.ndarray, axis: int | None, qmax: int = 127
                    ) -> np.ndarray:
    """Return int8 ``round_half_even(w / scale)`` clipped to ``[-qmax, qmax]``."""
    s = np.asarray(scales, np.float64)
    if axis is not None:
        shape = [1] * w.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    return np.clip(np.rint(np.asarray(w, np.float64) / s), -qmax, qmax).astype(np.int8)


def quantize_bias(b: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Return the int32 bias ``round_half_even(b / (s_x * s_w))`` for its per-channel scales."""
    q = np.rint(np.asarray(b, np.float64) / np.asarray(scales, np.float64))
    info = np.iinfo(np.int32)
    return np.clip(q, info.min, info.max).astype(np.int32)


class RangeCollector:
    """Collects what a method needs of one value over calibration batches: min and max, then
    (for percentile and entropy) a histogram over that range in a second pass."""

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf
        self.hist: np.ndarray | None = None
        self.edges: np.ndarray | None = None

    def add_range(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        finite = x[np.isfinite(x)]
        if finite.size:
            self.lo = min(self.lo, float(finite.min()))
            self.hi = max(self.hi, float(finite.max()))

    def add_histogram(self, x: np.ndarray) -> None:
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if hi <= lo:
            return
        counts, edges = np.histogram(np.asarray(x, np.float64), bins=HISTOGRAM_BINS,
                                     range=(lo, hi))
        self.hist = counts if self.hist is None else self.hist + counts
        self.edges = edges

    def range(self, method: str, percentile: float = 99.99) -> tuple[float, float]:
        """Return the clipping range ``(lo, hi)`` by ``method``."""
        if not np.isfinite(self.lo):
            return 0.0, 0.0
        if method == "minmax" or self.hist is None:
            return self.lo, self.hi
        if method == "percentile":
            return _percentile_range(self.hist, self.edges, percentile)
        if method == "entropy":
            return _entropy_range(self.hist, self.edges)
        raise unknown("calibration method", method, METHODS, cls=UsageError)


def _percentile_range(hist: np.ndarray, edges: np.ndarray, percentile: float
                      ) -> tuple[float, float]:
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    tail = (100.0 - percentile) / 100.0
    lo_bin = int(np.searchsorted(cdf, tail, side="left"))
    hi_bin = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
    return float(edges[lo_bin]), float(edges[min(hi_bin + 1, len(edges) - 1)])


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = q / q.sum()
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))


def _entropy_range(hist: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """TensorRT's KL calibration on the side of zero that holds most of the mass.

    The histogram is folded to magnitudes |x|; for each candidate threshold (bin i), the
    reference P is the first i bins with the clipped tail added to the last one, and Q is P
    merged into ``levels`` quantization bins and spread back over the non-empty bins; the
    threshold with the smallest KL(P || Q) wins. A one-signed value (ReLU output) has all 256
    uint8 levels on its side; a signed one shares them, 128 a side.
    """
    width = edges[1] - edges[0]
    zero_bin = int(np.clip(np.round(-edges[0] / width), 0, len(hist)))
    neg = hist[:zero_bin][::-1]
    pos = hist[zero_bin:]
    size = max(len(neg), len(pos))
    mag = np.zeros(size)
    mag[:len(pos)] += pos
    mag[:len(neg)] += neg
    levels = 128 if neg.sum() > 0 and pos.sum() > 0 else 256
    if size <= levels:
        return float(edges[0]), float(edges[-1])
    best, best_i = np.inf, size
    for i in range(levels, size + 1, max(1, (size - levels) // 256)):
        p = mag[:i].astype(np.float64).copy()
        p[-1] += mag[i:].sum()
        if p.sum() == 0:
            continue
        chunks = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        for idx in chunks:
            nonzero = mag[idx] > 0
            if nonzero.any():
                q[idx[nonzero]] = mag[idx].sum() / nonzero.sum()
        if q.sum() == 0:
            continue
        kl = _kl(p, q)
        if kl < best:
            best, best_i = kl, i
    threshold = best_i * width
    lo = -threshold if neg.sum() > 0 else 0.0
    hi = threshold if pos.sum() > 0 else 0.0
    return max(lo, float(edges[0])), min(hi, float(edges[-1]))


def collect_ranges(run: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
                   batches: Sequence[Mapping[str, np.ndarray]], names: Sequence[str], *,
                   method: str = "minmax", percentile: float = 99.99
                   ) -> dict[str, tuple[float, float]]:
    """Return ``name -> (lo, hi)`` for ``names`` by ``method`` over calibration batches.

    ``run(batch) -> {name: array}`` computes the named values of one batch (a graph with those
    values as outputs, on onnxruntime); percentile and entropy run the batches twice (ranges,
    then histograms over those ranges).

    >>> rng = np.random.default_rng(0)
    >>> batches = [{"x": rng.uniform(-1, 2, 1000)} for _ in range(3)]
    >>> lo, hi = collect_ranges(lambda b: {"y": b["x"]}, batches, ["y"])["y"]
    >>> -1 < lo < -0.99, 1.99 < hi < 2
    (True, True)
    """
    if method not in METHODS:
        raise unknown("calibration method", method, METHODS, cls=UsageError,
                      where="--calibration")
    collectors = {n: RangeCollector() for n in names}
    for batch in batches:
        for n, v in run(batch).items():
            collectors[n].add_range(v)
    if method != "minmax":
        for batch in batches:
            for n, v in run(batch).items():
                collectors[n].add_histogram(v)
    return {n: c.range(method, percentile) for n, c in collectors.items()}


def measure_ranges(g: Any, batches: Sequence[Mapping[str, np.ndarray]], values: Sequence[Any], *,
                   method: str = "minmax", percentile: float = 99.99
                   ) -> dict[Any, tuple[float, float]]:
    """Return ``value -> (lo, hi)`` of graph ``g``'s ``values`` over calibration ``batches``
    (feeds of the graph's batch size), computed on onnxruntime with those values as outputs."""
    from graphc.onnxio.export import to_bytes
    from graphc.onnxio.runtime import session

    probe = g.copy()
    probe.outputs = list(values) + list(g.outputs)
    names = probe.output_names()[:len(values)]
    sess = session(to_bytes(probe), threads=1)

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(names, dict(feeds)), strict=True))

    ranges = collect_ranges(run, batches, names, method=method, percentile=percentile)
    return {v: ranges[n] for v, n in zip(values, names, strict=True)}


def calibration_batches(g: Graph, calibration: Any) -> list[dict[str, np.ndarray]]:
    """Split calibration data (an array for a one-input model, else a mapping from input
    names to arrays with one sample per row) into feeds of the graph's own batch size."""
    if not isinstance(calibration, Mapping):
        if len(g.inputs) != 1:
            raise UsageError("calibration data for a model with several inputs needs names",
                             expected=f"a mapping with {', '.join(g.inputs)}",
                             got="one array")
        calibration = {g.inputs[0]: calibration}
    data = {}
    for name in g.inputs:
        ttype = g.type_of(Value(name))
        if name not in calibration:
            raise UsageError("the calibration data has no values for an input",
                             where=f"input {name!r}", expected=sorted(g.inputs),
                             got=sorted(calibration))
        array = np.asarray(calibration[name], ttype.dtype)
        per_sample = int(np.prod(ttype.shape[1:]))
        if array.shape[1:] != ttype.shape[1:]:
            if array.ndim == 0 or array.size != len(array) * per_sample:
                raise UsageError("the calibration data does not fit the model's input",
                                 where=f"input {name!r}", expected=f"(N, {ttype.shape[1:]})",
                                 got=array.shape)
            array = array.reshape(len(array), *ttype.shape[1:])
        data[name] = array
    count = min(len(a) for a in data.values())
    b = g.type_of(Value(g.inputs[0])).shape[0] if g.inputs else 1
    if count < b:
        raise UsageError("too little calibration data", expected=f"at least {b} samples (one "
                         "batch of the model)", got=count)
    return [{n: a[k:k + b] for n, a in data.items()} for k in range(0, count - b + 1, b)]
