"""Check that a compiled ONNX file is not slower than the file it was made from, on onnxruntime.

A speed claim is a paired ratio measured in one run (see ``graphc.compress.latency``): both
files are timed in interleaved rounds on the same inputs, and the ratio after / before is the
median of the per-round ratios. To tell a real slowdown from the machine's noise, the given
file is timed a second time, in its own session, in the same rounds: that A/A ratio shows
what "no difference" looks like today. The noise band is the larger of its distance from 1
and the half-width of its 25th-75th percentile range, and never less than ``MIN_NOISE``.

- ``check_speed(before, after, feeds, rounds)`` returns a ``SpeedCheck``: the ratio, its
  percentiles, the noise band, the times and a verdict (``faster``, ``same`` or ``slower``);
- ``speed_verdict(ratio, noise)`` is the rule: slower when ratio > 1 + noise, faster when
  ratio < 1 - noise, else the same;
- ``feeds_for(model, batch, seed)`` makes seeded random inputs for a model's inputs, with
  ``batch`` for a symbolic first dimension.

>>> speed_verdict(1.07, 0.02), speed_verdict(1.01, 0.02), speed_verdict(0.90, 0.02)
('slower', 'same', 'faster')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from graphc.compress.latency import measure
from graphc.errors import GraphcError, UsageError

# Below this a difference is not worth a warning, whatever the A/A spread: medians of a few
# rounds on a shared machine move by about 1% between identical sessions.
MIN_NOISE = 0.01

_FLOAT_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
                onnx.TensorProto.FLOAT16: np.float16}
_INT_TYPES = {onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32,
              onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT8: np.int8,
              onnx.TensorProto.BOOL: np.bool_}


def speed_verdict(ratio: float, noise: float) -> str:
    """Return ``slower``, ``same`` or ``faster`` for a time ratio after / before.

    >>> speed_verdict(1.03, 0.05)
    'same'
    """
    if ratio > 1.0 + noise:
        return "slower"
    if ratio < 1.0 - noise:
        return "faster"
    return "same"


@dataclass(frozen=True)
class SpeedCheck:
    """The paired comparison of two files on onnxruntime (times in seconds per call)."""

    ratio: float
    ratio_low: float
    ratio_high: float
    noise: float
    same_ratio: float
    before: float
    after: float
    rounds: int
    threads: int
    verdict: str

    @property
    def slower(self) -> bool:
        """Whether the second file is slower than the first beyond the noise band."""
        return self.verdict == "slower"

    def describe(self, before: str = "given", after: str = "compiled") -> str:
        """Return one line with the numbers and the verdict.

        >>> check = SpeedCheck(1.08, 1.06, 1.10, 0.02, 1.01, 0.010, 0.0108, 21, 1, "slower")
        >>> print(check.describe().replace(", ", ",\\n"))
        compiled / given time 1.080 (rounds 1.060-1.100),
        noise band +-2.0% (given / given 1.010),
        10.0 ms -> 10.8 ms,
        onnxruntime,
        1 thread,
        21 rounds: slower
        """
        thread = "thread" if self.threads == 1 else "threads"
        return (f"{after} / {before} time {self.ratio:.3f} (rounds {self.ratio_low:.3f}-"
                f"{self.ratio_high:.3f}), noise band +-{self.noise * 100:.1f}% ({before} / "
                f"{before} {self.same_ratio:.3f}), {_seconds(self.before)} -> "
                f"{_seconds(self.after)}, onnxruntime, {self.threads} {thread}, "
                f"{self.rounds} rounds: {self.verdict}")


def _seconds(t: float) -> str:
    """A time per call as ms, or as us below 0.1 ms (a tiny model's call)."""
    return f"{t * 1e3:.1f} ms" if t >= 1e-4 else f"{t * 1e6:.1f} us"


def check_speed(before: bytes, after: bytes, feeds: Mapping[str, Any], rounds: int = 21, *,
                threads: int = 1, warmup: int = 3) -> SpeedCheck:
    """Time ``before`` and ``after`` (ONNX bytes) on ``feeds`` in interleaved rounds, with the
    given file timed twice for the noise band; return the ratio after / before and a verdict.

    >>> from graphc.models import backprop_example
    >>> from graphc.onnxio.export import to_bytes
    >>> model = to_bytes(backprop_example.build())
    >>> feeds = {"x": np.float32(-2), "y": np.float32(5), "z": np.float32(-4)}
    >>> result = check_speed(model, model, feeds, rounds=3)
    >>> result.verdict in ("faster", "same", "slower"), result.noise >= MIN_NOISE
    (True, True)
    """
    given, compiled, again = measure([before, after, before], feeds,
                                     names=["the given file", "the compiled file",
                                            "the given file (again)"],
                                     threads=threads, rounds=rounds, warmup=warmup)
    noise = max(MIN_NOISE, abs(again.ratio - 1.0), (again.ratio_high - again.ratio_low) / 2)
    return SpeedCheck(compiled.ratio, compiled.ratio_low, compiled.ratio_high, noise,
                      again.ratio, given.median, compiled.median, rounds, threads,
                      speed_verdict(compiled.ratio, noise))


def feeds_for(model: bytes | onnx.ModelProto, batch: int = 1, seed: int = 0
              ) -> dict[str, np.ndarray]:
    """Return seeded random inputs for ``model``'s inputs (standard normal floats, zeros for
    integers), with ``batch`` for a symbolic first dimension.

    >>> from graphc.models import mlp_tiny
    >>> from graphc.onnxio.export import to_bytes
    >>> {k: v.shape for k, v in feeds_for(to_bytes(mlp_tiny.build()), batch=4).items()}
    {'x': (1, 2)}
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UsageError("batch must be a positive integer", where="feeds_for",
                         expected="an int >= 1", got=repr(batch))
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_model_from_string(model)
    initializers = {t.name for t in proto.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for info in proto.graph.input:
        if info.name in initializers:
            continue
        ttype = info.type.tensor_type
        shape = []
        for k, dim in enumerate(ttype.shape.dim):
            if dim.HasField("dim_value"):
                shape.append(dim.dim_value)
            elif k == 0:
                shape.append(batch)
            else:
                raise GraphcError(f"input {info.name} has a symbolic dimension {k}",
                                  where="feeds_for", expected="symbolic only the first (batch)",
                                  got=dim.dim_param or "unnamed",
                                  hint="Give the inputs yourself.")
        if ttype.elem_type in _FLOAT_TYPES:
            feeds[info.name] = rng.standard_normal(shape).astype(_FLOAT_TYPES[ttype.elem_type])
        elif ttype.elem_type in _INT_TYPES:
            feeds[info.name] = np.zeros(shape, _INT_TYPES[ttype.elem_type])
        else:
            raise GraphcError(f"input {info.name} has an element type feeds_for cannot make",
                              where="feeds_for", expected="a float, integer or bool tensor",
                              got=onnx.TensorProto.DataType.Name(ttype.elem_type),
                              hint="Give the inputs yourself.")
    return feeds
