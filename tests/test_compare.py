"""Comparisons that can fail: NaN and infinities exactly, finite values within a tolerance that
depends on the dtype and the output's scale, the worst element reported."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphc.interpret import run
from graphc.models import load
from graphc.onnxio.export import to_onnx
from graphc.onnxio.runtime import (
    Comparison,
    compare,
    compare_outputs,
    default_rtol,
    max_abs_diff,
    run_onnxruntime,
)
from graphc.testing import random_feeds

F32 = np.float32


def arrays(*values: float, dtype: type = F32) -> np.ndarray:
    return np.array(values, dtype)


def test_a_nan_where_a_number_is_expected_fails() -> None:
    # The example: the interpreter gives [0, 1, 2], onnxruntime [nan, 1, 2].
    want, got = {"y": arrays(0, 1, 2)}, {"y": arrays(np.nan, 1, 2)}
    result = compare_outputs(want, got)
    assert not result.ok
    assert (result.output, result.index, result.expected) == ("y", (0,), 0.0)
    assert math.isnan(result.got) and math.isnan(result.max_abs_diff)
    assert result.reason == "NaN where a number is expected"
    assert math.isnan(max_abs_diff(want, got))
    assert math.isnan(max_abs_diff(got, want))
    assert not compare_outputs(got, want).ok


def test_nan_at_the_same_positions_passes() -> None:
    want = {"y": arrays(np.nan, 1, np.nan)}
    result = compare_outputs(want, {"y": arrays(np.nan, 1, np.nan)})
    assert result.ok and result.max_abs_diff == 0.0
    assert max_abs_diff(want, want) == 0.0


def test_a_nan_in_one_output_does_not_hide_a_mismatch_in_another() -> None:
    want = {"a": arrays(np.nan, 2), "b": arrays(1, 2, 3)}
    got = {"a": arrays(np.nan, 2), "b": arrays(1, 2, 4)}
    result = compare_outputs(want, got)
    assert not result.ok
    assert (result.output, result.index, result.expected, result.got) == ("b", (2,), 3.0, 4.0)
    assert result.max_abs_diff == 1.0 and max_abs_diff(want, got) == 1.0


def test_infinities_must_match_in_position_and_sign() -> None:
    plus = {"y": arrays(np.inf, -np.inf, 1)}
    assert compare_outputs(plus, {"y": arrays(np.inf, -np.inf, 1)}).ok
    assert max_abs_diff(plus, plus) == 0.0
    flipped = compare_outputs(plus, {"y": arrays(-np.inf, -np.inf, 1)})
    assert not flipped.ok and flipped.index == (0,) and flipped.got == -np.inf
    assert flipped.reason == "infinities differ"
    assert max_abs_diff(plus, {"y": arrays(-np.inf, -np.inf, 1)}) == np.inf
    finite = compare_outputs(plus, {"y": arrays(3e38, -np.inf, 1)})
    assert not finite.ok and finite.index == (0,) and finite.max_abs_diff == np.inf
    # A huge tolerance does not excuse a wrong infinity.
    assert not compare_outputs(plus, {"y": arrays(1, -np.inf, 1)}, tolerance=1e30).ok


def test_default_tolerances_by_dtype() -> None:
    assert default_rtol(np.float32) == 1e-4
    assert default_rtol(np.float64) == 1e-11
    assert default_rtol(np.float16) == 1e-2
    assert default_rtol(np.int64) == default_rtol(np.uint8) == default_rtol(np.bool_) == 0.0


@pytest.mark.parametrize(("dtype", "rtol"), [(np.float32, 1e-4), (np.float64, 1e-11),
                                             (np.float16, 1e-2)])
def test_finite_values_pass_within_rtol_times_the_output_scale(dtype: type, rtol: float) -> None:
    # Scale 8 (the largest finite magnitude; infinities and NaN do not count): values 8 * rtol
    # apart pass, 3 * 8 * rtol apart fail, whatever the element's own size.
    want = np.array([0.5, -8.0, np.inf, np.nan], np.float64)
    for step, ok in ((0.5, True), (3.0, False)):
        got = want.copy()
        got[0] += step * 8 * rtol
        result = compare_outputs({"y": want.astype(dtype)}, {"y": got.astype(dtype)})
        assert result.ok is ok, (dtype, step, result)
        assert result.scale == 8.0 and result.rtol == rtol
        assert result.tolerance == pytest.approx(8 * rtol)
        assert result.index == (0,)


def test_integers_and_booleans_are_exact_unless_a_tolerance_is_given() -> None:
    want = {"q": np.array([10, 20, 30], np.uint8), "m": np.array([True, False])}
    assert compare_outputs(want, want).ok
    off = {"q": np.array([10, 21, 30], np.uint8), "m": np.array([True, False])}
    result = compare_outputs(want, off)
    assert not result.ok and (result.output, result.index) == ("q", (1,))
    assert (result.expected, result.got, result.tolerance) == (20.0, 21.0, 0.0)
    # A tolerance relative to the output's scale (30): one step of 1 is within 0.05 * 30.
    assert compare_outputs(want, off, tolerance=0.05).ok
    flipped = compare_outputs(want, {"q": want["q"], "m": np.array([True, True])})
    assert not flipped.ok and (flipped.output, flipped.index) == ("m", (1,))


def test_the_worst_element_is_the_largest_excess_over_the_tolerance() -> None:
    want = {"small": np.zeros((2, 3), F32) + 1, "large": np.full((2, 2), 1000.0, F32)}
    got = {"small": want["small"].copy(), "large": want["large"].copy()}
    got["small"][1, 2] += 0.5    # tolerance 1e-4: over by ~0.5
    got["large"][0, 1] += 0.09   # tolerance 0.1: within
    got["large"][1, 0] += 0.3    # tolerance 0.1: over by 0.2
    result = compare_outputs(want, got)
    assert not result.ok
    assert (result.output, result.index) == ("small", (1, 2))
    assert result.expected == 1.0 and result.got == 1.5
    assert result.max_abs_diff == 0.5
    assert "output 'small' element [1, 2]: expected 1, got 1.5" in str(result)


def test_shape_and_count_mismatches_fail() -> None:
    assert not compare_outputs({"y": arrays(1, 2)}, {"y": arrays(1, 2, 3)}).ok
    assert not compare_outputs({"y": arrays(1)}, {}).ok
    assert compare_outputs({}, {}).ok


def test_old_callers_keep_their_meaning_for_finite_data() -> None:
    a = {"y": arrays(1, 2), "z": arrays(-3)}
    b = {"y": arrays(1, 2.5), "z": arrays(-3)}
    assert max_abs_diff(a, b) == 0.5
    result = compare_outputs(a, b)
    assert float(result) == 0.5 and result == 0.5 and result != 0.0
    assert isinstance(result, Comparison)


def test_compare_runs_the_interpreter_against_onnxruntime() -> None:
    g = load("mlp").build(seed=0, batch=2)
    feeds = random_feeds(g, seed=1)
    result = compare(g, feeds)
    assert result.ok and result == result.max_abs_diff
    assert result.max_abs_diff <= result.tolerance


def test_a_changed_weight_in_the_onnx_file_fails() -> None:
    g = load("cnn").build(seed=0, batch=1)
    feeds = random_feeds(g, seed=2)
    model = to_onnx(g)
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(weight).copy()
    array.reshape(-1)[:4] += 0.5
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    onnx.checker.check_model(model)
    result = compare_outputs(run(g, feeds), run_onnxruntime(model, feeds))
    assert not result.ok and result.reason.endswith("over the tolerance")
    assert result.max_abs_diff > result.tolerance > 0


def test_a_nan_in_one_output_of_a_graph_is_found() -> None:
    from graphc.ir import Graph

    g = Graph("two")
    x = g.add_input("x", (3,))
    g.outputs = [g.add_node("Log", [x], name="log"), g.add_node("Neg", [x], name="neg")]
    feeds = {"x": arrays(-1, 1, 2)}
    want = run(g, feeds)
    assert math.isnan(float(want["log"][0]))
    got = dict(want)
    got["neg"] = want["neg"] + F32(1)
    result = compare_outputs(want, got)
    assert not result.ok and result.output == "neg"
    assert compare(g, feeds).ok
