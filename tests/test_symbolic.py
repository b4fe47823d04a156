"""Symbolic backprop (graphc.symbolic) against references written here, independent of graphc.

The references: the course's numbers for f = (x + y) z; central finite differences of forward
passes written in float64 numpy in this file (the neuron with every activation, MLPs up to
16-32-10, reading the weights from the graph's Const nodes); sympy.diff of a closed-form 2-2-1
MLP built here from the same weights; onnxruntime running the gradient ONNX model.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sympy as sp

import graphc
from graphc import nn
from graphc.errors import GraphcError
from graphc.ir import Graph
from graphc.models import load
from graphc.ops.elementwise import derivative_in_terms_of_output
from graphc.symbolic.chain_rule import (
    DEFAULT_LIMIT,
    BackpropResult,
    backprop,
    estimate_edges,
)
from graphc.symbolic.codegen import gradient_onnx

COURSE_POINT = {"x": -2.0, "y": 5.0, "z": -4.0}
FD_STEP = 1e-6


def course_result() -> BackpropResult:
    return backprop(load("backprop_example").build(), at=COURSE_POINT)


def central_differences(f: Callable[[np.ndarray], float], p: np.ndarray,
                        h: float = FD_STEP) -> np.ndarray:
    """Return (f(p + h e_i) - f(p - h e_i)) / 2h for every coordinate i of the float64 p."""
    p = np.asarray(p, dtype=np.float64)
    out = np.empty_like(p)
    for i in range(p.size):
        up, down = p.copy(), p.copy()
        up.flat[i] += h
        down.flat[i] -= h
        out.flat[i] = (f(up) - f(down)) / (2 * h)
    return out


def assert_matches_fd(got: np.ndarray, fd: np.ndarray, what: str) -> None:
    """Gradients within 1e-6 relative of finite differences (the absolute floor 1e-9 is the
    noise of a float64 central difference with h = 1e-6, so that exact zeros compare too)."""
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-9, err_msg=what)


# ----- the course's example: f = (x + y) z ----------------------------------------------------


def test_course_example_values_and_gradients():
    r = course_result()
    assert r.value("f") == -12.0
    assert r.value("add") == 3.0  # the course's q = x + y
    assert (r.grad("x"), r.grad("y"), r.grad("z")) == (-4.0, -4.0, 3.0)
    assert [s.name for s in r.wrt] == ["x", "y", "z"]
    # The objective's own gradient is 1: the start of backprop.
    assert r._all_grads()[r.objective] == 1.0


def test_course_example_steps():
    r = course_result()
    got = [(st.node.name, st.wrt.name, str(st.local), st.local_value, st.upstream_value,
            st.product_value) for st in r.steps_list]
    # f = q z: df/dq = z = -4, df/dz = q = 3 (upstream df/df = 1); q = x + y: dq/dx = dq/dy = 1,
    # times the upstream df/dq = -4 gives df/dx = df/dy = -4.
    assert got == [
        ("f", "add", "z", -4.0, 1.0, -4.0),
        ("f", "z", "add", 3.0, 1.0, 3.0),
        ("add", "x", "1", 1.0, -4.0, -4.0),
        ("add", "y", "1", 1.0, -4.0, -4.0),
    ]
    for st in r.steps_list:
        assert st.product == st.local * st.upstream
        assert st.product_value == st.local_value * st.upstream_value
    text = r.steps()
    assert "f = add*z    (value -12, upstream df/df = 1)" in text
    assert "df/dz += local df/dz * upstream df/df = (add) * 1 = 3 * 1 = 3" in text
    assert "df/dadd += local df/dadd * upstream df/df = (z) * 1 = -4 * 1 = -4" in text
    assert "df/dx += local dadd/dx * upstream df/dadd = (1) * -4 = 1 * -4 = -4" in text
    assert "df/dy += local dadd/dy * upstream df/dadd = (1) * -4 = 1 * -4 = -4" in text
    assert r.accumulations == []


def test_course_example_table_and_str():
    r = course_result()
    table = r.table()
    assert str(r) == table
    rows = {}
    for line in table.splitlines()[2:]:
        name, op, forward, grad = line.split()
        rows[name] = (op, float(forward), float(grad))
    assert rows == {"x": ("input", -2, -4), "y": ("input", 5, -4), "z": ("input", -4, 3),
                    "add": ("Add", 3, -4), "f": ("Mul", -12, 1)}


# ----- the neuron y = f(w1 x1 + w2 x2 + w0 x0) with every activation -------------------------

ALPHA = 0.2

# The activations written in numpy, independent of graphc (course conventions at the kinks).
NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda s: s,
    "heaviside": lambda s: (s >= 0) * 1.0,
    "sigmoid": lambda s: 1 / (1 + np.exp(-s)),
    "tanh": np.tanh,
    "relu": lambda s: np.where(s > 0, s, 0.0),
    "leaky_relu": lambda s: np.where(s > 0, s, ALPHA * s),
}


def apply_activation(name: str, s: graphc.Tensor) -> graphc.Tensor:
    if name == "linear":
        return s
    if name == "leaky_relu":
        return nn.leaky_relu(s, alpha=ALPHA, name="act")
    return getattr(nn, name)(s, name="act")


def neuron_graph(activation: str) -> Graph:
    b = graphc.GraphBuilder(f"neuron_{activation}")
    x1, x2 = b.inputs("x1", "x2")
    x0 = b.const(1.0, name="x0")
    w1, w2, w0 = (b.param(n, (), init=np.float32(v)) for n, v in
                  [("w1", 1.0), ("w2", 1.0), ("w0", -1.5)])
    b.output(apply_activation(activation, w1 * x1 + w2 * x2 + w0 * x0), "y")
    return b.build()


NEURON_NAMES = ["x1", "x2", "w1", "w2", "w0"]


def neuron_forward(activation: str) -> Callable[[np.ndarray], float]:
    act = NUMPY_ACTIVATIONS[activation]

    def f(p: np.ndarray) -> float:
        x1, x2, w1, w2, w0 = p
        return float(act(np.float64(w1 * x1 + w2 * x2 + w0 * 1.0)))

    return f


def neuron_points(n: int, seed: int) -> list[np.ndarray]:
    """Random points (x1, x2, w1, w2, w0) whose weighted sum is away from the kink at 0."""
    rng = np.random.default_rng(seed)
    points = []
    while len(points) < n:
        p = rng.uniform(-2, 2, 5)
        if abs(p[2] * p[0] + p[3] * p[1] + p[4]) > 0.05:
            points.append(p)
    return points


@pytest.mark.parametrize("activation", list(NUMPY_ACTIVATIONS))
def test_neuron_gradients_match_finite_differences(activation):
    g = neuron_graph(activation)
    f = neuron_forward(activation)
    signs = set()
    for p in neuron_points(6, seed=len(activation)):
        r = backprop(g, at=dict(zip(NEURON_NAMES, p, strict=True)))
        assert r.value("y") == pytest.approx(f(p), rel=1e-7, abs=1e-12)
        got = np.array([r.grad(n) for n in NEURON_NAMES])
        assert_matches_fd(got, central_differences(f, p), f"{activation} at {p}")
        signs.add(bool(p[2] * p[0] + p[3] * p[1] + p[4] > 0))
        if activation not in ("heaviside", "relu"):
            assert np.all(got != 0)
    assert signs == {False, True}, "the points should cover both sides of the kink"


def kink_graph(activation: str, alpha: float = ALPHA) -> Graph:
    """relu(w x + b) (or leaky_relu), with w = 2 and b = -1: the pre-activation is 0 at x=0.5."""
    b = graphc.GraphBuilder(f"kink_{activation}")
    x = b.input("x")
    w = b.param("w", (), init=np.float32(2.0))
    bias = b.param("b", (), init=np.float32(-1.0))
    s = w * x + bias
    y = nn.relu(s, name="act") if activation == "relu" else nn.leaky_relu(s, alpha=alpha,
                                                                           name="act")
    b.output(y, "y")
    return b.build()


def test_relu_derivative_at_the_kink_is_zero():
    r = backprop(kink_graph("relu"), at={"x": 0.5})
    assert r.value("add") == 0.0  # the pre-activation is exactly at the kink
    assert r.value("y") == 0.0
    assert (r.grad("x"), r.grad("w"), r.grad("b")) == (0.0, 0.0, 0.0)
    (step,) = [st for st in r.steps_list if st.node.name == "y"]
    assert step.local_value == 0.0


@pytest.mark.parametrize("alpha", [0.25, 0.2])
def test_leaky_relu_derivative_at_the_kink_is_one(alpha):
    # The course's LeakyReLU is (x < 0) alpha x + (x >= 0) x: at 0 the x branch holds.
    r = backprop(kink_graph("leaky_relu", alpha), at={"x": 0.5})
    assert r.value("add") == 0.0
    (step,) = [st for st in r.steps_list if st.node.name == "y"]
    assert step.local_value == 1.0
    # dy/dx = w, dy/dw = x, dy/db = 1.
    assert r.grad("b") == 1.0
    assert r.grad("x") == pytest.approx(2.0, rel=1e-15)
    assert r.grad("w") == pytest.approx(0.5, rel=1e-15)


@pytest.mark.parametrize(("x", "one", "alpha"), [(0.5, 1.0, 0.25), (0.0, 0.25, 0.25),
                                                  (1.0, 1.0, 1.0)])
def test_leaky_relu_kink_convention_is_selectable(x, one, alpha):
    # At the kink (x = 0.5) the conventions differ; away from it they agree.
    for kink, slope in (("one", one), ("alpha", alpha)):
        r = backprop(kink_graph("leaky_relu", 0.25), at={"x": x}, leaky_kink=kink)
        assert r.grad("b") == slope
        assert r.grad("x") == pytest.approx(2.0 * slope, rel=1e-15)
        # The gradient model on onnxruntime follows the same convention.
        assert run_gradient_onnx(r)["dy/db"] == slope
    with pytest.raises(GraphcError, match="leaky_kink must be one of one, alpha, got 'half'"):
        backprop(kink_graph("leaky_relu", 0.25), at={"x": x}, leaky_kink="half")


@pytest.mark.parametrize("x1", [-1.0, 0.5, 1.0, 3.0])
def test_heaviside_derivative_is_zero_everywhere(x1):
    # With x2 = 1: s = x1 + 1 - 1.5 is < 0, exactly 0 (the threshold), and > 0.
    r = backprop(neuron_graph("heaviside"), at={"x1": x1, "x2": 1.0})
    assert r.value("y") == (1.0 if x1 + 1.0 - 1.5 >= 0 else 0.0)
    (step,) = [st for st in r.steps_list if st.node.name == "y"]
    assert step.local == 0  # symbolically: the local derivative expression is 0
    assert step.local_value == 0.0
    assert all(r.grad(n) == 0.0 for n in NEURON_NAMES)


def test_heaviside_straight_through_is_the_identitys_gradient():
    rng = np.random.default_rng(7)
    for p in rng.uniform(-2, 2, (4, 5)):
        at = dict(zip(NEURON_NAMES, p, strict=True))
        r = backprop(neuron_graph("heaviside"), at=at, straight_through=True)
        assert r.straight_through
        (step,) = [st for st in r.steps_list if st.node.name == "y"]
        assert step.local == 1
        assert step.product_value == 1.0 * step.upstream_value == 1.0
        x1, x2, w1, w2, _ = p
        # The gradient of the identity neuron y = w1 x1 + w2 x2 + w0.
        np.testing.assert_allclose([r.grad(n) for n in NEURON_NAMES], [w1, w2, x1, x2, 1.0],
                                   rtol=1e-15)
        # The value is still the step's.
        assert r.value("y") == (1.0 if w1 * x1 + w2 * x2 + p[4] >= 0 else 0.0)


# ----- activations' derivatives in terms of their outputs -------------------------------------


def test_sigmoid_and_tanh_derivatives_in_terms_of_output():
    sig = derivative_in_terms_of_output("Sigmoid")
    tanh = derivative_in_terms_of_output("Tanh")
    (y,) = sig.free_symbols
    assert y.name == "Y"
    assert sig == y * (1 - y)
    assert tanh == 1 - y**2
    # And independently: they are the derivatives, proved by sympy.
    x = sp.Symbol("x", real=True)
    sigma = 1 / (1 + sp.exp(-x))
    assert sp.simplify(sp.diff(sigma, x) - sig.subs(y, sigma)) == 0
    assert sp.simplify((sp.diff(sp.tanh(x), x) - tanh.subs(y, sp.tanh(x))).rewrite(sp.exp)) == 0
    assert derivative_in_terms_of_output("Exp") == y
    # No such polynomial for the kinked activations.
    assert derivative_in_terms_of_output("Relu") is None
    assert derivative_in_terms_of_output("Heaviside") is None


def test_tanh_is_a_scaled_sigmoid():
    x = sp.Symbol("x", real=True)

    def sigma(v: sp.Expr) -> sp.Expr:
        return 1 / (1 + sp.exp(-v))

    assert sp.simplify((sp.tanh(x) - (2 * sigma(2 * x) - 1)).rewrite(sp.exp)) == 0


def test_sigmoid_local_derivative_is_written_with_the_output():
    r = backprop(load("mlp_tiny").build(), at={"x": [[0.5, -0.3]]})
    (step,) = [st for st in r.steps_list if st.node.name == "y"]
    y = r.symbol("y")
    assert step.local == y * (1 - y)
    assert step.local_value == pytest.approx(r.value("y") * (1 - r.value("y")), rel=1e-15)


# ----- MLPs vs finite differences and sympy.diff ----------------------------------------------


def mlp_graph(sizes: tuple[int, ...], activation: str, batch: int = 1, seed: int = 0) -> Graph:
    b = graphc.GraphBuilder("mlp_" + "_".join(map(str, sizes)) + "_" + activation, seed=seed)
    h = b.input("x", (batch, sizes[0]))
    for k, n in enumerate(sizes[1:], start=1):
        h = getattr(nn, activation)(nn.linear(h, n, init="xavier", name=f"fc{k}"),
                                    name=f"act{k}")
    b.output(h, "y")
    return b.build()


def graph_params(g: Graph) -> dict[str, np.ndarray]:
    """The weights as stored in the graph's Const nodes, in float64."""
    return {n: g.nx.nodes[n]["value"].astype(np.float64) for n in g.params()}


NUMPY_MLP_ACTIVATIONS = {k: NUMPY_ACTIVATIONS[k] for k in ("sigmoid", "tanh", "relu")}


def mlp_objective(params: dict[str, np.ndarray], x: np.ndarray, activation: str,
                  layers: int) -> float:
    """The MLP forward in float64 numpy, summed over its outputs (the objective)."""
    act = NUMPY_MLP_ACTIVATIONS[activation]
    h = x
    for k in range(1, layers + 1):
        h = act(h @ params[f"fc{k}.weight"].T + params[f"fc{k}.bias"])
    return float(h.sum())


def mlp_reference_gradients(g: Graph, x: np.ndarray, activation: str, layers: int
                            ) -> dict[str, np.ndarray]:
    """Central finite differences of the objective for the input and every parameter."""
    params = graph_params(g)
    out = {"x": central_differences(lambda v: mlp_objective(params, v, activation, layers), x)}
    for name, value in params.items():
        def f(v: np.ndarray, name: str = name) -> float:
            return mlp_objective(params | {name: v}, x, activation, layers)

        out[name] = central_differences(f, value)
    return out


def result_gradients(r: BackpropResult) -> dict[str, np.ndarray]:
    """The result's gradients gathered into one array per input or parameter."""
    shapes = {n: r.graph.type_of(graphc.Value(n)).shape for n in r.graph.inputs}
    shapes |= {n: r.graph.nx.nodes[n]["value"].shape for n in r.graph.params()}
    out = {n: np.full(shape, np.nan) for n, shape in shapes.items()}
    for s in r.wrt:
        node = r.nodes[s]
        out[node.ir_node][node.index] = r.gradient_values[s]
    for name, array in out.items():
        assert not np.isnan(array).any(), f"no gradient for some element of {name}"
    return out


# Seeds whose ReLU networks have live units at the test point (a dead output makes every
# gradient 0, which checks little).
MLP_SEEDS = {(2, 2, 1): 0, (4, 8, 1): 8, (8, 16, 4): 7, (16, 32, 10): 8}
MLP_CASES = [pytest.param(sizes, act, id="-".join(map(str, sizes)) + "-" + act)
             for sizes in MLP_SEEDS for act in ("sigmoid", "tanh", "relu")]


@pytest.mark.parametrize(("sizes", "activation"), MLP_CASES)
def test_mlp_gradients_match_finite_differences(sizes, activation):
    g = mlp_graph(sizes, activation, seed=MLP_SEEDS[sizes])
    x = np.random.default_rng(sizes[0]).uniform(-1, 1, (1, sizes[0]))
    r = backprop(g, at={"x": x})
    layers = len(sizes) - 1
    assert r.nodes[r.objective].value == pytest.approx(
        mlp_objective(graph_params(g), x, activation, layers), rel=1e-12, abs=1e-12)
    got = result_gradients(r)
    want = mlp_reference_gradients(g, x, activation, layers)
    assert got.keys() == want.keys()
    for name in want:
        assert_matches_fd(got[name], want[name], f"{g.name}: d/d{name}")
    assert any(np.any(v != 0) for v in got.values())


def test_batch_mlp_sums_the_weight_gradients_over_the_batch():
    g = mlp_graph((4, 8, 1), "tanh", batch=3, seed=3)
    x = np.random.default_rng(5).uniform(-1, 1, (3, 4))
    r = backprop(g, at={"x": x})
    assert r.objective.name == "sum(y)"
    got = result_gradients(r)
    want = mlp_reference_gradients(g, x, "tanh", 2)
    for name in want:
        assert_matches_fd(got[name], want[name], f"batch: d/d{name}")
    # Every weight is read by the 3 rows of the batch: 3 paths summed.
    weight = r.symbol("fc1.weight[0,0]")
    (acc,) = [a for a in r.accumulations if a.symbol == weight]
    assert len(acc.terms) == 3
    assert acc.total == pytest.approx(sum(acc.terms), rel=1e-15)
    assert acc.total == r.grad("fc1.weight[0,0]")


def closed_form_221(g: Graph, activation: str
                    ) -> tuple[sp.Expr, dict[str, sp.Symbol], dict[str, float]]:
    """y of the 2-2-1 MLP as one sympy expression over symbols named like graphc's leaves."""
    params = graph_params(g)
    act = {"sigmoid": lambda v: 1 / (1 + sp.exp(-v)), "tanh": sp.tanh,
           "relu": lambda v: sp.Max(0, v)}[activation]
    symbols: dict[str, sp.Symbol] = {}
    values: dict[str, float] = {}

    def sym(name: str, value: float) -> sp.Symbol:
        symbols[name] = sp.Symbol(name, real=True)
        values[name] = float(value)
        return symbols[name]

    x = [sym(f"x[0,{i}]", 0.0) for i in range(2)]
    w1 = [[sym(f"fc1.weight[{j},{i}]", params["fc1.weight"][j, i]) for i in range(2)]
          for j in range(2)]
    b1 = [sym(f"fc1.bias[{j}]", params["fc1.bias"][j]) for j in range(2)]
    w2 = [sym(f"fc2.weight[0,{j}]", params["fc2.weight"][0, j]) for j in range(2)]
    b2 = sym("fc2.bias", params["fc2.bias"][0])
    hidden = [act(w1[j][0] * x[0] + w1[j][1] * x[1] + b1[j]) for j in range(2)]
    return act(w2[0] * hidden[0] + w2[1] * hidden[1] + b2), symbols, values


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_mlp_221_matches_sympy_diff_of_the_closed_form(activation):
    g = mlp_graph((2, 2, 1), activation, seed=6)  # every ReLU unit alive at this point
    at = {"x": np.array([[0.7, -0.4]])}
    y, symbols, values = closed_form_221(g, activation)
    values |= {"x[0,0]": 0.7, "x[0,1]": -0.4}
    point = {symbols[n]: sp.Float(v, 30) for n, v in values.items()}
    r = backprop(g, at=at)
    assert r.value("y") == pytest.approx(float(y.evalf(30, subs=point)), rel=1e-12)
    assert sorted(s.name for s in r.wrt) == sorted(symbols)
    checked = 0
    for name, s in symbols.items():
        want = float(sp.diff(y, s).evalf(30, subs=point))
        assert r.grad(name) == pytest.approx(want, rel=1e-12, abs=1e-15), name
        checked += want != 0
    assert checked >= 3


# ----- the gradient ONNX model on onnxruntime -------------------------------------------------


def run_gradient_onnx(r: BackpropResult) -> dict[str, float]:
    model = gradient_onnx(r)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    feeds = {s.name: np.array(r.nodes[s].value, dtype=np.float64) for s in r.leaves()}
    assert {i.name for i in session.get_inputs()} == set(feeds)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, (float(v) for v in session.run(None, feeds)), strict=True))


ONNX_CASES = {
    "backprop_example": lambda: course_result(),
    "neuron": lambda: backprop(load("neuron").build(), at={"x1": 1.0, "x2": 1.0}),
    "neuron_straight_through": lambda: backprop(load("neuron").build(),
                                                at={"x1": 0.5, "x2": 2.0},
                                                straight_through=True),
    "neuron_sigmoid": lambda: backprop(neuron_graph("sigmoid"), at={"x1": 0.3, "x2": -1.2}),
    "mlp_tiny": lambda: backprop(load("mlp_tiny").build(), at={"x": [[0.5, -0.3]]}),
    "mlp_4_8_1_tanh": lambda: backprop(mlp_graph((4, 8, 1), "tanh", seed=2),
                                       at={"x": [[0.1, -0.5, 0.9, 0.3]]}),
    "mlp_4_8_1_relu": lambda: backprop(mlp_graph((4, 8, 1), "relu", seed=2),
                                       at={"x": [[0.1, -0.5, 0.9, 0.3]]}),
}


@pytest.mark.parametrize("case", list(ONNX_CASES))
def test_gradient_onnx_on_onnxruntime_equals_sympy(case):
    r = ONNX_CASES[case]()
    got = run_gradient_onnx(r)
    obj = r.objective.name
    want = {obj: r.nodes[r.objective].value}
    want |= {f"d{obj}/d{s.name}": r.gradient_values[s] for s in r.wrt}
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=0, abs=1e-12), name


def test_gradient_onnx_course_numbers():
    got = run_gradient_onnx(course_result())
    assert got == {"f": -12.0, "df/dx": -4.0, "df/dy": -4.0, "df/dz": 3.0}


def test_gradient_onnx_straight_through_neuron_numbers():
    got = run_gradient_onnx(ONNX_CASES["neuron_straight_through"]())
    # y = H(w1 x1 + w2 x2 - 1.5) with w1 = w2 = 1 at x1 = 0.5, x2 = 2: s = 1, y = 1; the
    # identity's gradient: dy/dx_i = w_i, dy/dw_i = x_i, dy/dw0 = 1.
    assert got == {"y": 1.0, "dy/dx1": 1.0, "dy/dx2": 1.0, "dy/dw1": 0.5, "dy/dw2": 2.0,
                   "dy/dw0": 1.0}


# ----- a value with several users -------------------------------------------------------------


def two_paths_graph() -> Graph:
    b = graphc.GraphBuilder("two_paths")
    x, y, z = b.inputs("x", "y", "z")
    b.output(x * y + x * z, "f")
    return b.build()


def test_two_users_sum_both_paths():
    r = backprop(two_paths_graph(), at={"x": 2.0, "y": 3.0, "z": -5.0})
    assert r.value("f") == 2 * 3 + 2 * -5
    assert r.grad("x") == 3.0 + -5.0  # df/dx = y + z
    assert (r.grad("y"), r.grad("z")) == (2.0, 2.0)
    (acc,) = r.accumulations
    assert acc.symbol.name == "x"
    assert sorted(acc.terms) == [-5.0, 3.0]  # z from x*z, y from x*y
    assert acc.total == -2.0
    assert "df/dx sums 2 paths: " in r.steps()
    assert r.steps().splitlines()[-1] in ("df/dx sums 2 paths: -5 + 3 = -2",
                                          "df/dx sums 2 paths: 3 + -5 = -2")
    # The adjoint's formula is the sum of the two products.
    adj = r.adjoints[r.symbol("x")]
    expr = r.gradient_exprs[adj]
    assert expr.is_Add and len(expr.args) == 2


def test_intermediate_value_with_two_users():
    # q = x + y is read twice: f = q * q + q * z, df/dq = 2q + z.
    b = graphc.GraphBuilder("q_twice")
    x, y, z = b.inputs("x", "y", "z")
    q = x + y
    b.output(q * q + q * z, "f")
    r = backprop(b.build(), at=COURSE_POINT)
    q_value = -2.0 + 5.0
    assert r.value("f") == q_value * q_value + q_value * -4.0
    assert r.grad("x") == r.grad("y") == 2 * q_value + -4.0
    assert r.grad("z") == q_value


def test_same_input_twice_gives_2x():
    b = graphc.GraphBuilder("square")
    x = b.input("x")
    b.output(x * x, "f")
    r = backprop(b.build(), at={"x": 3.0})
    assert r.value("f") == 9.0
    assert r.grad("x") == 6.0
    xs = r.symbol("x")
    adj = r.adjoints[xs]
    assert sp.simplify(r.gradient_exprs[adj].subs(r.adjoints[r.objective], 1) - 2 * xs) == 0
    r2 = backprop(b.build(), at={"x": -1.25})
    assert r2.grad("x") == -2.5


# ----- the size limit -------------------------------------------------------------------------


def test_size_limit_refuses_resnet18_before_expanding(monkeypatch):
    import graphc.symbolic.chain_rule as symbolic

    def no_expansion(self: object) -> None:
        raise AssertionError("the expansion was attempted; the size pre-check should refuse")

    monkeypatch.setattr(symbolic._Expander, "expand", no_expansion)
    g = load("resnet18").build()
    size = estimate_edges(g)
    assert size > 10**9
    with pytest.raises(GraphcError) as info:
        backprop(g, at={})
    message = str(info.value)
    assert f"{size:,}" in message  # how big the graph is
    assert f"{DEFAULT_LIMIT:,}" in message  # where the limit stands
    assert "numeric autodiff" in message
    assert "resnet18" in message


def test_size_limit_refuses_a_small_mlp_under_a_small_limit():
    g = mlp_graph((8, 16, 4), "sigmoid")
    size = estimate_edges(g)
    assert size > 100
    with pytest.raises(GraphcError) as info:
        backprop(g, at={"x": 0.5}, limit=100)
    err = info.value
    assert f"{size:,}" in str(err) and "at most 100" in str(err)
    assert "numeric autodiff" in str(err)
    # Without a limit the same graph runs.
    r = backprop(g, at={"x": 0.5}, limit=None)
    assert len(r.nodes) > 100


def test_size_limit_is_also_enforced_during_expansion(monkeypatch):
    import graphc.symbolic.chain_rule as symbolic

    # An estimate that lets the graph through: the expansion itself must stop at the limit.
    monkeypatch.setattr(symbolic, "estimate_edges", lambda g: 0)
    with pytest.raises(GraphcError) as info:
        backprop(mlp_graph((8, 16, 4), "sigmoid"), at={"x": 0.5}, limit=100)
    message = str(info.value)
    assert "at most 100" in message and "more than 100" in message
    assert "numeric autodiff" in message


def test_estimate_edges_counts_the_course_example():
    # 3 input elements, then per op its FLOPs plus its output elements: Add 1 + 1, Mul 1 + 1.
    assert estimate_edges(load("backprop_example").build()) == 7


@pytest.mark.parametrize("name", ["backprop_example", "neuron", "mlp_tiny", "student"])
def test_estimate_edges_is_an_upper_bound_of_the_expansion(name):
    from graphc.symbolic.chain_rule import _Expander

    module = load(name)
    g = module.build()
    expander = _Expander(g, module.example_inputs(), None, False)
    expander.expand()
    assert expander.edges <= estimate_edges(g)


# ----- formulas -------------------------------------------------------------------------------


def test_formulas_text_of_the_course_example():
    lines = course_result().formulas().splitlines()
    node_by_node = lines[:lines.index("")]
    assert node_by_node[:2] == ["add = x + y", "f = add*z"]
    assert set(node_by_node[2:]) == {"df/dadd = z", "df/dz = add", "df/dx = df/dadd",
                                     "df/dy = df/dadd"}
    closed = lines[lines.index("closed form:") + 1:]
    # The closed forms, checked against sympy.diff of f = (x + y) z.
    x, y, z = sp.symbols("x y z", real=True)
    f = (x + y) * z
    parsed = {}
    for line in closed:
        left, right = line.split(" = ")
        parsed[left] = sp.sympify(right, locals={"x": x, "y": y, "z": z})
    assert parsed.keys() == {"df/dx", "df/dy", "df/dz"}
    for name, s in [("df/dx", x), ("df/dy", y), ("df/dz", z)]:
        assert sp.simplify(parsed[name] - sp.diff(f, s)) == 0


def test_formulas_latex_of_the_course_example():
    text = course_result().formulas(latex=True)
    lines = text.split(" \\\\\n")
    assert r"\mathrm{add} = x + y" in lines
    assert r"f = \mathrm{add} z" in lines
    assert r"\frac{\partial f}{\partial \mathrm{add}} = z" in lines
    assert r"\frac{\partial f}{\partial x} = \frac{\partial f}{\partial \mathrm{add}}" in lines
    assert r"\text{closed form:}" in lines
    assert r"\frac{\partial f}{\partial z} = x + y" in lines


def test_formulas_closed_form_of_mlp_tiny_with_shared_subexpressions():
    r = backprop(load("mlp_tiny").build(), at={"x": [[0.5, -0.3]]})
    text = r.formulas()
    node_part, closed_part = text.split("\nclosed form:\n")
    assert "fc1[0,0] = fc1.bias[0] + fc1.weight[0,0]*x[0,0] + fc1.weight[0,1]*x[0,1]" in \
        node_part.splitlines()
    assert "dy/dfc2 = y*(1 - y)" in node_part.splitlines()
    # Evaluate the closed form (its cse lines c0, c1, ... in order) at the leaves' values: it
    # must give the gradients.
    names = {s.name: f"v{k}" for k, s in enumerate(r.leaves())}
    env = {v: sp.Float(r.nodes[s].value, 30) for s, v in
           zip(r.leaves(), names.values(), strict=True)}
    token = re.compile(r"[A-Za-z_][\w.]*(?:\[[\d,]+\])?")
    shared = 0
    gradients = {}
    for line in closed_part.splitlines():
        left, right = line.split(" = ")
        expr = sp.sympify(token.sub(lambda m: names.get(m[0], m[0]), right))
        value = expr.evalf(30, subs={sp.Symbol(k): v for k, v in env.items()})
        if re.fullmatch(r"c\d+", left):
            env[left] = value
            shared += 1
        else:
            gradients[left] = float(value)
    assert shared >= 2  # cse found shared subexpressions
    assert gradients.keys() == {f"dy/d{s.name}" for s in r.wrt}
    for s in r.wrt:
        assert gradients[f"dy/d{s.name}"] == pytest.approx(r.gradient_values[s], rel=1e-12)


def test_formulas_skip_the_closed_form_for_bigger_graphs():
    r = backprop(mlp_graph((4, 8, 1), "sigmoid"), at={"x": 0.5})
    text = r.formulas()
    assert "closed form" not in text
    # One line per forward node and per adjoint.
    assert len(text.splitlines()) == len(r.program())
    assert "closed form" in r.formulas(closed_form_limit=len(r.nodes))


# ----- the compiled evaluator -----------------------------------------------------------------


@pytest.mark.parametrize("case", ["backprop_example", "mlp_tiny", "mlp_4_8_1_relu",
                                  "neuron_sigmoid"])
def test_evaluator_equals_the_result(case):
    r = ONNX_CASES[case]()
    outs = r.evaluator()(*[r.nodes[s].value for s in r.leaves()])
    want = [r.nodes[r.objective].value] + [r.gradient_values[s] for s in r.wrt]
    np.testing.assert_allclose(np.array(outs, dtype=np.float64), want, rtol=1e-12, atol=1e-15)


def test_evaluator_on_a_batch_of_points():
    r = course_result()
    assert [s.name for s in r.leaves()] == ["x", "y", "z"]
    x = np.array([-2.0, 1.0, 0.5, 3.0])
    y = np.array([5.0, 2.0, -3.0, 0.0])
    z = np.array([-4.0, 3.0, 2.0, -1.5])
    f, dx, dy, dz = (np.broadcast_to(v, x.shape) for v in r.evaluator()(x, y, z))
    np.testing.assert_array_equal(f, (x + y) * z)
    np.testing.assert_array_equal(dx, z)
    np.testing.assert_array_equal(dy, z)
    np.testing.assert_array_equal(dz, x + y)


def test_evaluator_on_a_batch_of_mlp_inputs():
    g = load("mlp_tiny").build()
    r = backprop(g, at={"x": [[0.5, -0.3]]})
    points = np.random.default_rng(3).uniform(-1, 1, (6, 2))
    args = []
    for s in r.leaves():
        node = r.nodes[s]
        args.append(points[:, node.index[1]] if node.ir_node == "x" else node.value)
    outs = [np.broadcast_to(v, (6,)) for v in r.evaluator()(*args)]
    params = graph_params(g)
    for k, p in enumerate(points):
        x = p.reshape(1, 2)
        assert outs[0][k] == pytest.approx(mlp_objective(params, x, "sigmoid", 2), rel=1e-12)
        want = mlp_reference_gradients(g, x, "sigmoid", 2)
        for j, s in enumerate(r.wrt, start=1):
            node = r.nodes[s]
            assert_matches_fd(outs[j][k], want[node.ir_node][node.index], s.name)


# ----- notebook reprs -------------------------------------------------------------------------


def test_notebook_reprs():
    r = course_result()
    page = r._repr_html_()
    assert page.startswith("<pre>") and page.endswith("</pre>")
    assert html.unescape(page[len("<pre>"):-len("</pre>")]) == r.table()
    latex = r._repr_latex_()
    assert latex.startswith("$$\\begin{aligned}") and latex.endswith("\\end{aligned}$$")
    assert r"\frac{\partial f}{\partial x} &= " in latex
    svg = r._repr_svg_()
    assert isinstance(svg, str)
    assert svg.startswith(("<?xml", "<svg"))
    assert ET.fromstring(svg.encode()).tag.endswith("svg")
    assert str(r) == r.table()


def test_svg_repr_is_none_for_graphs_too_big_to_draw():
    r = backprop(mlp_graph((8, 16, 4), "relu"), at={"x": 0.5})
    assert len(r.nodes) > 80
    assert r._repr_svg_() is None
    assert isinstance(r._repr_html_(), str)


# ----- consistency of values with formulas for float32 attributes ------------------------------


def test_values_agree_with_the_formulas_for_a_float32_attribute():
    # LeakyRelu's alpha is stored as float32 (as in ONNX). The value table, the compiled
    # formulas and the gradient ONNX model of one result must describe the same function.
    r = backprop(kink_graph("leaky_relu", 0.2), at={"x": -1.0})
    outs = r.evaluator()(*[r.nodes[s].value for s in r.leaves()])
    onnx_outs = run_gradient_onnx(r)
    assert float(outs[0]) == pytest.approx(r.value("y"), rel=1e-12)
    assert onnx_outs["y"] == pytest.approx(r.value("y"), rel=1e-12)


def test_heaviside_threshold_value_agrees_with_the_formulas():
    # y = H(x - 0.1) at x = 0.1: the value table and the result's own formulas must agree on
    # whether the step fires.
    b = graphc.GraphBuilder("step_threshold")
    x = b.input("x")
    b.output(nn.heaviside(x, threshold=0.1, name="step"), "y")
    r = backprop(b.build(), at={"x": 0.1})
    compiled = float(r.evaluator()(0.1)[0])
    on_onnx = run_gradient_onnx(r)["y"]
    assert compiled == on_onnx
    assert r.value("y") == compiled


def _norm_graph(kind: str) -> Graph:
    b = graphc.GraphBuilder(kind, seed=1, dtype=np.float64)
    x = b.input("x", (1, 4, 2, 2))
    h = {"layer": lambda: nn.layer_norm(x, axis=1), "instance": lambda: nn.instance_norm(x),
         "group": lambda: nn.group_norm(x, 2), "clip": lambda: nn.clip(x, -0.5, 0.5)}[kind]()
    weights = b.const(np.arange(16, dtype=np.float64).reshape(1, 4, 2, 2) / 8)
    b.output(nn.tanh(h * weights), "y")
    return b.build()


@pytest.mark.parametrize("kind", ["layer", "instance", "group", "clip"])
def test_normalizations_and_clip_match_the_interpreter_and_finite_differences(kind):
    g = _norm_graph(kind)
    x = np.random.default_rng(0).standard_normal((1, 4, 2, 2))
    r = backprop(g, at={"x": x}, wrt=["x"])

    def objective(values: np.ndarray) -> float:
        return float(graphc.run(g, {"x": values})["y"].sum())

    assert r.value("sum(y)") == pytest.approx(objective(x), rel=1e-12, abs=1e-12)
    h = 1e-6
    for s in r.wrt:
        index = tuple(int(i) for i in s.name[2:-1].split(","))
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        fd = (objective(up) - objective(down)) / (2 * h)
        assert r.gradient_values[s] == pytest.approx(fd, rel=1e-6, abs=1e-8)
