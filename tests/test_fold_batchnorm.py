"""fold-batchnorm: structure, numerics, folded values in float64, refusals, idempotence, sympy.

Every fold is checked three ways: the graph after the pass against a hand-built expected graph
(networkx isomorphism on ops, attributes and ports, inputs keyed by name), the folded constants
against a float64 numpy computation written here, and the outputs before and after on the
interpreter and on onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy

from graphc.ir import CONST, Graph, Value
from graphc.models import load
from graphc.passes.fold_batchnorm import fold_batchnorm
from graphc.rewrite import PassReport
from graphc.testing import assert_same_outputs as same_outputs
from graphc.testing import assert_same_structure

F32 = np.float32
EPS = 1e-3  # not the default 1e-5, so a fold that ignores the attribute is caught


def assert_same_outputs(before: Graph, after: Graph, feeds: dict, rtol: float = 1e-5) -> None:
    """Outputs agree before and after, on the interpreter and on onnxruntime."""
    same_outputs(before, after, feeds, rtol)


def f32(value: float) -> float:
    """An ONNX float attribute's value: float32."""
    return float(np.float32(value))


# ----- helpers ----------------------------------------------------------------------------------










def const_in(g: Graph, node: str, port: int) -> np.ndarray:
    value = g.in_values(node)[port]
    array = g.const_value(value)
    assert array is not None, f"port {port} of %{node} is not a constant"
    return array


def assert_f32_of(stored: np.ndarray, ref64: np.ndarray) -> None:
    """``stored`` is float32 and within one float32 ulp of the float64 reference."""
    assert stored.dtype == np.float32
    assert stored.shape == ref64.shape
    ulp = np.spacing(np.abs(ref64).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(stored.astype(np.float64) - ref64) <= ulp)


class BN:
    """Random, non-trivial BatchNormalization statistics for ``c`` channels."""

    def __init__(self, c: int, rng: np.random.Generator) -> None:
        self.gamma = rng.uniform(-1.5, 1.5, c).astype(F32)
        self.beta = rng.standard_normal(c).astype(F32)
        self.mean = rng.standard_normal(c).astype(F32)
        self.var = rng.uniform(0.5, 2.0, c).astype(F32)

    @property
    def s(self) -> np.ndarray:
        return self.gamma.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + f32(EPS))

    def add(self, g: Graph, x: Value, name: str = "bn") -> Value:
        params = [g.add_const(f"{name}.weight", self.gamma, trainable=True),
                  g.add_const(f"{name}.bias", self.beta, trainable=True),
                  g.add_const(f"{name}.running_mean", self.mean),
                  g.add_const(f"{name}.running_var", self.var)]
        return g.add_node("BatchNormalization", [x, *params], {"epsilon": EPS}, name=name)

    def bias(self, b: np.ndarray | float) -> np.ndarray:
        """(b - mu) * s + beta in float64."""
        return ((np.asarray(b, np.float64) - self.mean.astype(np.float64)) * self.s
                + self.beta.astype(np.float64))


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(F32)


def fold(g: Graph) -> tuple[Graph, PassReport]:
    report = PassReport("fold-batchnorm")
    text = g.format()
    out = fold_batchnorm(g, report=report)
    assert g.format() == text, "the pass changed its input graph"
    out.verify()
    return out, report


def ops_of(g: Graph) -> list[str]:
    return [g.op(n) for n in g.op_nodes()]


# ----- Conv and ConvTranspose -------------------------------------------------------------------

CONV_CASES = {
    # name: (op, cin, cout, groups, bias)
    "conv-bias": ("Conv", 4, 6, 1, True),
    "conv-no-bias": ("Conv", 4, 6, 1, False),
    "conv-grouped": ("Conv", 4, 6, 2, True),
    "conv-depthwise": ("Conv", 4, 8, 4, False),
    "convtranspose-g1": ("ConvTranspose", 4, 6, 1, True),
    "convtranspose-g2": ("ConvTranspose", 4, 6, 2, True),
    "convtranspose-g2-no-bias": ("ConvTranspose", 4, 6, 2, False),
}


def conv_weight_shape(op: str, cin: int, cout: int, groups: int) -> tuple[int, ...]:
    if op == "Conv":
        return (cout, cin // groups, 3, 3)
    return (cin, cout // groups, 3, 3)


def conv_attrs(op: str, groups: int) -> dict:
    attrs = {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1), "group": groups}
    if op == "ConvTranspose":
        attrs["strides"] = (2, 2)
    return attrs


def conv_bn_graph(case: str, seed: int = 0) -> tuple[Graph, dict, BN]:
    op, cin, cout, groups, bias = CONV_CASES[case]
    rng = np.random.default_rng(seed)
    g = Graph(case)
    x = g.add_input("x", (2, cin, 5, 5))
    w = g.add_const("conv.weight", rand(rng, *conv_weight_shape(op, cin, cout, groups)),
                    trainable=True)
    inputs = [x, w]
    if bias:
        inputs.append(g.add_const("conv.bias", rand(rng, cout), trainable=True))
    conv = g.add_node(op, inputs, conv_attrs(op, groups), name="conv")
    stats = BN(cout, rng)
    g.outputs.append(g.add_node("Relu", [stats.add(g, conv)], name="y"))
    g.verify()
    return g, {"x": rand(rng, 2, cin, 5, 5)}, stats


def expected_conv_graph(case: str) -> Graph:
    op, cin, cout, groups, _ = CONV_CASES[case]
    g = Graph("expected")
    x = g.add_input("x", (2, cin, 5, 5))
    w = g.add_const("w", np.zeros(conv_weight_shape(op, cin, cout, groups), F32))
    b = g.add_const("b", np.zeros(cout, F32))
    g.outputs.append(g.add_node("Relu", [g.add_node(op, [x, w, b], conv_attrs(op, groups))],
                                name="y"))
    return g


def folded_conv_weight_reference(op: str, w: np.ndarray, s: np.ndarray, groups: int
                                 ) -> np.ndarray:
    """W' in float64, output channel by output channel (loops, to be independent of reshapes).

    Also runs on object arrays of sympy symbols (see the symbolic ConvTranspose test).
    """
    w64 = w if w.dtype == object else w.astype(np.float64)
    out = w64.copy()
    if op == "Conv":
        for o in range(w.shape[0]):
            out[o] = w64[o] * s[o]
        return out
    cin_g, cout_g = w.shape[0] // groups, w.shape[1]
    for o in range(cout_g * groups):
        group, j = divmod(o, cout_g)
        rows = slice(group * cin_g, (group + 1) * cin_g)
        out[rows, j] = w64[rows, j] * s[o]
    return out


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_fold_into_conv(case):
    op, _, cout, groups, bias = CONV_CASES[case]
    before, feeds, stats = conv_bn_graph(case)
    after, report = fold(before)
    assert_same_structure(after, expected_conv_graph(case))
    assert report.rewrites == 1 and report.refusals == []
    assert after.output_names() == ["y"]

    (conv,) = [n for n in after.op_nodes() if after.op(n) == op]
    w = before.const_value(Value("conv.weight"))
    b = before.const_value(Value("conv.bias")) if bias else np.zeros(cout, F32)
    w_new, b_new = const_in(after, conv, 1), const_in(after, conv, 2)
    w_ref = folded_conv_weight_reference(op, w, stats.s, groups)
    assert w_new.dtype == np.float32
    np.testing.assert_array_equal(w_new, w_ref.astype(F32))
    assert_f32_of(b_new, stats.bias(b))
    assert_same_outputs(before, after, feeds)


def test_folded_weights_are_computed_in_float64():
    before, _, stats = conv_bn_graph("conv-bias", seed=3)
    after, _ = fold(before)
    w = before.const_value(Value("conv.weight"))
    w_new = const_in(after, "conv", 1)
    ref64 = w.astype(np.float64) * stats.s[:, None, None, None]
    assert w_new.dtype == np.float32
    np.testing.assert_array_equal(w_new, ref64.astype(F32))
    # The same formula in float32 rounds differently somewhere: the check above can tell them
    # apart.
    s32 = stats.gamma / np.sqrt(stats.var + F32(EPS))
    assert np.any(w * s32[:, None, None, None] != w_new)


def test_folded_constants_keep_the_name_of_an_unshared_weight():
    before, _, _ = conv_bn_graph("conv-bias")
    after, _ = fold(before)
    assert after.in_values("conv")[1:] == [Value("conv.weight"), Value("conv.bias")]
    assert after.nx.nodes["conv.weight"]["trainable"]


def test_shared_weight_is_not_changed_for_its_other_user():
    rng = np.random.default_rng(5)
    g = Graph("shared")
    x = g.add_input("x", (1, 3, 4, 4))
    w = g.add_const("w", rand(rng, 3, 3, 3, 3), trainable=True)
    attrs = {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}
    c1 = g.add_node("Conv", [x, w], attrs, name="c1")
    c2 = g.add_node("Conv", [x, w], attrs, name="c2")
    stats = BN(3, rng)
    g.outputs += [stats.add(g, c1), c2]
    after, report = fold(g)
    assert report.rewrites == 1
    np.testing.assert_array_equal(const_in(after, "c2", 1), g.const_value(Value("w")))
    assert_same_outputs(g, after, {"x": rand(rng, 1, 3, 4, 4)})


# ----- Gemm -------------------------------------------------------------------------------------

GEMM_CASES = {
    # name: (attrs, has C)
    "transB=1": ({"transB": 1}, True),
    "transB=0": ({"transB": 0}, True),
    "no-C": ({"transB": 1}, False),
    "no-C-transB=0": ({}, False),
    "alpha-beta": ({"transB": 1, "alpha": 1.7, "beta": 0.4}, True),
    "alpha-beta-transB=0": ({"alpha": -0.6, "beta": 2.5}, True),
}
M, K, N = 3, 5, 4


def gemm_bn_graph(case: str, seed: int = 1) -> tuple[Graph, dict, BN, np.ndarray, np.ndarray]:
    attrs, has_c = GEMM_CASES[case]
    rng = np.random.default_rng(seed)
    g = Graph(case)
    x = g.add_input("x", (M, K))
    w = rand(rng, N, K) if attrs.get("transB") else rand(rng, K, N)
    c = rand(rng, N)
    inputs = [x, g.add_const("fc.weight", w, trainable=True)]
    if has_c:
        inputs.append(g.add_const("fc.bias", c, trainable=True))
    gemm = g.add_node("Gemm", inputs, attrs, name="fc")
    stats = BN(N, rng)
    g.outputs.append(g.add_node("Tanh", [stats.add(g, gemm)], name="y"))
    g.verify()
    return g, {"x": rand(rng, M, K)}, stats, w, c if has_c else np.zeros(N, F32)


@pytest.mark.parametrize("case", list(GEMM_CASES))
def test_fold_into_gemm(case):
    attrs, _ = GEMM_CASES[case]
    before, feeds, stats, w, c = gemm_bn_graph(case)
    after, report = fold(before)
    assert report.rewrites == 1 and report.refusals == []

    want = Graph("expected")
    x = want.add_input("x", (M, K))
    wc = want.add_const("w", np.zeros(w.shape, F32))
    cc = want.add_const("c", np.zeros(N, F32))
    attrs_after = {k: v for k, v in attrs.items() if k != "beta"}
    want.outputs.append(want.add_node("Tanh", [want.add_node("Gemm", [x, wc, cc], attrs_after)],
                                      name="y"))
    assert_same_structure(after, want)

    (gemm,) = [n for n in after.op_nodes() if after.op(n) == "Gemm"]
    beta_g = f32(attrs.get("beta", 1.0))
    if attrs.get("transB"):
        w_ref = w.astype(np.float64) * stats.s[:, None]
    else:
        w_ref = w.astype(np.float64) * stats.s[None, :]
    np.testing.assert_array_equal(const_in(after, gemm, 1), w_ref.astype(F32))
    assert_f32_of(const_in(after, gemm, 2), stats.bias(beta_g * c.astype(np.float64)))
    assert after.attrs(gemm).get("alpha", 1.0) == f32(attrs.get("alpha", 1.0))
    assert_same_outputs(before, after, feeds)


# ----- MatMul -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", ["none", "add-after", "add-before"])
def test_fold_into_matmul(bias):
    rng = np.random.default_rng(2)
    w, c = rand(rng, K, N), rand(rng, N)
    stats = BN(N, rng)

    def build(expected: bool) -> Graph:
        g = Graph("mm")
        x = g.add_input("x", (M, K))
        h = g.add_node("MatMul", [x, g.add_const("fc.weight", w, trainable=True)], name="mm")
        if bias != "none" or expected:
            cv = g.add_const("fc.bias", c, trainable=True)
            h = g.add_node("Add", [cv, h] if bias == "add-before" else [h, cv], name="add")
        if not expected:
            h = stats.add(g, h)
        g.outputs.append(g.add_node("Relu", [h], name="y"))
        g.verify()
        return g

    before = build(expected=False)
    after, report = fold(before)
    assert report.rewrites == 1 and report.refusals == []
    assert_same_structure(after, build(expected=True))
    (mm,) = [n for n in after.op_nodes() if after.op(n) == "MatMul"]
    (add,) = [n for n in after.op_nodes() if after.op(n) == "Add"]
    np.testing.assert_array_equal(const_in(after, mm, 1),
                                  (w.astype(np.float64) * stats.s).astype(F32))
    port = 0 if bias == "add-before" else 1
    assert_f32_of(const_in(after, add, port), stats.bias(c if bias != "none" else 0.0))
    assert_same_outputs(before, after, {"x": rand(rng, M, K)})


# ----- any other producer: Mul + Add ------------------------------------------------------------


@pytest.mark.parametrize("producer", ["add", "input"])
def test_bn_after_a_non_foldable_producer_becomes_mul_add(producer):
    rng = np.random.default_rng(4)
    shape = (2, 3, 4, 4)
    stats = BN(3, rng)
    before = Graph("affine")
    x = before.add_input("x", shape)
    h = x
    if producer == "add":
        h = before.add_node("Add", [x, before.add_input("z", shape)], name="sum")
    before.outputs.append(stats.add(before, h, name="bn"))
    before.verify()
    after, report = fold(before)
    assert report.rewrites == 1

    want = Graph("expected")
    wx = want.add_input("x", shape)
    if producer == "add":
        wx = want.add_node("Add", [wx, want.add_input("z", shape)])
    mul = want.add_node("Mul", [wx, want.add_const("s", np.zeros((3, 1, 1), F32))])
    want.outputs.append(want.add_node("Add", [mul, want.add_const("t", np.zeros((3, 1, 1),
                                                                                 F32))]))
    assert_same_structure(after, want)
    assert ops_of(after) == (["Add"] if producer == "add" else []) + ["Mul", "Add"]
    assert after.output_names() == ["bn"]
    (mul_node,) = [n for n in after.op_nodes() if after.op(n) == "Mul"]
    assert_f32_of(const_in(after, mul_node, 1), stats.s.reshape(3, 1, 1))
    assert_f32_of(const_in(after, "bn", 1), stats.bias(0.0).reshape(3, 1, 1))
    feeds = {name: rand(rng, *shape) for name in before.inputs}
    assert_same_outputs(before, after, feeds)


# ----- refusals ---------------------------------------------------------------------------------


def test_residual_shared_conv_is_refused():
    module = load("residual")
    before = module.build()
    after, report = fold(before)
    ops = ops_of(after)
    assert ops.count("BatchNormalization") == 1 and "bn1" in after.nx
    assert after.op("bn1") == "BatchNormalization"
    assert after.in_values("bn1")[0] == Value("conv1")
    refusals = [(w, r) for w, r in report.refusals if w.startswith("%bn1 ")]
    assert len(refusals) == 1, report.refusals
    reason = refusals[0][1]
    assert "%conv1" in reason and "%add" in reason, reason
    # bn2 (conv2's only user) was folded, and conv1's weights are untouched for the skip.
    assert report.rewrites == 1 and "bn2" not in after.nx
    np.testing.assert_array_equal(const_in(after, "conv1", 1),
                                  before.const_value(Value("conv1.weight")))
    assert_same_outputs(before, after, module.example_inputs())


def test_conv_weight_that_is_a_graph_input_is_refused():
    rng = np.random.default_rng(6)
    g = Graph("wi")
    x = g.add_input("x", (1, 2, 4, 4))
    w = g.add_input("w", (3, 2, 3, 3))
    conv = g.add_node("Conv", [x, w], {"kernel_shape": (3, 3)}, name="conv")
    g.outputs.append(BN(3, rng).add(g, conv))
    after, report = fold(g)
    assert ops_of(after) == ["Conv", "BatchNormalization"]
    assert_same_structure(after, g)
    assert report.rewrites == 0
    assert len(report.refusals) == 1
    where, reason = report.refusals[0]
    assert where.startswith("%bn ") and "%w" in reason and "not a constant" in reason, reason
    assert_same_outputs(g, after, {"x": rand(rng, 1, 2, 4, 4), "w": rand(rng, 3, 2, 3, 3)})


def test_matmul_with_a_3d_output_is_refused():
    rng = np.random.default_rng(7)
    g = Graph("mm3")
    x = g.add_input("x", (2, 3, K))
    mm = g.add_node("MatMul", [x, g.add_const("w", rand(rng, K, N), trainable=True)], name="mm")
    g.outputs.append(BN(3, rng).add(g, mm))
    after, report = fold(g)
    assert_same_structure(after, g)
    assert report.rewrites == 0
    assert len(report.refusals) == 1
    assert "2-D" in report.refusals[0][1], report.refusals
    assert_same_outputs(g, after, {"x": rand(rng, 2, 3, K)})


def test_matmul_add_broadcasting_to_3d_keeps_the_numbers():
    """MatMul (3, 5) @ (5, 3) is 2-D, but the Add broadcasts it to (2, 3, 3): the BN's channel
    axis is then the MatMul's rows, not the weight's columns, so scaling B's columns is wrong.
    Whatever the pass does (refuse, or make the BN a Mul + Add), the outputs must not change."""
    rng = np.random.default_rng(10)
    g = Graph("mm-add-3d")
    x = g.add_input("x", (3, 5))
    mm = g.add_node("MatMul", [x, g.add_const("w", rand(rng, 5, 3), trainable=True)], name="mm")
    add = g.add_node("Add", [mm, g.add_const("c", rand(rng, 2, 3, 3))], name="add")
    g.outputs.append(BN(3, rng).add(g, add))
    g.verify()
    after, _ = fold(g)
    assert_same_outputs(g, after, {"x": rand(rng, 3, 5)})


def test_conv_output_that_is_a_graph_output_is_refused():
    before, feeds, _ = conv_bn_graph("conv-bias")
    before.outputs.append(Value("conv"))
    after, report = fold(before)
    assert "BatchNormalization" in ops_of(after)
    assert any("%conv is a graph output" in r for _, r in report.refusals), report.refusals
    assert_same_outputs(before, after, feeds)


# ----- names, idempotence -----------------------------------------------------------------------


@pytest.mark.parametrize("case", ["conv-bias", "convtranspose-g2"])
def test_bn_that_is_a_graph_output_keeps_its_name(case):
    before, feeds, _ = conv_bn_graph(case)
    before.outputs = [Value("bn")]
    before.remove_dead()
    assert before.output_names() == ["bn"]
    after, _ = fold(before)
    assert after.output_names() == ["bn"]
    assert ops_of(after) == [CONV_CASES[case][0]]
    assert_same_outputs(before, after, feeds)


def _mixed_graph() -> tuple[Graph, dict]:
    """Conv+BN, a shared conv with a BN (refused), Gemm+BN, and a BN on an input."""
    rng = np.random.default_rng(8)
    g = Graph("mixed")
    x = g.add_input("x", (2, 3, 4, 4))
    attrs = {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}
    c1 = g.add_node("Conv", [x, g.add_const("c1.w", rand(rng, 3, 3, 3, 3))], attrs, name="c1")
    h = BN(3, rng).add(g, c1, "bn1")
    skip = g.add_node("Add", [h, c1], name="skip")
    h = BN(3, rng).add(g, skip, "bn2")
    flat = g.add_node("Flatten", [h], name="flat")
    fc = g.add_node("Gemm", [flat, g.add_const("fc.w", rand(rng, 5, 48))], {"transB": 1},
                    name="fc")
    g.outputs.append(BN(5, rng).add(g, fc, "bn3"))
    g.outputs.append(BN(3, rng).add(g, x, "bn4"))
    g.verify()
    return g, {"x": rand(rng, 2, 3, 4, 4)}


def test_idempotent():
    before, feeds = _mixed_graph()
    once, report1 = fold(before)
    twice, report2 = fold(once)
    assert report1.rewrites == 3
    assert report2.rewrites == 0
    assert twice.format() == once.format()
    assert_same_structure(twice, once)
    for node in once.nx:
        if once.op(node) == CONST:
            np.testing.assert_array_equal(twice.const_value(Value(node)),
                                          once.const_value(Value(node)))
    assert_same_outputs(before, once, feeds)
    assert_same_outputs(before, twice, feeds)


def test_input_graph_constants_are_not_modified():
    before, _ = _mixed_graph()
    arrays = {n: before.const_value(Value(n)).copy() for n in before.nx
              if before.op(n) == CONST}
    fold(before)
    for node, array in arrays.items():
        np.testing.assert_array_equal(before.const_value(Value(node)), array)


# ----- the math, proved with sympy --------------------------------------------------------------


def test_bn_folding_identity_symbolically():
    x, w, b, beta, mu = sympy.symbols("x w b beta mu", real=True)
    gamma = sympy.Symbol("gamma", real=True)
    var, eps = sympy.symbols("var eps", positive=True)
    bn = gamma * ((w * x + b) - mu) / sympy.sqrt(var + eps) + beta
    w_new = w * gamma / sympy.sqrt(var + eps)
    b_new = (b - mu) * gamma / sympy.sqrt(var + eps) + beta
    assert sympy.simplify(bn - (w_new * x + b_new)) == 0
    # And a wrong fold (shift applied before scaling) is not an identity: the check can fail.
    wrong = w_new * x + (b - mu + beta) * gamma / sympy.sqrt(var + eps)
    assert sympy.simplify(bn - wrong) != 0


def test_gemm_column_scaling_symbolically():
    a = sympy.Matrix(2, 3, sympy.symbols("a0:6"))
    b = sympy.Matrix(3, 2, sympy.symbols("b0:6"))
    s = sympy.diag(*sympy.symbols("s0:2"))
    # BN scales output column o by s[o]: (A B) S = A (B S) -- the columns of B (transB=0) ...
    assert sympy.simplify(a * b * s - a * (b * s)) == sympy.zeros(2, 2)
    # ... = A (S B^T)^T -- the rows of the stored B when transB=1.
    bt = b.T
    assert sympy.simplify(a * bt.T * s - a * (s * bt).T) == sympy.zeros(2, 2)
    # Scaling the rows of B instead is not the same thing.
    assert sympy.simplify(a * b * s - a * (sympy.diag(*sympy.symbols("s0:2"), 1) * b)) != \
        sympy.zeros(2, 2)


def test_convtranspose_grouped_scaling_symbolically():
    """1x1 ConvTranspose with groups=2, C_in=4, C_out=4: W is (C_in, C_out/g)."""
    groups, cin, cout = 2, 4, 4
    cin_g, cout_g = cin // groups, cout // groups
    xs = sympy.symbols(f"x0:{cin}")
    w = sympy.Matrix(cin, cout_g, sympy.symbols(f"w0:{cin * cout_g}"))
    s = sympy.symbols(f"s0:{cout}")

    def convt(weight: sympy.Matrix) -> list[sympy.Expr]:
        y = []
        for o in range(cout):
            group, j = divmod(o, cout_g)
            y.append(sum(xs[i] * weight[i, j]
                         for i in range(group * cin_g, (group + 1) * cin_g)))
        return y

    # The reference that checks the pass (test_fold_into_conv) is the scaling proved here.
    scaled = sympy.Matrix(folded_conv_weight_reference(
        "ConvTranspose", np.array(w.tolist(), dtype=object).reshape(cin, cout_g, 1, 1),
        np.array(s, dtype=object), groups).reshape(cin, cout_g))
    for o, (y, y_new) in enumerate(zip(convt(w), convt(scaled), strict=True)):
        assert sympy.expand(s[o] * y - y_new) == 0
    # Scaling by the input channel's factor instead would not be an identity.
    wrong = sympy.Matrix(cin, cout_g, lambda i, j: w[i, j] * s[i])
    assert any(sympy.expand(s[o] * y - y_new) != 0
               for o, (y, y_new) in enumerate(zip(convt(w), convt(wrong), strict=True)))
