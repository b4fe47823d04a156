"""Reverse-mode autodiff over the IR: every op's vjp against central finite differences in
float64 (table-driven over the registry), the kink conventions, several users, and gradient
graphs that run on onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import nn, ops
from graphc.autodiff import gradient_graph
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError
from graphc.interpret import run
from graphc.ir import Graph, Value
from graphc.models import load
from graphc.onnxio.runtime import run_onnxruntime

H = 1e-6
KINKS = {"Relu": lambda a: [0.0], "LeakyRelu": lambda a: [0.0],
         "Heaviside": lambda a: [a.get("threshold", 0.0)]}

CASES = [
    pytest.param(op, example, id=f"{op.name}-{example.name or k}")
    for op in ops.REGISTRY.values() if op.vjp is not None
    for k, example in enumerate(op.examples)
    if all(a is None or a.dtype.kind == "f" or i in example.consts
           for i, a in enumerate(example.inputs))
]


def float64_graph(op: ops.OpDef, example: ops.Example) -> tuple[Graph, dict[str, np.ndarray]]:
    """The example in float64, its float non-constant inputs as graph inputs, and the loss
    sum(y * r) for a fixed random r."""
    g = Graph(f"{op.name.lower()}_grad")
    feeds, values = {}, []
    for k, array in enumerate(example.inputs):
        if array is None:
            values.append(None)
            continue
        array = np.asarray(array, dtype=np.float64 if array.dtype.kind == "f" else array.dtype)
        if k in example.consts:
            values.append(g.add_const(f"c{k}", array))
        else:
            feeds[f"in{k}"] = array
            values.append(g.add_input(f"in{k}", array.shape, array.dtype))
    y = g.add_node(op.name, values, example.attrs, name="y")
    r = np.random.default_rng(7).standard_normal(g.type_of(y).shape)
    weighted = g.add_node("Mul", [y, g.add_const("r", r)])
    g.outputs = [g.add_node("ReduceSum", [weighted], {"keepdims": 0}, name="loss")]
    return g, feeds


def near_kink(op: ops.OpDef, example: ops.Example, x: float) -> bool:
    kinks = KINKS.get(op.name, lambda a: [])(example.attrs)
    if op.name == "Clip":
        kinks = [float(a) for i, a in enumerate(example.inputs) if i > 0 and a is not None]
    return any(abs(x - k) < 1e-3 for k in kinks)


@pytest.mark.parametrize(("op", "example"), CASES)
def test_vjp_matches_central_finite_differences(op: ops.OpDef, example: ops.Example) -> None:
    if "ties" in example.name:
        pytest.skip("at a tie the derivative does not exist: see test_max_pool_ties")
    g, feeds = float64_graph(op, example)
    if not np.isfinite(run(g, feeds)["loss"]):
        pytest.skip("the forward output is not finite: see test_max_pool_padding_only_windows")
    grads = run(gradient_graph(g, output="loss", wrt=list(feeds)), feeds)
    for name, x in feeds.items():
        got = grads[f"dloss/d{name}"]
        assert got.shape == x.shape and got.dtype == x.dtype
        for index in np.ndindex(x.shape):
            if near_kink(op, example, float(x[index])):
                continue
            up, down = dict(feeds), dict(feeds)
            up[name] = x.copy()
            down[name] = x.copy()
            up[name][index] += H
            down[name][index] -= H
            fd = (float(run(g, up)["loss"]) - float(run(g, down)["loss"])) / (2 * H)
            assert abs(got[index] - fd) <= 1e-6 * max(1.0, abs(fd)), (name, index, got[index], fd)


@pytest.mark.parametrize(("act", "at_zero"), [("relu", [0.0, 0.0, 1.0]),
                                              ("leaky_relu", [0.25, 1.0, 1.0])])
def test_kink_conventions(act: str, at_zero: list[float]) -> None:
    # The course: ReLU'(0) = 0; LeakyReLU = (x < 0) alpha x + (x >= 0) x, so its slope at 0 is 1.
    b = GraphBuilder(act, dtype=np.float64)
    x = b.input("x", (3,))
    y = nn.relu(x) if act == "relu" else nn.leaky_relu(x, 0.25)
    b.output(y, "y")
    grads = run(gradient_graph(b.build(), wrt=["x"]), {"x": np.array([-1.0, 0.0, 2.0])})
    np.testing.assert_array_equal(grads["dy/dx"], at_zero)


def test_a_value_with_two_users_gets_both_paths() -> None:
    b = GraphBuilder("two_users", dtype=np.float64)
    x, y, z = b.inputs("x", "y", "z")
    b.output(x * y + x * z + x * x, "f")
    grads = run(gradient_graph(b.build(), wrt=["x", "y"]), {"x": 3.0, "y": 2.0, "z": -5.0})
    assert float(grads["df/dx"]) == 2.0 + -5.0 + 2 * 3.0
    assert float(grads["df/dy"]) == 3.0


def test_course_example_and_default_wrt_are_the_parameters() -> None:
    g = load("mlp_tiny").build()
    gg = gradient_graph(g)
    assert gg.output_names() == ["y"] + [f"dy/d{p}" for p in g.params()]


def test_gradient_graph_runs_on_onnxruntime_like_the_interpreter() -> None:
    module = load("mlp")
    g = module.build(batch=4)
    gg = gradient_graph(g)
    feeds = module.example_inputs(batch=4)
    want = run(gg, feeds)
    got = run_onnxruntime(gg, feeds)
    assert list(got) == list(want)
    for name, w in want.items():
        np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(w).max()))


def test_an_op_without_a_gradient_rule_is_named() -> None:
    b = GraphBuilder("no_rule")
    x = b.input("x", (4,))
    b.output(b.op("Cast", x * 2.0, to=11), "y")
    with pytest.raises(GraphcError, match="Cast has no gradient rule"):
        gradient_graph(b.build(), wrt=["x"])


def test_max_pool_ties_send_the_gradient_to_the_first_maximum() -> None:
    b = GraphBuilder("ties", dtype=np.float64)
    x = b.input("x", (1, 1, 4, 4))
    b.output(nn.max_pool2d(x, 2, stride=1, padding=1), "y")
    g = b.build()
    x_val = np.array([[1, 1, 0, 2], [1, 0, 2, 2], [0, 0, 0, 0], [3, 3, 3, 3]],
                     np.float64).reshape(1, 1, 4, 4)
    grads = run(gradient_graph(g, wrt=["x"]), {"x": x_val})["dy/dx"]
    # Each window adds 1 at its first maximum in row-by-row order over its real cells.
    want = np.zeros((4, 4))
    for i in range(5):
        for j in range(5):
            cells = [(r, c) for r in range(i - 1, i + 1) for c in range(j - 1, j + 1)
                     if 0 <= r < 4 and 0 <= c < 4]
            best = max(x_val[0, 0, r, c] for r, c in cells)
            want[next((r, c) for r, c in cells if x_val[0, 0, r, c] == best)] += 1
    np.testing.assert_array_equal(grads[0, 0], want)


def test_tiling_max_pool_ties_match_onnxruntime_indices() -> None:
    """Windows that tile the input take the gradient path without Indices: at ties (common
    after ReLU) it must still pick the first maximum, as MaxPool's Indices on onnxruntime do."""
    b = GraphBuilder("tiled", dtype=np.float32)
    x = b.input("x", (2, 3, 6, 4))
    pooled = b.graph.add_node("MaxPool", [x.value], {"kernel_shape": [2, 2], "strides": [2, 2]},
                              name="pool")
    b.graph.outputs = [pooled, Value("pool", 1)]
    g = b.build()
    rng = np.random.default_rng(3)
    x_val = np.maximum(rng.integers(-2, 3, size=(2, 3, 6, 4)), 0).astype(np.float32)
    indices = list(run_onnxruntime(g, {"x": x_val}).values())[1].reshape(-1)
    assert len(set(np.round(x_val.reshape(-1), 3))) <= 3  # plenty of ties
    grad_graph = b.graph.copy()
    grad_graph.outputs = [pooled]
    grads = gradient_graph(grad_graph, wrt=["x"])
    assert "MaxPool" in {grads.op(n) for n in grads.op_nodes()}
    assert not grads.users(Value("pool", 1))  # the Indices output is not used
    want = np.zeros(x_val.size, np.float32)
    np.add.at(want, indices, 1.0)
    for result in (run(grads, {"x": x_val}), run_onnxruntime(grads, {"x": x_val})):
        np.testing.assert_array_equal(result["dpool/dx"].reshape(-1), want)


def test_input_graph_is_not_changed_and_unused_wrt_gets_zeros() -> None:
    b = GraphBuilder("unused", dtype=np.float64)
    x, y = b.inputs("x", "y")
    b.output(x * 2.0, "f")
    g = b.build()
    text = g.format()
    grads = run(gradient_graph(g, wrt=["x", "y"]), {"x": 1.0, "y": 1.0})
    assert g.format() == text
    assert float(grads["df/dx"]) == 2.0 and float(grads["df/dy"]) == 0.0
    assert Value("x") in [Value(n) for n in g.inputs]


def test_max_pool_padding_only_windows_get_no_gradient() -> None:
    # Dilation 4 with 3 rows of padding on each side: output row 2 reads rows -1 and 3 only.
    attrs = {"kernel_shape": [2, 2], "dilations": [4, 1], "pads": [3, 0, 3, 0]}
    x = np.random.default_rng(3).standard_normal((1, 1, 3, 3))
    b = GraphBuilder("pad_only", dtype=np.float64)
    b.output(b.op("MaxPool", b.input("x", x.shape), **attrs), "y")
    g = b.build()
    assert g.type_of(g.outputs[0]).shape == (1, 1, 5, 2)
    grads = run(gradient_graph(g, wrt=["x"]), {"x": x})["dy/dx"]
    want = np.zeros((3, 3))
    for i in range(5):
        for j in range(2):
            cells = [(r, c) for r in (i - 3, i + 1) for c in (j, j + 1) if 0 <= r < 3]
            if cells:
                best = max(x[0, 0, r, c] for r, c in cells)
                want[next((r, c) for r, c in cells if x[0, 0, r, c] == best)] += 1
    np.testing.assert_array_equal(grads[0, 0], want)


@pytest.mark.parametrize("name", ["cnn", "residual", "lenet5", "student"])
def test_zoo_gradient_graphs_agree_on_onnxruntime(name: str) -> None:
    module = load(name)
    g = module.build(batch=2)
    feeds = module.example_inputs(batch=2)
    gg = gradient_graph(g)
    want = run(gg, feeds)
    got = run_onnxruntime(gg, feeds)
    assert list(got) == list(want)
    for key, w in want.items():
        scale = max(1.0, float(np.abs(w).max()))
        assert float(np.abs(got[key] - w).max()) <= 1e-4 * scale, key
