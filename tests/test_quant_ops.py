"""Quantized ops: arithmetic against hand-computed numbers, bit-exactness on onnxruntime, the
opset rules (block_size and output_dtype from 21, the arithmetic form from 28), the integer
products against float computations, refusals, and the gradients (the straight-through
estimator of FakeQuantizeLinear, DequantizeLinear's scale gradient, the refusal to cross
integers)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest

import graphc
from graphc import ops

QUANT_OPS = ["QuantizeLinear", "DequantizeLinear", "FakeQuantizeLinear", "DynamicQuantizeLinear",
             "Round", "Sign", "QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger"]
# 17: the default; 21: block_size and output_dtype; 27: the last native QuantizeLinear on
# onnxruntime 1.32; 28: QuantizeLinear/DequantizeLinear written as arithmetic.
OPSETS = [17, 21, 27, 28]


def node_graph(op: str, inputs: list[Any], attrs: dict[str, Any] | None = None,
               consts: tuple[int, ...] = ()) -> tuple[graphc.Graph, dict[str, np.ndarray]]:
    """Return a graph applying ``op`` (inputs at ``consts`` are constants) and its feeds."""
    g = graphc.Graph(op.lower())
    values: list[graphc.Value | None] = []
    feeds = {}
    for k, array in enumerate(inputs):
        if array is None:
            values.append(None)
        elif k in consts:
            values.append(g.add_const(f"c{k}", np.asarray(array)))
        else:
            array = np.asarray(array)
            feeds[f"in{k}"] = array
            values.append(g.add_input(f"in{k}", array.shape, array.dtype))
    out = g.add_node(op, values, attrs or {}, name="y")
    g.outputs = [graphc.Value(out.node, k) for k in range(len(g.types(out.node)))]
    g.verify()
    return g, feeds


def run_both(g: graphc.Graph, feeds: dict[str, np.ndarray], opset: int
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return the interpreter's and onnxruntime's outputs at ``opset``."""
    model = graphc.to_onnx(g, opset)
    onnx.checker.check_model(model, full_check=True)
    return list(graphc.run(g, feeds).values()), list(graphc.run_onnxruntime(model, feeds).values())


def quantize(x: Any, scale: Any, zero_point: Any = None, **attrs: Any) -> np.ndarray:
    """Return QuantizeLinear on the interpreter."""
    inputs = [np.asarray(x, np.float32), np.asarray(scale, np.float32)]
    if zero_point is not None:
        inputs.append(zero_point)
    g, feeds = node_graph("QuantizeLinear", inputs, attrs, consts=(1, 2))
    return graphc.run(g, feeds)["y"]


def dequantize(x: Any, scale: Any, zero_point: Any = None, **attrs: Any) -> np.ndarray:
    """Return DequantizeLinear on the interpreter."""
    inputs = [x, np.asarray(scale, np.float32)] + ([] if zero_point is None else [zero_point])
    g, feeds = node_graph("DequantizeLinear", inputs, attrs, consts=(1, 2))
    return graphc.run(g, feeds)["y"]


# ----- every example, bit for bit -------------------------------------------------------------


EXAMPLES = [pytest.param(ops.REGISTRY[name], ex, id=f"{name}-{ex.name}")
            for name in QUANT_OPS for ex in ops.REGISTRY[name].examples]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize(("op", "example"), EXAMPLES)
def test_examples_are_bit_exact_on_onnxruntime(op: ops.OpDef, example: ops.Example,
                                               opset: int) -> None:
    # test_ops allows 1e-5 of the output's scale; integer outputs must be identical, and the
    # float outputs here (a dequantized integer times a scale) are computed identically too.
    g, feeds = node_graph(op.name, list(example.inputs), example.attrs, example.consts)
    want, got = run_both(g, feeds, opset)
    for w, h in zip(want, got, strict=True):
        assert h.dtype == w.dtype and h.shape == w.shape
        np.testing.assert_array_equal(h, w)


def test_examples_cover_ties_saturation_negative_zero_points_and_per_axis() -> None:
    q = ops.REGISTRY["QuantizeLinear"].examples
    assert {"ties-u8", "ties-i8-negative-zp", "per-axis-i8"} <= {e.name for e in q}
    conv = ops.REGISTRY["QLinearConv"].examples
    assert any(e.attrs.get("group", 1) > 1 and e.attrs.get("strides") and e.attrs.get("pads")
               for e in conv)
    assert any(np.asarray(e.inputs[4]).size > 1 and len(set(np.asarray(e.inputs[5]))) > 1
               for e in conv)


# ----- QuantizeLinear and DequantizeLinear by hand ------------------------------------------


def test_quantize_rounds_half_to_even() -> None:
    # x / 0.5 = -1.5, -0.5, 0.5, 1.5, 2.5, 3.5: ties go to the even neighbour.
    x = [-0.75, -0.25, 0.25, 0.75, 1.25, 1.75]
    np.testing.assert_array_equal(quantize(x, 0.5, np.uint8(10)), [8, 10, 10, 12, 12, 14])
    np.testing.assert_array_equal(quantize(x, 0.5, np.int8(-3)), [-5, -3, -3, -1, -1, 1])


def test_quantize_saturates_at_both_ends() -> None:
    x = [-129.0, -128.5, -128.0, 126.5, 127.0, 127.5, 1e9]
    np.testing.assert_array_equal(quantize(x, 1.0, np.uint8(128)),
                                  [0, 0, 0, 254, 255, 255, 255])
    np.testing.assert_array_equal(quantize(x, 1.0, np.int8(0)),
                                  [-128, -128, -128, 126, 127, 127, 127])
    # A negative zero point moves the window: int8 with zp -100 holds x in [-28, 227].
    np.testing.assert_array_equal(quantize([-28.0, -29.0, 227.0, 228.0], 1.0, np.int8(-100)),
                                  [-128, -128, 127, 127])


def test_quantize_without_zero_point_is_uint8_from_zero() -> None:
    y = quantize([-1.0, 0.0, 0.375, 100.0], 0.25)
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 0, 2, 255])


def test_quantize_per_axis() -> None:
    x = np.array([[[1.0, -1.0]], [[1.0, -1.0]], [[1.0, -1.0]]], np.float32)  # (3, 1, 2)
    y = quantize(x, [0.5, 0.25, 0.1], np.array([0, -10, 100], np.int8), axis=0)
    np.testing.assert_array_equal(y.reshape(3, 2), [[2, -2], [-6, -14], [110, 90]])
    y = quantize(x.reshape(1, 3, 2), [0.5, 0.25], np.array([1, 2], np.uint8), axis=-1)
    np.testing.assert_array_equal(y.reshape(3, 2), [[3, 0]] * 3)


def test_dequantize_by_hand() -> None:
    np.testing.assert_array_equal(
        dequantize(np.array([0, 127, 128, 255], np.uint8), 0.5, np.uint8(128)),
        np.float32([-64.0, -0.5, 0.0, 63.5]))
    np.testing.assert_array_equal(
        dequantize(np.array([-128, 0, 127], np.int8), 0.25, np.int8(-3)),
        np.float32([-31.25, 0.75, 32.5]))
    weights = np.array([[1, -1], [1, -1]], np.int8)
    np.testing.assert_array_equal(
        dequantize(weights, [0.5, 2.0], np.array([0, 1], np.int8), axis=0),
        np.float32([[0.5, -0.5], [0.0, -4.0]]))
    # The int32 bias pattern: no zero point, scale = s_x * s_w per output channel.
    bias = np.array([1000, -2**31, 16777217], np.int32)
    np.testing.assert_array_equal(dequantize(bias, [1e-3, 1.0, 1.0], axis=0),
                                  np.float32([1000 * np.float32(1e-3), -2.0**31, 16777216.0]))


def test_blocked_quantization_exists_from_opset_21() -> None:
    x = np.array([[0.5, 1.0, 1.5, 2.0, 2.5], [-0.5, -1.0, -1.5, -2.0, -2.5]], np.float32)
    scale = np.array([[0.5, 0.25, 1.0], [1.0, 0.5, 0.5]], np.float32)  # blocks of 2 on axis 1
    zero = np.array([[0, 10, 0], [5, 0, -5]], np.int8)
    g, feeds = node_graph("QuantizeLinear", [x, scale, zero], {"axis": 1, "block_size": 2},
                          consts=(1, 2))
    want = np.array([[1, 2, 16, 18, 2], [5, 4, -3, -4, -10]], np.int8)
    for opset in (21, 28):
        interpreted, onnxruntime = run_both(g, feeds, opset)
        np.testing.assert_array_equal(interpreted[0], want)
        np.testing.assert_array_equal(onnxruntime[0], want)
    with pytest.raises(graphc.GraphcError,
                       match="block_size of QuantizeLinear does not exist at opset 17"):
        graphc.to_onnx(g, 17)
    g, feeds = node_graph("DequantizeLinear", [want, scale, zero], {"axis": 1, "block_size": 2},
                          consts=(1, 2))
    back = np.array([[0.5, 1.0, 1.5, 2.0, 2.0], [0.0, -1.0, -1.5, -2.0, -2.5]], np.float32)
    for opset in (21, 28):
        for result in run_both(g, feeds, opset):
            np.testing.assert_array_equal(result[0], back)


def test_output_dtype_and_saturate_follow_their_opsets() -> None:
    x = np.array([-200.0, -1.5, 2.5, 300.0], np.float32)
    g, feeds = node_graph("QuantizeLinear", [x, np.float32(1.0)], {"output_dtype": 3},
                          consts=(1,))
    for result in run_both(g, feeds, 21):
        assert result[0].dtype == np.int8
        np.testing.assert_array_equal(result[0], [-128, -2, 2, 127])
    with pytest.raises(graphc.GraphcError, match="output_dtype of QuantizeLinear does not exist"):
        graphc.to_onnx(g, 17)
    # saturate only concerns float8: integer outputs saturate either way.
    g, feeds = node_graph("QuantizeLinear", [x, np.float32(1.0), np.uint8(3)], {"saturate": 0},
                          consts=(1, 2))
    for result in run_both(g, feeds, 19):
        np.testing.assert_array_equal(result[0], [0, 1, 5, 255])


def test_from_opset_28_the_pair_is_written_as_arithmetic() -> None:
    x = np.array([[np.nan, -1.25, 0.75, 300.0], [1.0, 2.5, -2.5, -300.0]], np.float32)
    g, feeds = node_graph("QuantizeLinear", [x, np.float32([0.5, 1.0]),
                                             np.array([-7, 4], np.int8)], {"axis": 0},
                          consts=(1, 2))
    assert {n.op_type for n in graphc.to_onnx(g, 27).graph.node} == {"QuantizeLinear"}
    assert "QuantizeLinear" not in {n.op_type for n in graphc.to_onnx(g, 28).graph.node}
    for opset in (27, 28):
        interpreted, onnxruntime = run_both(g, feeds, opset)
        # NaN quantizes to the type's minimum, as onnxruntime's kernel clamps it.
        np.testing.assert_array_equal(interpreted[0], [[-128, -9, -5, 127], [5, 6, 2, -128]])
        np.testing.assert_array_equal(onnxruntime[0], interpreted[0])


def test_refusals_name_the_reason() -> None:
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(graphc.GraphcError, match="scale must be float32"):
        node_graph("QuantizeLinear", [x, np.float16(0.1)], consts=(1,))
    with pytest.raises(graphc.GraphcError, match="per-axis scale does not match axis 1"):
        node_graph("QuantizeLinear", [x, np.ones(2, np.float32)], consts=(1,))
    with pytest.raises(graphc.GraphcError, match="unknown attribute of QuantizeLinear"):
        node_graph("QuantizeLinear", [x, np.float32(0.1)], {"precision": 1}, consts=(1,))
    with pytest.raises(graphc.GraphcError, match="blocked scale has the wrong shape"):
        node_graph("QuantizeLinear", [x, np.ones((2, 1), np.float32)],
                   {"axis": 1, "block_size": 2}, consts=(1,))
    with pytest.raises(graphc.GraphcError, match="zero point and scale differ in shape"):
        node_graph("DequantizeLinear", [np.zeros((2, 3), np.uint8), np.ones(3, np.float32),
                                        np.uint8(0)], consts=(1, 2))
    u8 = np.zeros((1, 2, 4, 4), np.uint8)
    with pytest.raises(graphc.GraphcError, match="int8 activations and uint8 weights"):
        node_graph("QLinearConv", [u8.astype(np.int8), np.float32(1), np.int8(0),
                                   np.zeros((2, 2, 1, 1), np.uint8), np.float32(1), np.uint8(0),
                                   np.float32(1), np.int8(0)])
    with pytest.raises(graphc.GraphcError, match="ConvInteger w_zero_point must be per tensor"):
        node_graph("ConvInteger", [u8, np.zeros((3, 2, 1, 1), np.int8), np.uint8(0),
                                   np.zeros(3, np.int8)])
    with pytest.raises(graphc.GraphcError, match="QLinearMatMul a scale and zero point"):
        node_graph("QLinearMatMul", [np.zeros((3, 4), np.uint8), np.ones(3, np.float32),
                                     np.zeros(3, np.uint8), np.zeros((4, 2), np.uint8),
                                     np.float32(1), np.uint8(0), np.float32(1), np.uint8(0)])


# ----- DynamicQuantizeLinear against the ONNX formula -----------------------------------------


def dynamic(x: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Return DynamicQuantizeLinear's (y, scale, zero point) on the interpreter."""
    g, feeds = node_graph("DynamicQuantizeLinear", [np.asarray(x, np.float32)])
    y, scale, zero = graphc.run(g, feeds).values()
    return y, float(scale), int(zero)


def test_dynamic_quantize_follows_the_onnx_formula() -> None:
    x = np.array([-1.0, 0.6, 2.0, 0.01], np.float32)
    y, scale, zero = dynamic(x)
    # Range [-1, 2] (it already holds 0): scale 3/255, zero point round(0 + 1 / scale) = 85.
    assert scale == np.float32(np.float32(3.0) / np.float32(255.0))
    assert zero == 85
    np.testing.assert_array_equal(y, [0, 85 + 51, 255, 85 + 1])
    # All positive: the range is widened to hold 0, so the zero point is 0.
    y, scale, zero = dynamic(np.array([0.7, 2.0], np.float32))
    assert (scale, zero) == (np.float32(np.float32(2.0) / np.float32(255.0)), 0)
    np.testing.assert_array_equal(y, [89, 255])  # 0.7 * 127.5 = 89.25
    # All negative: the zero point saturates at 255.
    assert dynamic(np.array([-3.0, -1.0], np.float32))[2] == 255


@pytest.mark.parametrize(("k", "rounded"), [(10, 10), (11, 12), (100, 100), (101, 102)])
def test_dynamic_zero_point_rounds_half_to_even(k: int, rounded: int) -> None:
    x = np.array([-1.0, 255.0 / (k + 0.5) - 1.0], np.float32)
    scale = (x[1] - x[0]) / np.float32(255)
    assert np.float32(0) - x[0] / scale == k + 0.5  # an exact tie
    assert dynamic(x)[2] == rounded


def test_dynamic_quantize_of_zeros_uses_scale_one_like_onnxruntime() -> None:
    # The ONNX text divides 0 by 0 here; onnxruntime (and graphc) use scale 1, zero point 0.
    g, feeds = node_graph("DynamicQuantizeLinear", [np.zeros(4, np.float32)])
    for result in run_both(g, feeds, 17):
        assert (float(result[1]), int(result[2])) == (1.0, 0)
        np.testing.assert_array_equal(result[0], np.zeros(4, np.uint8))


# ----- integer products against float computations --------------------------------------------


def assert_within_half_step(y: np.ndarray, real: np.ndarray, y_scale: float, y_zero: int
                            ) -> None:
    """The requantized output is the real result to within half a step, or saturated."""
    info = np.iinfo(y.dtype)
    ideal = real / y_scale + y_zero
    inside = (ideal > info.min) & (ideal < info.max)
    assert inside.mean() > 0.5  # the check would be empty otherwise
    error = np.abs((y.astype(np.float64) - y_zero) * y_scale - real)
    # Half a step, plus float32 rounding of the multiplier and of the product.
    assert float(error[inside].max()) <= (0.5 + 1e-4) * y_scale
    np.testing.assert_array_equal(y[ideal >= info.max], info.max)
    np.testing.assert_array_equal(y[ideal <= info.min], info.min)


def test_qlinear_matmul_is_the_float_product_within_half_a_step() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (6, 40)).astype(np.uint8)
    b = rng.integers(-64, 64, (40, 7)).astype(np.int8)
    sa, za, sy, zy = np.float32(0.02), np.uint8(118), np.float32(0.05), np.uint8(100)
    sb = rng.uniform(0.005, 0.02, 7).astype(np.float32)
    zb = rng.integers(-3, 4, 7).astype(np.int8)
    real = ((a.astype(np.float64) - za) * sa) @ ((b.astype(np.float64) - zb) * sb)
    g, feeds = node_graph("QLinearMatMul", [a, sa, za, b, sb, zb, sy, zy], consts=(3, 4, 5))
    for y in run_both(g, feeds, 17):
        assert_within_half_step(y[0], real, float(sy), int(zy))


def test_qlinear_conv_is_the_float_conv_within_half_a_step() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (2, 4, 9, 8)).astype(np.uint8)
    w = rng.integers(-64, 64, (6, 2, 3, 3)).astype(np.int8)
    sx, zx, sy, zy = np.float32(0.03), np.uint8(120), np.float32(0.08), np.uint8(128)
    sw = rng.uniform(0.005, 0.02, 6).astype(np.float32)
    zw = np.array([0, 1, -1, 2, 0, -3], np.int8)
    bias = rng.integers(-3000, 3000, 6).astype(np.int32)
    attrs = {"group": 2, "strides": [2, 1], "pads": [1, 2, 0, 1], "dilations": [1, 2]}
    # The float reference: graphc's Conv (float64) on the dequantized tensors.
    xf = (x.astype(np.float64) - zx) * sx
    wf = (w.astype(np.float64) - zw.reshape(6, 1, 1, 1)) * sw.reshape(6, 1, 1, 1)
    bf = bias * (np.float64(sx) * sw)
    fg, ffeeds = node_graph("Conv", [xf, wf, bf], attrs)
    real = graphc.run(fg, ffeeds)["y"]
    g, feeds = node_graph("QLinearConv", [x, sx, zx, w, sw, zw, sy, zy, bias], attrs,
                          consts=(3, 4, 5, 8))
    for y in run_both(g, feeds, 17):
        assert_within_half_step(y[0], real, float(sy), int(zy))


def test_integer_products_by_hand() -> None:
    a = np.array([[1, 2], [3, 4]], np.uint8)
    b = np.array([[5, -6], [-7, 8]], np.int8)
    g, feeds = node_graph("MatMulInteger", [a, b, np.uint8(1), np.array([1, -2], np.int8)])
    # (a - 1) @ (b - [1, -2]) = [[0, 1], [2, 3]] @ [[4, -4], [-8, 10]]
    for y in run_both(g, feeds, 17):
        np.testing.assert_array_equal(y[0], np.array([[-8, 10], [-16, 22]], np.int32))
    x = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4)
    w = np.array([[[[1, -1], [2, 0]]]], np.int8)
    g, feeds = node_graph("ConvInteger", [x, w, np.uint8(5), np.int8(1)],
                          {"strides": [2, 2], "pads": [1, 1, 0, 0]})
    # Padding holds the zero point (real 0); w - 1 = [[0, -2], [1, -1]].
    xi = np.pad(x[0, 0].astype(np.int64) - 5, ((1, 0), (1, 0)))
    want = np.array([[sum(xi[2 * i + p, 2 * j + q] * [[0, -2], [1, -1]][p][q]
                          for p in range(2) for q in range(2)) for j in range(2)]
                     for i in range(2)], np.int32)
    for y in run_both(g, feeds, 17):
        np.testing.assert_array_equal(y[0][0, 0], want)


# ----- gradients ------------------------------------------------------------------------------


def gradients(g: graphc.Graph, feeds: dict[str, np.ndarray], wrt: list[str]
              ) -> dict[str, np.ndarray]:
    """Gradients of sum(output * r) on the interpreter, checked against onnxruntime."""
    # graphc.autodiff is part of graphc's core (DESIGN.md), imported here for gradient_graph.
    from graphc.autodiff import gradient_graph

    grads = gradient_graph(g, wrt=wrt)
    want = graphc.run(grads, feeds)
    got = graphc.run_onnxruntime(grads, feeds)
    for key, w in want.items():
        np.testing.assert_allclose(got[key], w, rtol=1e-6, atol=1e-6)
    return want


def fake_quant_loss(x: np.ndarray, scale: Any, zero: np.ndarray, r: np.ndarray,
                    **attrs: Any) -> graphc.Graph:
    """Return the graph loss = sum(FakeQuantizeLinear(x, s, zero) * r), x and s inputs."""
    g = graphc.Graph("qat")
    xv = g.add_input("x", x.shape)
    sv = g.add_input("s", np.shape(scale))
    y = g.add_node("FakeQuantizeLinear", [xv, sv, g.add_const("zp", zero)], attrs)
    g.outputs = [g.add_node("ReduceSum", [g.add_node("Mul", [y, g.add_const("r", r)])],
                            {"keepdims": 0}, name="loss")]
    return g


def test_fake_quantize_gradient_is_the_straight_through_estimator() -> None:
    # uint8, zp 10, scale 0.5: the clipping range is [0.5 * (0 - 10), 0.5 * (255 - 10)].
    x = np.array([-6.0, -5.0, -4.9, -1.25, 0.0, 0.3, 1.75, 122.5, 122.6, 200.0], np.float32)
    r = np.arange(1, 11, dtype=np.float32)
    g = fake_quant_loss(x, np.float32(0.5), np.uint8(10), r)
    feeds = {"x": x, "s": np.float32(0.5)}
    grads = gradients(g, feeds, ["x", "s"])
    inside = np.array([0, 1, 1, 1, 1, 1, 1, 1, 0, 0], np.float32)
    np.testing.assert_array_equal(grads["dloss/dx"], r * inside)
    # LSQ: round(x/s) - x/s inside, qmin - zp = -10 below, qmax - zp = 245 above.
    v = x / np.float32(0.5)
    slope = np.where(inside == 1, np.rint(v) - v, np.where(x < 0, -10.0, 245.0))
    np.testing.assert_allclose(grads["dloss/ds"], np.sum(r * slope), rtol=1e-6)


def test_fake_quantize_gradient_per_axis_with_negative_zero_point() -> None:
    x = np.array([[-40.0, 0.7, 40.0], [-0.3, 5.0, 12.8]], np.float32)  # (2, 3), axis 0
    scale = np.array([0.25, 0.1], np.float32)
    zero = np.array([-3, 100], np.int8)
    r = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    g = fake_quant_loss(x, scale, zero, r, axis=0)
    grads = gradients(g, {"x": x, "s": scale}, ["x", "s"])
    # Channel 0 holds [0.25 (-128 + 3), 0.25 (127 + 3)] = [-31.25, 32.5]; channel 1 holds
    # [0.1 (-128 - 100), 0.1 (127 - 100)] = [-22.8, 2.7].
    inside = np.array([[0, 1, 0], [1, 0, 0]], np.float32)
    np.testing.assert_array_equal(grads["dloss/dx"], r * inside)
    v0, v1 = np.float32(0.7) / np.float32(0.25), np.float32(-0.3) / np.float32(0.1)
    want = [1 * -125 + 2 * (np.rint(v0) - v0) + 3 * 130, 4 * (np.rint(v1) - v1) + 5 * 27 + 6 * 27]
    np.testing.assert_allclose(grads["dloss/ds"], want, rtol=1e-5)


def test_the_straight_through_estimator_is_not_the_derivative() -> None:
    # Between rounding steps the forward is flat (derivative 0) while the STE passes dY; in the
    # saturated region both are 0, and the scale's derivative there is qmin - zp or qmax - zp.
    x = np.array([0.3, 200.0], np.float32)
    r = np.ones(2, np.float32)
    g = fake_quant_loss(x, np.float32(0.5), np.uint8(10), r)

    def loss(xv: np.ndarray, s: np.float32) -> float:
        return float(graphc.run(g, {"x": xv, "s": s})["loss"])

    h = np.float32(1e-3)
    for k in range(2):
        up, down = x.copy(), x.copy()
        up[k] += h
        down[k] -= h
        assert loss(up, np.float32(0.5)) == loss(down, np.float32(0.5))
    grads = gradients(g, {"x": x, "s": np.float32(0.5)}, ["x"])
    np.testing.assert_array_equal(grads["dloss/dx"], [1.0, 0.0])
    only_saturated = fake_quant_loss(x[1:], np.float32(0.5), np.uint8(10), r[1:])
    fd = (float(graphc.run(only_saturated, {"x": x[1:], "s": np.float32(0.5) + h})["loss"])
          - float(graphc.run(only_saturated, {"x": x[1:], "s": np.float32(0.5) - h})["loss"])
          ) / (2 * h)
    ds = gradients(only_saturated, {"x": x[1:], "s": np.float32(0.5)}, ["s"])["dloss/ds"]
    assert abs(float(ds) - 245.0) < 1e-4 and abs(fd - 245.0) < 0.1


@pytest.mark.parametrize(("shape", "scale_shape", "attrs"), [
    ((3, 4), (), {}),
    ((3, 4), (3,), {"axis": 0}),
    ((2, 5), (2, 3), {"axis": 1, "block_size": 2}),
])
def test_dequantize_scale_gradient_matches_finite_differences(
        shape: tuple[int, ...], scale_shape: tuple[int, ...], attrs: dict[str, Any]) -> None:
    rng = np.random.default_rng(5)
    q = rng.integers(-128, 128, shape).astype(np.int8)
    zero = rng.integers(-5, 5, scale_shape).astype(np.int8)
    scale = rng.uniform(0.5, 1.5, scale_shape).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    g = graphc.Graph("dq")
    y = g.add_node("DequantizeLinear", [g.add_input("q", shape, np.int8),
                                        g.add_input("s", scale_shape),
                                        g.add_const("zp", zero)], attrs)
    g.outputs = [g.add_node("ReduceSum", [g.add_node("Mul", [y, g.add_const("r", r)])],
                            {"keepdims": 0}, name="loss")]
    from graphc.autodiff import gradient_graph

    got = graphc.run(gradient_graph(g, wrt=["s"]), {"q": q, "s": scale})["dloss/ds"]
    h = np.float32(1e-2)
    for index in np.ndindex(scale_shape):
        up, down = scale.copy(), scale.copy()
        up[index] += h
        down[index] -= h
        fd = (float(graphc.run(g, {"q": q, "s": up})["loss"])
              - float(graphc.run(g, {"q": q, "s": down})["loss"])) / float(up[index] - down[index])
        assert abs(float(got[index]) - fd) <= 1e-3 * max(1.0, abs(fd))


def test_gradient_through_quantize_dequantize_is_refused() -> None:
    from graphc.autodiff import gradient_graph

    g = graphc.Graph("qdq")
    x = g.add_input("x", (4,))
    q = g.add_node("QuantizeLinear", [x, g.add_const("s", np.float32(0.1)),
                                      g.add_const("zp", np.uint8(128))])
    g.outputs = [g.add_node("DequantizeLinear", [q, g.add_const("s2", np.float32(0.1)),
                                                 g.add_const("zp2", np.uint8(128))])]
    with pytest.raises(graphc.GraphcError, match="cannot pass through the integer input") as info:
        gradient_graph(g, wrt=["x"])
    assert "FakeQuantizeLinear" in str(info.value)


def test_fake_quantize_exports_as_the_qdq_pair() -> None:
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    g, feeds = node_graph("FakeQuantizeLinear", [x, np.float32([0.1, 0.2, 0.3]),
                                                 np.array([0, 5, -5], np.int8)], {"axis": 0},
                          consts=(1, 2))
    model = graphc.to_onnx(g, 17)
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "DequantizeLinear"]
    q, _ = node_graph("QuantizeLinear", [x, np.float32([0.1, 0.2, 0.3]),
                                         np.array([0, 5, -5], np.int8)], {"axis": 0},
                      consts=(1, 2))
    codes = graphc.run(q, feeds)["y"]
    want = dequantize(codes, [0.1, 0.2, 0.3], np.array([0, 5, -5], np.int8), axis=0)
    np.testing.assert_array_equal(graphc.run(g, feeds)["y"], want)


# ----- Round and Sign -------------------------------------------------------------------------


def test_round_and_sign_at_their_edges() -> None:
    x = np.array([-2.5, -1.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5], np.float32)
    g, feeds = node_graph("Round", [x])
    for y in run_both(g, feeds, 17):
        np.testing.assert_array_equal(y[0], [-2, -2, 0, 0, 0, 0, 2, 2])
    g, feeds = node_graph("Sign", [x])
    for y in run_both(g, feeds, 17):
        np.testing.assert_array_equal(y[0], [-1, -1, -1, 0, 0, 1, 1, 1])
