"""Calibration (graphc.compress.calibrate): grids, weight and bias quantization by hand, and
each range method on distributions whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.compress.calibrate import (
    activation_grid,
    collect_ranges,
    quantize_bias,
    quantize_weight,
    weight_scales,
)
from graphc.errors import UsageError


def ranges(samples: list[np.ndarray], method: str, **kw) -> tuple[float, float]:
    batches = [{"x": s} for s in samples]
    return collect_ranges(lambda b: {"v": b["x"]}, batches, ["v"], method=method, **kw)["v"]


def test_activation_grid_by_hand():
    # [-1, 3]: scale 4/255, zero point round(1 / (4/255)) = round(63.75) = 64.
    grid = activation_grid(-1.0, 3.0)
    assert grid.scale == pytest.approx(4 / 255, rel=1e-7)
    assert grid.zero_point == 64
    # A range that misses 0 is widened to contain it; 0 quantizes to the zero point exactly.
    assert activation_grid(2.0, 5.1).zero_point == 0
    assert activation_grid(2.0, 5.1).scale == pytest.approx(5.1 / 255, rel=1e-7)
    assert activation_grid(-5.1, -2.0).zero_point == 255
    # An empty range still gives a valid grid.
    assert activation_grid(0.0, 0.0).scale == 1.0


def test_weight_scales_and_rounding_half_to_even():
    # Powers of two keep every division exact: scale 1/64, so -63.5 and 0.5 are true ties.
    w = np.array([[127 / 64, -63.5 / 64, 0.5 / 64], [0.0, 0.0, 0.0]], np.float32)
    s = weight_scales(w, axis=0)
    assert s[0] == 1 / 64 and s[1] == 1.0  # an all-zero channel keeps scale 1
    q = quantize_weight(w, s, axis=0)
    assert q.dtype == np.int8
    assert q.tolist() == [[127, -64, 0], [0, 0, 0]]  # ties to even: -63.5 -> -64, 0.5 -> 0
    # The reduced range [-63, 63] for CPUs without VNNI: scale 1/32, -31.5 -> -32.
    r = np.array([[63 / 32, -31.5 / 32, 0.5 / 32]], np.float32)
    assert quantize_weight(r, weight_scales(r, 0, qmax=63), 0, qmax=63).tolist() == [[63, -32, 0]]
    assert weight_scales(w, axis=None).shape == ()


def test_bias_int32_with_the_product_scale():
    b = np.array([0.5, -2.0, 1e12], np.float32)
    q = quantize_bias(b, np.array([0.1, 0.25, 1e-3], np.float32))
    assert q.dtype == np.int32
    assert q[:2].tolist() == [5, -8]
    assert q[2] == np.iinfo(np.int32).max  # saturates instead of wrapping


def test_minmax_is_the_extremes():
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-2, 3, 1000) for _ in range(4)]
    lo, hi = ranges(xs, "minmax")
    assert lo == min(x.min() for x in xs) and hi == max(x.max() for x in xs)


def test_percentile_ignores_a_few_outliers():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200_000)
    x[:5] = 1000.0
    lo, hi = ranges([x], "percentile", percentile=99.9)
    # The 0.1% and 99.9% quantiles of N(0, 1) are -+3.09; the histogram's bins are ~0.5 wide.
    assert -3.09 - 0.6 < lo < -3.09 + 0.6
    assert 3.09 - 0.6 < hi < 3.09 + 0.6


def test_entropy_clips_a_long_tail_and_keeps_a_uniform_range():
    rng = np.random.default_rng(2)
    uniform = ranges([rng.uniform(0, 1, 100_000)], "entropy")
    assert uniform[0] == 0.0 and uniform[1] > 0.95  # clipping a uniform loses information
    tail = np.concatenate([rng.standard_normal(100_000), [40.0]])
    lo, hi = ranges([tail], "entropy")
    assert 2.5 < hi < 10 and -10 < lo < -2.5  # far inside the outlier at 40
    assert lo == -hi  # a signed value is clipped symmetrically around zero


def test_unknown_method_is_refused():
    with pytest.raises(UsageError, match="calibration method"):
        ranges([np.zeros(3)], "kl")
