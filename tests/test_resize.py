"""Resize's options that exist from opset 18 or 19 only (the op's examples in the registry run
at opset 17 too): antialias, half_pixel_symmetric and the keep_aspect_ratio_policy values, against
onnxruntime and ONNX's shape inference at the newest opset, refused below, and their gradient
against central finite differences."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphc.autodiff import gradient_graph
from graphc.errors import ExportError, OpError
from graphc.interpret import run
from graphc.ir import Graph
from graphc.onnxio.export import max_opset, to_onnx
from graphc.onnxio.runtime import run_onnxruntime
from graphc.ops.base import rng_array

SYMMETRIC = {"coordinate_transformation_mode": "half_pixel_symmetric"}
# (input shape, scales or None, sizes or None, attributes, first opset)
CASES = {
    "symmetric-linear-down": ((1, 1, 4, 4), (1, 1, 0.6, 0.6), None,
                              {**SYMMETRIC, "mode": "linear"}, 19),
    "symmetric-nearest-up": ((1, 2, 3, 4), (1, 1, 2.5, 1.7), None,
                             {**SYMMETRIC, "mode": "nearest"}, 19),
    "symmetric-cubic-2d": ((5, 6), (1.5, 0.7), None, {**SYMMETRIC, "mode": "cubic"}, 19),
    "not-larger-nearest": ((1, 2, 4, 5), None, (6, 9),
                           {"keep_aspect_ratio_policy": "not_larger", "axes": (2, 3)}, 18),
    "not-smaller-linear": ((1, 2, 4, 6), None, (5, 5),
                           {"keep_aspect_ratio_policy": "not_smaller", "axes": (2, 3),
                            "mode": "linear"}, 18),
    "antialias-linear-down": ((1, 1, 4, 6), (1, 1, 0.6, 0.5), None,
                              {"mode": "linear", "antialias": 1}, 18),
    "antialias-cubic-sizes": ((1, 2, 5, 7), None, (1, 2, 3, 3),
                              {"mode": "cubic", "antialias": 1}, 18),
    "antialias-cubic-exclude-2d": ((6, 5), (0.5, 1.6), None,
                                   {"mode": "cubic", "antialias": 1, "exclude_outside": 1,
                                    "coordinate_transformation_mode": "align_corners"}, 18),
}
WANT_SHAPES = {"not-larger-nearest": (1, 2, 6, 8), "not-smaller-linear": (1, 2, 5, 8)}


def resize_graph(name: str, dtype: type = np.float32) -> tuple[Graph, np.ndarray]:
    shape, scales, sizes, attrs, _ = CASES[name]
    g = Graph(name.replace("-", "_"))
    x = g.add_input("x", shape, dtype)
    inputs = [x, None,
              None if scales is None else g.add_const("scales", np.array(scales, np.float32)),
              None if sizes is None else g.add_const("sizes", np.array(sizes, np.int64))]
    while inputs[-1] is None:
        inputs.pop()
    g.outputs = [g.add_node("Resize", inputs, attrs, name="y")]
    g.verify()
    return g, rng_array(shape, seed=len(name), dtype=dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_matches_onnxruntime_at_the_newest_opset(name: str) -> None:
    g, x = resize_graph(name)
    want = run(g, {"x": x})["y"]
    if name in WANT_SHAPES:
        assert want.shape == WANT_SHAPES[name]
    got = run_onnxruntime(to_onnx(g, max_opset()), {"x": x})["y"]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("name", list(CASES))
def test_shape_rule_matches_onnx_shape_inference(name: str) -> None:
    g, _ = resize_graph(name)
    model = to_onnx(g, max_opset())
    del model.graph.output[:]
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = next(v for v in inferred.graph.value_info if v.name == "y").type.tensor_type.shape.dim
    assert tuple(d.dim_value for d in dims) == g.type_of(g.outputs[0]).shape


@pytest.mark.parametrize("name", list(CASES))
def test_older_opsets_are_refused(name: str) -> None:
    g, _ = resize_graph(name)
    since = CASES[name][4]
    with pytest.raises(ExportError, match=rf"does not exist at opset {since - 1}; expected "
                                          rf"opset >= {since}"):
        to_onnx(g, since - 1)


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_matches_central_finite_differences(name: str) -> None:
    g, x = resize_graph(name, np.float64)
    r = np.random.default_rng(7).standard_normal(g.type_of(g.outputs[0]).shape)
    weighted = g.add_node("Mul", [g.outputs[0], g.add_const("r", r)])
    g.outputs = [g.add_node("ReduceSum", [weighted], {"keepdims": 0}, name="loss")]
    got = run(gradient_graph(g, output="loss", wrt=["x"]), {"x": x})["dloss/dx"]
    h = 1e-6
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        fd = (float(run(g, {"x": up})["loss"]) - float(run(g, {"x": down})["loss"])) / (2 * h)
        assert abs(got[index] - fd) <= 1e-6 * max(1.0, abs(fd)), (index, got[index], fd)


def test_antialias_with_nearest_is_refused() -> None:
    g = Graph("nearest_antialias")
    x = g.add_input("x", (1, 1, 4, 4))
    scales = g.add_const("scales", np.array([1, 1, 0.5, 0.5], np.float32))
    with pytest.raises(OpError, match=r"Resize with antialias needs mode 'linear' or 'cubic'; "
                                      r"expected antialias=0 for nearest, got antialias=1"):
        g.add_node("Resize", [x, None, scales], {"antialias": 1})
