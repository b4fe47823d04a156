"""Im2Col: a Conv rewritten as Gemm over Im2Col (what training does) computes the same output."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import ops
from graphc.interpret import run
from graphc.ir import Graph, Value
from graphc.onnxio.runtime import run_onnxruntime
from graphc.train.step import _conv_im2col

CONV_CASES = [
    pytest.param(example, id=example.name or str(k))
    for k, example in enumerate(ops.REGISTRY["Conv"].examples)
    if example.attrs.get("group", 1) == 1 and example.inputs[0].ndim == 4
]


def conv_graph(example: ops.Example) -> tuple[Graph, dict[str, np.ndarray]]:
    g = Graph("conv")
    x = np.asarray(example.inputs[0], np.float64)
    inputs = [g.add_input("x", x.shape, np.float64)]
    for k, array in enumerate(example.inputs[1:], start=1):
        inputs.append(None if array is None else
                      g.add_const(f"p{k}", np.asarray(array, np.float64), trainable=True))
    g.outputs = [g.add_node("Conv", inputs, example.attrs, name="conv")]
    return g, {"x": x}


def test_there_are_cases() -> None:
    assert len(CONV_CASES) >= 4


@pytest.mark.parametrize("example", CONV_CASES)
def test_gemm_over_im2col_equals_conv(example: ops.Example) -> None:
    g, feeds = conv_graph(example)
    want = run(g, feeds)["conv"]
    lowered = g.copy()
    _conv_im2col(lowered, "conv")
    lowered.remove_dead()
    assert "Conv" not in {lowered.op(n) for n in lowered.op_nodes()}
    assert "Im2Col" in {lowered.op(n) for n in lowered.op_nodes()}
    got = run(lowered, feeds)[lowered.output_names()[0]]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    on_ort = run_onnxruntime(lowered, feeds)
    np.testing.assert_allclose(next(iter(on_ort.values())), want, rtol=1e-10, atol=1e-10)


def test_im2col_columns_by_hand() -> None:
    """A 1x1x3x3 image, 2x2 kernel, no padding: column (oy, ox) holds its window row-major."""
    g = Graph("cols")
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    g.outputs = [g.add_node("Im2Col", [g.add_input("x", x.shape, np.float64)],
                            {"kernel_shape": [2, 2]}, name="cols")]
    cols = run(g, {"x": x})["cols"]
    assert cols.tolist() == [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
    assert g.type_of(Value("cols")).shape == (4, 4)
