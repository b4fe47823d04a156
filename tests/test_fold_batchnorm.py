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

from graphc.interpret import run
from graphc.ir import CONST, Graph, Value
from graphc.models import load
from graphc.passes.fold_batchnorm import fold_batchnorm
from graphc.pipeline import format_reports, run_pipeline
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


# ----- a BN with nothing to fold into stays one BatchNormalization node -------------------------


def kept_graph(producer: str, seed: int = 4) -> tuple[Graph, dict]:
    """x (and z) -> Concat / Add / nothing -> bn -> Relu."""
    rng = np.random.default_rng(seed)
    shape = (2, 3, 4, 4)
    g = Graph(producer)
    h = g.add_input("x", shape)
    channels = 3
    if producer == "concat":
        h = g.add_node("Concat", [h, g.add_input("z", shape)], {"axis": 1}, name="cat")
        channels = 6
    elif producer == "add":
        h = g.add_node("Add", [h, g.add_input("z", shape)], name="sum")
    g.outputs.append(g.add_node("Relu", [BN(channels, rng).add(g, h)], name="y"))
    g.verify()
    return g, {name: rand(rng, *shape) for name in g.inputs}


@pytest.mark.parametrize("producer, why", [
    ("concat", "no fold backward (%cat (Concat) has no per-channel weights)"),
    ("add", "no fold backward (%sum (Add) has no per-channel weights)"),
    ("input", "no fold backward (%x is a graph input)"),
])
def test_bn_with_nothing_to_fold_into_stays_one_node(producer, why):
    before, feeds = kept_graph(producer)
    after, report = fold(before)
    assert report.rewrites == 0
    assert_same_structure(after, before)
    assert ops_of(after).count("BatchNormalization") == 1
    assert "Mul" not in ops_of(after)
    for port in range(1, 5):
        np.testing.assert_array_equal(const_in(after, "bn", port), const_in(before, "bn", port))
    ((where, reason),) = report.refusals
    assert where.startswith("%bn = BatchNormalization(")
    assert reason.startswith("keep-batchnorm: stays one BatchNormalization node (one "
                             "onnxruntime kernel; as Mul + Add it measured"), reason
    assert why in reason and "nor forward (its user %y (Relu) is not a Conv or Gemm)" in reason
    assert_same_outputs(before, after, feeds)


def test_verbose_report_says_which_form_each_bn_took():
    before, _ = kept_graph("concat")
    _, reports = run_pipeline(before, ["fold-batchnorm"])
    lines = format_reports(reports, verbose=True).splitlines()
    assert lines[0].startswith("    fold-batchnorm       nodes 3 -> 3,")
    assert lines[1].startswith("      refused %bn = BatchNormalization: keep-batchnorm: stays one "
                               "BatchNormalization node (one onnxruntime kernel;"), lines
    assert len(lines) == 2


def test_bn_with_two_users_stays_one_node():
    rng = np.random.default_rng(11)
    g = Graph("two-users")
    x = g.add_input("x", (1, 3, 4, 4))
    h = BN(3, rng).add(g, x)
    conv = g.add_node("Conv", [h, g.add_const("w", rand(rng, 2, 3, 1, 1))],
                      {"kernel_shape": (1, 1)}, name="conv")
    g.outputs += [conv, g.add_node("Relu", [h], name="r")]
    g.verify()
    after, report = fold(g)
    assert report.rewrites == 0
    assert_same_structure(after, g)
    ((where, reason),) = [r for r in report.refusals if r[0].startswith("%bn ")]
    assert "nor forward (it has 2 users (%conv, %r))" in reason, reason
    assert_same_outputs(g, after, {"x": rand(rng, 1, 3, 4, 4)})


# ----- folding forward into the Conv after the BN -----------------------------------------------

FORWARD_CONV_CASES = {
    # name: (attrs, cout, groups, bias)
    "1x1": ({"kernel_shape": (1, 1)}, 6, 1, True),
    "3x3-strided-no-bias": ({"kernel_shape": (3, 3), "strides": (2, 2)}, 6, 1, False),
    "3x3-grouped-dilated": ({"kernel_shape": (3, 3), "group": 2, "dilations": (2, 2)}, 6, 2,
                            True),
    "depthwise": ({"kernel_shape": (3, 3), "group": 4}, 8, 4, True),
    "same-1x1": ({"kernel_shape": (1, 1), "auto_pad": "SAME_UPPER"}, 6, 1, True),
    "valid-3x3": ({"kernel_shape": (3, 3), "auto_pad": "VALID"}, 6, 1, True),
    "explicit-zero-pads": ({"kernel_shape": (3, 3), "pads": (0, 0, 0, 0)}, 6, 1, True),
}
PADDED_CONV_CASES = {
    "pads-1": ({"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}, [1, 1, 1, 1]),
    "pads-one-side": ({"kernel_shape": (3, 3), "pads": (0, 0, 1, 0)}, [0, 0, 1, 0]),
    "same-3x3": ({"kernel_shape": (3, 3), "auto_pad": "SAME_UPPER"}, [2, 2]),
}


def concat_bn_conv_graph(attrs: dict, cout: int, groups: int, bias: bool, seed: int = 12
                         ) -> tuple[Graph, dict, BN, np.ndarray, np.ndarray]:
    """x, z (2 channels each) -> Concat -> bn (4 channels) -> conv -> Relu: densenet's Concat
    followed by a BN, here without the ReLU that would stop the forward fold."""
    rng = np.random.default_rng(seed)
    g = Graph("bn-conv")
    shape = (2, 2, 7, 7)
    cat = g.add_node("Concat", [g.add_input("x", shape), g.add_input("z", shape)], {"axis": 1},
                     name="cat")
    stats = BN(4, rng)
    w = rand(rng, cout, 4 // groups, *attrs["kernel_shape"])
    b = rand(rng, cout) if bias else np.zeros(cout, F32)
    inputs = [stats.add(g, cat), g.add_const("conv.weight", w, trainable=True)]
    if bias:
        inputs.append(g.add_const("conv.bias", b, trainable=True))
    conv = g.add_node("Conv", inputs, attrs, name="conv")
    g.outputs.append(g.add_node("Relu", [conv], name="y"))
    g.verify()
    return g, {"x": rand(rng, *shape), "z": rand(rng, *shape)}, stats, w, b


def forward_conv_reference(w: np.ndarray, b: np.ndarray, stats: BN, groups: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """W' and b' in float64, one output channel and one input of its group at a time."""
    s = stats.s
    shift = stats.beta.astype(np.float64) - stats.mean.astype(np.float64) * s
    cout, cin_g = w.shape[:2]
    w_new = w.astype(np.float64).copy()
    b_new = b.astype(np.float64).copy()
    for o in range(cout):
        group = o // (cout // groups)
        for i in range(cin_g):
            channel = group * cin_g + i
            w_new[o, i] = w[o, i].astype(np.float64) * s[channel]
            b_new[o] += float(np.sum(w[o, i].astype(np.float64))) * shift[channel]
    return w_new, b_new


@pytest.mark.parametrize("case", list(FORWARD_CONV_CASES))
def test_bn_folds_forward_into_an_unpadded_conv(case):
    attrs, cout, groups, bias = FORWARD_CONV_CASES[case]
    before, feeds, stats, w, b = concat_bn_conv_graph(attrs, cout, groups, bias)
    after, report = fold(before)
    assert report.rewrites == 1 and report.refusals == []
    assert [e.rule for e in report.explanations] == ["fold-forward-into-conv"]

    want = Graph("expected")
    shape = (2, 2, 7, 7)
    cat = want.add_node("Concat", [want.add_input("x", shape), want.add_input("z", shape)],
                        {"axis": 1})
    conv = want.add_node("Conv", [cat, want.add_const("w", np.zeros(w.shape, F32)),
                                  want.add_const("b", np.zeros(cout, F32))], attrs)
    want.outputs.append(want.add_node("Relu", [conv], name="y"))
    assert_same_structure(after, want)

    w_ref, b_ref = forward_conv_reference(w, b, stats, groups)
    np.testing.assert_array_equal(const_in(after, "conv", 1), w_ref.astype(F32))
    assert_f32_of(const_in(after, "conv", 2), b_ref)
    assert_same_outputs(before, after, feeds)


@pytest.mark.parametrize("case", list(PADDED_CONV_CASES))
def test_bn_before_a_padded_conv_is_refused(case):
    attrs, pads = PADDED_CONV_CASES[case]
    before, feeds, _, _, _ = concat_bn_conv_graph(attrs, 6, 1, True)
    after, report = fold(before)
    assert report.rewrites == 0
    assert_same_structure(after, before)
    ((where, reason),) = report.refusals
    assert where.startswith("%bn ")
    assert (f"nor forward (%conv pads its input (pads {pads}): its zero border would become "
            "beta - mu * s after folding)") in reason, reason
    assert_same_outputs(before, after, feeds)


def test_the_unpadded_fold_on_a_padded_conv_would_be_wrong_at_the_border():
    """Why the padded case is refused: the forward fold's weights on a padded Conv give the
    right interior and a wrong border (the padding sees 0 where BN's output had shift)."""
    attrs = {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}
    before, feeds, stats, w, b = concat_bn_conv_graph(attrs, 6, 1, True)
    w_ref, b_ref = forward_conv_reference(w, b, stats, 1)
    wrong = Graph("wrong")
    shape = (2, 2, 7, 7)
    cat = wrong.add_node("Concat", [wrong.add_input("x", shape), wrong.add_input("z", shape)],
                         {"axis": 1})
    conv = wrong.add_node("Conv", [cat, wrong.add_const("w", w_ref.astype(F32)),
                                   wrong.add_const("b", b_ref.astype(F32))], attrs)
    wrong.outputs.append(conv)
    want = run(before.copy(), feeds)["y"]
    got = np.maximum(run(wrong, feeds)[wrong.output_names()[0]], 0)
    scale = np.max(np.abs(want))
    np.testing.assert_allclose(got[:, :, 1:-1, 1:-1], want[:, :, 1:-1, 1:-1], atol=1e-5 * scale)
    assert np.max(np.abs(got - want)) > 1e-2 * scale


def test_bn_after_a_shared_conv_folds_forward():
    """conv1 feeds bn and the skip Add, so bn cannot fold into conv1; it folds into conv2."""
    rng = np.random.default_rng(13)
    g = Graph("shared-forward")
    x = g.add_input("x", (1, 3, 5, 5))
    c1 = g.add_node("Conv", [x, g.add_const("c1.w", rand(rng, 4, 3, 3, 3))],
                    {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}, name="conv1")
    c2 = g.add_node("Conv", [BN(4, rng).add(g, c1), g.add_const("c2.w", rand(rng, 4, 4, 1, 1))],
                    {"kernel_shape": (1, 1)}, name="conv2")
    g.outputs.append(g.add_node("Add", [c1, c2], name="y"))
    g.verify()
    after, report = fold(g)
    assert report.rewrites == 1
    assert [e.rule for e in report.explanations] == ["fold-forward-into-conv"]
    assert ops_of(after) == ["Conv", "Conv", "Add"]
    ((where, reason),) = report.refusals
    assert where.startswith("%bn ") and "%conv1 is also used by %y" in reason, reason
    np.testing.assert_array_equal(const_in(after, "conv1", 1), g.const_value(Value("c1.w")))
    assert_same_outputs(g, after, {"x": rand(rng, 1, 3, 5, 5)})


# ----- folding forward into the Gemm after the BN (through a Flatten) ---------------------------

FORWARD_GEMM_CASES = {
    # name: (BN input shape, Flatten, Gemm attrs, has C)
    "flatten-transB=1": ((2, 3, 2, 2), True, {"transB": 1}, True),
    "flatten-transB=0": ((2, 3, 2, 2), True, {}, True),
    "flatten-no-C": ((2, 3, 2, 2), True, {"transB": 1}, False),
    "flatten-alpha-beta": ((2, 3, 2, 2), True, {"transB": 1, "alpha": 0.7, "beta": -1.3}, True),
    "2d-alpha-beta-transB=0": ((3, 5), False, {"alpha": 1.9, "beta": 0.25}, True),
    "2d-no-C": ((3, 5), False, {"transB": 1}, False),
}


def add_bn_gemm_graph(case: str, seed: int = 14, flatten_attrs: dict | None = None,
                      gemm_attrs: dict | None = None) -> tuple[Graph, dict, BN, np.ndarray]:
    """x + z -> bn -> (Flatten) -> Gemm -> Tanh."""
    shape, flatten, attrs, has_c = FORWARD_GEMM_CASES[case]
    attrs = attrs if gemm_attrs is None else gemm_attrs
    rng = np.random.default_rng(seed)
    features = int(np.prod(shape[1:]))
    w = rand(rng, N, features) if attrs.get("transB") else rand(rng, features, N)
    g = Graph("bn-gemm")
    h = g.add_node("Add", [g.add_input("x", shape), g.add_input("z", shape)], name="sum")
    stats = BN(shape[1], rng)
    h = stats.add(g, h)
    if flatten:
        h = g.add_node("Flatten", [h], flatten_attrs or {}, name="flat")
    inputs = [h, g.add_const("fc.weight", w, trainable=True)]
    if has_c:
        inputs.append(g.add_const("fc.bias", rand(rng, N), trainable=True))
    g.outputs.append(g.add_node("Tanh", [g.add_node("Gemm", inputs, attrs, name="fc")],
                                name="y"))
    g.verify()
    return g, {"x": rand(rng, *shape), "z": rand(rng, *shape)}, stats, w


@pytest.mark.parametrize("case", list(FORWARD_GEMM_CASES))
def test_bn_folds_forward_into_a_gemm(case):
    shape, flatten, attrs, has_c = FORWARD_GEMM_CASES[case]
    before, feeds, stats, w = add_bn_gemm_graph(case)
    after, report = fold(before)
    assert report.rewrites == 1 and report.refusals == []
    assert ops_of(after) == ["Add"] + (["Flatten"] if flatten else []) + ["Gemm", "Tanh"]
    (gemm,) = [n for n in after.op_nodes() if after.op(n) == "Gemm"]
    assert after.attrs(gemm) == {k: f32(v) if isinstance(v, float) else v
                                 for k, v in attrs.items() if k != "beta"}

    # Feature f of the Gemm's input is channel f // (H*W) of the BN.
    per_channel = int(np.prod(shape[2:]))
    s = stats.s
    shift = stats.beta.astype(np.float64) - stats.mean.astype(np.float64) * s
    op_b = w.T.astype(np.float64) if attrs.get("transB") else w.astype(np.float64)
    w_ref = op_b.copy()
    c_ref = (f32(attrs.get("beta", 1.0)) * before.const_value(Value("fc.bias")).astype(np.float64)
             if has_c else np.zeros(N))
    for f in range(op_b.shape[0]):
        channel = f // per_channel
        w_ref[f] = op_b[f] * s[channel]
        c_ref = c_ref + f32(attrs.get("alpha", 1.0)) * shift[channel] * op_b[f]
    w_ref = w_ref.T if attrs.get("transB") else w_ref
    np.testing.assert_array_equal(const_in(after, gemm, 1), w_ref.astype(F32))
    assert_f32_of(const_in(after, gemm, 2), c_ref)
    assert_same_outputs(before, after, feeds)


@pytest.mark.parametrize("flatten_attrs, gemm_attrs, why", [
    ({"axis": 2}, None, "%flat flattens at axis 2: a feature is then not one channel's value"),
])
def test_bn_before_a_gemm_refused(flatten_attrs, gemm_attrs, why):
    case = "flatten-transB=1"
    shape = FORWARD_GEMM_CASES[case][0]
    rng = np.random.default_rng(15)
    g = Graph("bn-flatten-axis-2")
    h = g.add_node("Add", [g.add_input("x", shape), g.add_input("z", shape)], name="sum")
    h = g.add_node("Flatten", [BN(shape[1], rng).add(g, h)], flatten_attrs, name="flat")
    g.outputs.append(g.add_node("Gemm", [h, g.add_const("w", rand(rng, 4, 4))], {"transB": 1},
                                name="fc"))
    g.verify()
    after, report = fold(g)
    assert report.rewrites == 0
    assert_same_structure(after, g)
    ((_, reason),) = report.refusals
    assert f"nor forward ({why})" in reason, reason
    assert_same_outputs(g, after, {"x": rand(rng, *shape), "z": rand(rng, *shape)})


def test_bn_before_a_gemm_with_transposed_a_is_refused():
    rng = np.random.default_rng(16)
    g = Graph("bn-transA")
    h = g.add_node("Add", [g.add_input("x", (K, M)), g.add_input("z", (K, M))], name="sum")
    g.outputs.append(g.add_node("Gemm", [BN(M, rng).add(g, h), g.add_const("w", rand(rng, K, N))],
                                {"transA": 1}, name="fc"))
    g.verify()
    after, report = fold(g)
    assert report.rewrites == 0
    assert_same_structure(after, g)
    ((_, reason),) = report.refusals
    assert "nor forward (%fc has transA=1" in reason, reason
    assert_same_outputs(g, after, {"x": rand(rng, K, M), "z": rand(rng, K, M)})


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
    """Conv+BN, a shared conv with a BN (refused), a BN after an Add that folds forward into
    Gemm+BN, and a BN on an input (kept)."""
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
    # bn2 folds forward through the Flatten into fc, bn3 into fc; bn1 (shared conv) and bn4
    # (on an input, a graph output) stay.
    assert report1.rewrites == 2
    assert [e.rule for e in report1.explanations] == ["fold-forward-into-gemm", "fold-into-gemm"]
    assert sorted(n for n in once.op_nodes() if once.op(n) == "BatchNormalization") == \
        ["bn1", "bn4"]
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
