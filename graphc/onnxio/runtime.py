"""Run ONNX models on onnxruntime (CPU) and compare them with graphc's interpreter.

The one place that builds onnxruntime sessions: ``session`` (threads, config entries).

Comparisons (``compare``, ``compare_outputs``) can fail. NaN must sit at the same positions
in both results, and +inf and -inf at the same positions with the same sign. Finite values
pass within ``atol = rtol * scale`` per output, where ``scale`` is the largest finite
magnitude of the expected output (at least the dtype's smallest normal number) and ``rtol``
depends on the dtype (``DEFAULT_RTOL``): float32 1e-4, float64 1e-11, float16 1e-2, integers
and bool exact. The float32 value is ten times the ~1e-5 relative that exact passes document
and over a hundred times the largest difference measured between the interpreter and
onnxruntime on the zoo models (8e-7 of the output's scale, before and after the inference
pipeline); float64 and float16 keep the same margin over their rounding error (1.1e-16 and
4.9e-4 per operation). ``tolerance`` replaces ``rtol`` for every output, integers included.

>>> from graphc.models import backprop_example
>>> g = backprop_example.build()
>>> feeds = {"x": -2.0, "y": 5.0, "z": -4.0}
>>> float(run_onnxruntime(g, feeds)["f"])
-12.0
>>> result = compare(g, feeds)
>>> result.ok, result.max_abs_diff
(True, 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from graphc.interpret import check_feeds, run
from graphc.ir import Graph
from graphc.onnxio.export import to_bytes, to_onnx


def session(model: onnx.ModelProto | bytes | Graph, threads: int | None = None,
            config: Mapping[str, str] | None = None, profile: str | None = None,
            optimize: bool = True) -> Any:
    """Return an onnxruntime CPU ``InferenceSession`` for a model, its bytes or a graph, with
    ``threads`` intra-op threads (default: onnxruntime's) and session ``config`` entries;
    ``profile`` turns on onnxruntime's profiling, written by ``end_profiling()`` to
    ``<profile>_<timestamp>.json`` (give an absolute prefix: a relative one lands in the cwd);
    ``optimize=False`` turns graph optimizations off, so onnxruntime runs every op as written
    (no int8 fusion: the reference run of a quantized file)."""
    import onnxruntime as ort

    if isinstance(model, Graph):
        model = to_bytes(model)
    elif isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    options = ort.SessionOptions()
    # Fatal only: an error reaches the caller as the exception's message (which the CLI turns
    # into one line); onnxruntime's own log would print it again, raw, to stderr.
    options.log_severity_level = 4
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_onnxruntime(model: onnx.ModelProto | bytes | Graph, feeds: Mapping[str, Any],
                    threads: int | None = None) -> dict[str, np.ndarray]:
    """Run a model (or a graph, exported first) on onnxruntime; return output name -> array."""
    if isinstance(model, Graph):
        feeds = check_feeds(model, feeds)
    sess = session(model, threads)
    names = [o.name for o in sess.get_outputs()]
    results = sess.run(names, {k: np.asarray(v) for k, v in feeds.items()})
    return dict(zip(names, results, strict=True))


# Relative tolerance of finite values by dtype kind and size (see the module docstring).
DEFAULT_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-11,
                np.dtype(np.float16): 1e-2}


def default_rtol(dtype: Any) -> float:
    """Return the relative tolerance ``compare`` uses for outputs of ``dtype`` (0: exact).

    >>> default_rtol(np.float32), default_rtol(np.int64), default_rtol(np.bool_)
    (0.0001, 0.0, 0.0)
    """
    return DEFAULT_RTOL.get(np.dtype(dtype), 0.0)


@dataclass(frozen=True, eq=False)
class Comparison:
    """The result of comparing outputs: ``ok``, the largest absolute difference (NaN when NaN
    positions differ, inf when infinities differ), and the worst element: its ``output`` name,
    ``index``, ``expected`` and ``got`` values and the absolute ``tolerance`` there (``rtol``
    times the output's ``scale``). ``float(c)`` is ``max_abs_diff``, and so is ``c == 0.0``
    (what ``compare`` returned before it returned a ``Comparison``). With no outputs, or all
    equal, the worst element is the first one compared (``output`` is None when there is none).
    """

    ok: bool
    max_abs_diff: float
    output: str | None = None
    index: tuple[int, ...] = ()
    expected: float = 0.0
    got: float = 0.0
    tolerance: float = 0.0
    rtol: float = 0.0
    scale: float = 0.0
    reason: str = ""

    def __float__(self) -> float:
        return self.max_abs_diff

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return self.max_abs_diff == other
        if isinstance(other, Comparison):
            return vars(self) == vars(other)
        return NotImplemented

    __hash__ = object.__hash__

    def __str__(self) -> str:
        if self.output is None:
            return "ok: no outputs to compare" if self.ok else f"mismatch: {self.reason}"
        where = f"output {self.output!r}" + (f" element {list(self.index)}" if self.index else "")
        values = f"expected {self.expected:.7g}, got {self.got:.7g}"
        limit = (f"tolerance {self.tolerance:.3g} = {self.rtol:.3g} x output scale "
                 f"{self.scale:.3g}" if self.rtol else "exact")
        if self.ok:
            return f"ok: max abs diff {self.max_abs_diff:.3g} ({limit}); worst at {where}: {values}"
        return f"mismatch at {where}: {values}; {self.reason} ({limit})"


def _as_float64(a: Any) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def _abs_diff(want: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Return |want - got| elementwise: 0 where both hold the same non-finite value (NaN and
    NaN, or infinities of one sign), NaN where exactly one is NaN, inf where they differ by an
    infinity."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.array(np.abs(want - got), dtype=np.float64)
    same = (np.isnan(want) & np.isnan(got)) | (np.isinf(want) & (want == got))
    diff[same] = 0.0
    diff[np.isnan(want) != np.isnan(got)] = np.nan
    return diff


def max_abs_diff(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Return the largest absolute difference between matching outputs (paired in order):
    NaN if NaN positions differ anywhere (never dropped), inf if infinities differ, and 0 for
    NaN against NaN or an infinity against the same infinity.

    >>> max_abs_diff({"y": np.array([0.0, 1.0, 2.0])}, {"y": np.array([np.nan, 1.0, 2.0])})
    nan
    """
    worst = 0.0
    for x, y in zip(a.values(), b.values(), strict=True):
        x, y = _as_float64(x), _as_float64(y)
        if x.size == 0 and y.size == 0:
            continue
        if x.shape != y.shape:
            return float("nan")
        diff = _abs_diff(x, y)
        if np.isnan(diff).any():
            return float("nan")
        worst = max(worst, float(diff.max()))
    return worst


def compare_outputs(expected: Mapping[str, Any], got: Mapping[str, Any],
                    tolerance: float | None = None,
                    scales: Mapping[str, float] | None = None) -> Comparison:
    """Compare outputs (paired in order, named by ``expected``): NaN and infinities exactly,
    finite values within ``rtol * scale`` (``rtol`` by dtype, or ``tolerance``). An output's
    scale is its largest finite magnitude, raised to ``scales[name]`` where given: the
    magnitude of the values it was computed from, whose rounding noise stays where the output
    cancels to 0.

    >>> c = compare_outputs({"y": np.array([0.0, 1.0, 2.0], np.float32)},
    ...                     {"y": np.array([np.nan, 1.0, 2.0], np.float32)})
    >>> c.ok, c.output, c.index, c.expected, c.got, c.max_abs_diff
    (False, 'y', (0,), 0.0, nan, nan)
    >>> c.reason
    'NaN where a number is expected'
    """
    if len(expected) != len(got):
        return Comparison(False, float("nan"), reason=f"{len(expected)} outputs expected, "
                          f"got {len(got)}")
    best: Comparison | None = None
    best_rank: tuple[int, float] = (-1, 0.0)
    worst_diff = 0.0
    for (name, want), have in zip(expected.items(), got.values(), strict=True):
        want_a, have_a = np.asarray(want), np.asarray(have)
        if want_a.shape != have_a.shape:
            return Comparison(False, float("nan"), name, reason=f"shape {have_a.shape} where "
                              f"{want_a.shape} is expected")
        rtol = default_rtol(want_a.dtype) if tolerance is None else float(tolerance)
        w, h = _as_float64(want_a), _as_float64(have_a)
        finite = np.isfinite(w)
        scale = float(np.max(np.abs(w[finite]))) if finite.any() else 0.0
        scale = max(scale, float((scales or {}).get(name, 0.0)))
        tiny = float(np.finfo(want_a.dtype).tiny) if want_a.dtype.kind == "f" else 0.0
        atol = rtol * max(scale, tiny)
        if w.size == 0:
            continue
        diff = _abs_diff(w, h)
        nan_diff = np.isnan(diff)
        worst_diff = float("nan") if nan_diff.any() or np.isnan(worst_diff) else \
            max(worst_diff, float(diff.max()))
        # Rank: a NaN mismatch, then an infinity mismatch, then the largest excess over atol.
        over = np.where(nan_diff, np.inf, diff - atol)
        flat = int(np.argmax(over))
        excess = float(over.reshape(-1)[flat])
        kind = 3 if nan_diff.reshape(-1)[flat] else \
            2 if np.isinf(diff.reshape(-1)[flat]) and excess > 0 else 1 if excess > 0 else 0
        rank = (kind, excess)
        if best is None or rank > best_rank:
            index = tuple(int(i) for i in np.unravel_index(flat, w.shape))
            e, g = float(w.reshape(-1)[flat]), float(h.reshape(-1)[flat])
            reason = ("NaN where a number is expected" if np.isnan(g) else
                      "a number where NaN is expected") if kind == 3 else \
                "infinities differ" if kind == 2 else \
                f"abs diff {abs(e - g):.3g} over the tolerance" if kind == 1 else ""
            best, best_rank = Comparison(kind == 0, 0.0, name, index, e, g, atol, rtol, scale,
                                         reason), rank
    if best is None:
        return Comparison(True, 0.0)
    return Comparison(best.ok, worst_diff, best.output, best.index, best.expected, best.got,
                      best.tolerance, best.rtol, best.scale, best.reason)


def compare(g: Graph, feeds: Mapping[str, Any], opset: int | None = None,
            tolerance: float | None = None) -> Comparison:
    """Compare the interpreter (expected) with onnxruntime on ``feeds``; see
    ``compare_outputs`` for the rule and ``Comparison`` for the result."""
    return compare_outputs(run(g, feeds),
                           run_onnxruntime(to_onnx(g, opset), check_feeds(g, feeds)), tolerance)
