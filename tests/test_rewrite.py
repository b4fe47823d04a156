"""The rewrite engine (matcher, escape check, declines, fixpoint, replace, set_const_input) and
the pass manager (names, copies, verify, error wrapping, reports)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc.passes
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError, UsageError
from graphc.interpret import run
from graphc.ir import CONST, Graph, Value
from graphc.models import load
from graphc.onnxio.runtime import run_onnxruntime
from graphc.pipeline import PassError, registry, resolve, run_pipeline
from graphc.rewrite import (
    Decline,
    PassReport,
    Rule,
    escapes,
    match,
    pat,
    replace,
    rewrite,
    set_const_input,
)
from graphc.testing import random_feeds

F32 = np.float32
SHAPE = (2, 3)




def two_inputs(name: str = "g") -> tuple[Graph, Value, Value]:
    g = Graph(name)
    return g, g.add_input("x", SHAPE), g.add_input("y", SHAPE)


# ----- the matcher ------------------------------------------------------------------------------


def test_name_bound_twice_matches_square_not_product():
    g, x, y = two_inputs()
    sq = g.add_node("Mul", [x, x], name="sq")
    prod = g.add_node("Mul", [x, y], name="prod")
    g.outputs += [sq, prod]
    m = match(g, pat("Mul", "a", "a"), "sq")
    assert m is not None
    assert m.values == {"a": Value("x")} and m.matched == ["sq"] and m.root == "sq"
    assert match(g, pat("Mul", "a", "a"), "prod") is None
    m = match(g, pat("Mul", "a", "b"), "prod")
    assert m is not None and m.values == {"a": Value("x"), "b": Value("y")}
    # Distinct names may bind the same value.
    assert match(g, pat("Mul", "a", "b"), "sq").values == {"a": Value("x"), "b": Value("x")}


def test_two_outputs_of_one_node_are_different_values():
    g = Graph("outs")
    x = g.add_input("x", SHAPE)
    g.add_node("Dropout", [x], name="drop")
    both = g.add_node("Concat", [Value("drop", 1), Value("drop", 1)], {"axis": 0}, name="cat")
    g.outputs.append(both)
    m = match(g, pat("Concat", "m", "m"), "cat")
    assert m is not None and m.values["m"] == Value("drop", 1)
    # A nested pattern stands for a node's first output only.
    assert match(g, pat("Concat", pat("Dropout", "x"), None), "cat") is None
    # The matcher only reads ops and edges; no op takes data and mask together, so wire a
    # node reading both outputs by hand.
    g.nx.add_node("mixed", op="Concat", attrs={"axis": 0}, types=[])
    g.nx.add_edge("drop", "mixed", port=0, out=1)
    g.nx.add_edge("drop", "mixed", port=1, out=0)
    assert match(g, pat("Concat", "m", "m"), "mixed") is None
    m = match(g, pat("Concat", "m", pat("Dropout", "x")), "mixed")
    assert m is not None and m.values == {"m": Value("drop", 1), "x": Value("x")}


def test_ports_are_matched_in_order():
    g, x, y = two_inputs()
    r = g.add_node("Relu", [x], name="r")
    a = g.add_node("Sub", [r, y], name="a")
    b = g.add_node("Sub", [y, r], name="b")
    g.outputs += [a, b]
    p = pat("Sub", pat("Relu", "in"), "other")
    m = match(g, p, "a")
    assert m is not None and m.values == {"in": Value("x"), "other": Value("y")}
    assert m.matched == ["a", "r"]
    assert match(g, p, "b") is None
    assert match(g, pat("Sub", "other", pat("Relu", "in")), "b") is not None


def test_none_matches_anything_and_binds_nothing():
    g, x, y = two_inputs()
    s = g.add_node("Add", [x, g.add_node("Exp", [y], name="e")], name="s")
    g.outputs.append(s)
    m = match(g, pat("Add", None, pat("Exp", None)), "s")
    assert m is not None and m.values == {} and m.matched == ["s", "e"]


def test_op_tuple():
    g, x, _ = two_inputs()
    g.outputs += [g.add_node("Relu", [x], name="r"), g.add_node("Tanh", [x], name="t"),
                  g.add_node("Exp", [x], name="e")]
    p = pat(("Relu", "Tanh"), "v")
    assert match(g, p, "r") is not None and match(g, p, "t") is not None
    assert match(g, p, "e") is None


def test_optional_capture():
    rng = np.random.default_rng(0)
    g = Graph("opt")
    x = g.add_input("x", (1, 2, 4, 4))
    w = g.add_const("w", rng.standard_normal((3, 2, 3, 3)).astype(F32))
    b = g.add_const("b", np.zeros(3, F32))
    with_b = g.add_node("Conv", [x, w, b], {"kernel_shape": (3, 3)}, name="with_b")
    no_b = g.add_node("Conv", [x, w], {"kernel_shape": (3, 3)}, name="no_b")
    g.outputs += [with_b, no_b]
    optional = pat("Conv", "x", "w", "b?")
    m = match(g, optional, "no_b")
    assert m is not None and "b" in m.values and m.values["b"] is None
    assert m.const(g, "b") is None
    np.testing.assert_array_equal(m.const(g, "w"), g.const_value(w))
    m = match(g, optional, "with_b")
    assert m is not None and m.values["b"] == Value("b")
    required = pat("Conv", "x", "w", "b")
    assert match(g, required, "no_b") is None
    assert match(g, required, "with_b") is not None


def test_nested_pattern_and_node_names():
    g, x, y = two_inputs()
    w = g.add_const("w", np.ones((3, 3), F32))
    mm = g.add_node("MatMul", [x, w], name="mm")
    add = g.add_node("Add", [mm, y], name="add")
    g.outputs.append(g.add_node("Relu", [add], name="act"))
    p = pat("Relu", pat("Add", pat("MatMul", "a", "w", name="mm"), "c", name="add"), name="act")
    m = match(g, p, "act")
    assert m is not None
    assert m.nodes == {"act": "act", "add": "add", "mm": "mm"}
    assert m.values == {"a": Value("x"), "w": Value("w"), "c": Value("y")}
    assert m.matched == ["act", "add", "mm"]
    # One level wrong anywhere and there is no match.
    assert match(g, pat("Relu", pat("Add", pat("Gemm", "a", "w"), "c")), "act") is None
    assert match(g, pat("Relu", pat("Add", "c", pat("MatMul", "a", "w"))), "act") is None


def test_node_name_bound_twice_must_be_the_same_node():
    g, x, _ = two_inputs()
    r1 = g.add_node("Relu", [x], name="r1")
    r2 = g.add_node("Relu", [x], name="r2")
    same = g.add_node("Add", [r1, r1], name="same")
    diff = g.add_node("Add", [r1, r2], name="diff")
    g.outputs += [same, diff]
    p = pat("Add", pat("Relu", "v", name="r"), pat("Relu", "v", name="r"))
    m = match(g, p, "same")
    assert m is not None and m.nodes == {"r": "r1"} and m.matched == ["same", "r1"]
    assert match(g, p, "diff") is None
    # Without the node name the two Relus of x match (their input is the same value).
    assert match(g, pat("Add", pat("Relu", "v"), pat("Relu", "v")), "diff") is not None


# ----- the escape check -------------------------------------------------------------------------


def conv_bn(extra_user: bool = False, conv_is_output: bool = False) -> Graph:
    rng = np.random.default_rng(1)
    g = Graph("cb")
    x = g.add_input("x", (1, 2, 4, 4))
    w = g.add_const("w", rng.standard_normal((2, 2, 1, 1)).astype(F32))
    conv = g.add_node("Conv", [x, w], {"kernel_shape": (1, 1)}, name="conv")
    stats = [g.add_const(k, np.full(2, v, F32)) for k, v in
             (("gamma", 2.0), ("beta", 0.5), ("mean", 0.1), ("var", 1.5))]
    bn = g.add_node("BatchNormalization", [conv, *stats], name="bn")
    g.outputs.append(g.add_node("Relu", [bn], name="act"))
    if extra_user:
        g.outputs.append(g.add_node("Sigmoid", [conv], name="side"))
    if conv_is_output:
        g.outputs.append(conv)
    g.verify()
    return g


BN_PATTERN = pat("BatchNormalization", pat("Conv", "x", "w", name="conv"), "gamma", "beta",
                 "mean", "var")


def test_escape_names_the_node_and_its_outside_user():
    g = conv_bn(extra_user=True)
    m = match(g, BN_PATTERN, "bn")
    reason = escapes(g, m)
    assert reason is not None
    assert "%conv" in reason and "%side" in reason
    assert escapes(conv_bn(), match(conv_bn(), BN_PATTERN, "bn")) is None


def test_escape_for_an_inner_graph_output():
    g = conv_bn(conv_is_output=True)
    reason = escapes(g, match(g, BN_PATTERN, "bn"))
    assert reason is not None and "%conv" in reason and "graph output" in reason


def test_root_with_users_does_not_escape():
    g = conv_bn()
    g.outputs.append(Value("bn"))
    assert escapes(g, match(g, BN_PATTERN, "bn")) is None


def test_engine_refuses_an_escaping_match_without_running_the_rule():
    g = conv_bn(extra_user=True)
    calls = []

    def apply(g: Graph, m) -> Value:
        calls.append(m.root)
        return Value("conv")

    report = PassReport("t")
    before = g.format()
    assert rewrite(g, [Rule("fuse", BN_PATTERN, apply)], report) == 0
    assert calls == []
    assert g.format() == before
    (where, reason), = report.refusals
    assert where == g.format_node("bn", types=False)
    assert reason.startswith("fuse: ") and "%conv" in reason and "%side" in reason


# ----- declines, fixpoint, type check -----------------------------------------------------------


def test_declines_reach_the_report_unless_quiet():
    g, x, _ = two_inputs()
    g.outputs += [g.add_node("Relu", [x], name="r"), g.add_node("Exp", [x], name="e")]
    rules = [Rule("loud", pat("Relu", "v"), lambda g, m: Decline("no good reason")),
             Rule("quiet", pat("Exp", "v"), lambda g, m: Decline("not applicable", quiet=True))]
    report = PassReport("t")
    assert rewrite(g, rules, report) == 0
    assert report.refusals == [(g.format_node("r", types=False), "loud: no good reason")]
    assert report.rewrites == 0 and report.explanations == []


def test_a_rewrite_that_enables_another_converges():
    """Sub(a, a) -> 0 removes a's other user, which lets Neg(Neg(x)) -> x apply on a later
    sweep (the Neg pair comes first in topological order)."""
    g = Graph("fix")
    x = g.add_input("x", SHAPE)
    a = g.add_node("Neg", [x], name="a")
    b = g.add_node("Neg", [a], name="b")
    s = g.add_node("Sub", [a, a], name="s")
    g.outputs.append(g.add_node("Add", [b, s], name="y"))
    g.verify()
    assert g.topo().index("b") < g.topo().index("s")
    original = g.copy()

    def zero(g: Graph, m) -> Value:
        return g.add_const("zero", np.zeros(g.type_of(Value(m.root)).shape, F32))

    rules = [Rule("neg-neg", pat("Neg", pat("Neg", "v")), lambda g, m: m.values["v"]),
             Rule("sub-self", pat("Sub", "v", "v"), zero)]
    report = PassReport("t")
    assert rewrite(g, rules, report) == 2
    g.verify()
    assert [g.op(n) for n in g.op_nodes()] == ["Add"]
    assert g.in_values("y") == [Value("x"), Value("zero")]
    assert [e.rule for e in report.explanations] == ["sub-self", "neg-neg"]
    feeds = random_feeds(original)
    np.testing.assert_array_equal(run(g, feeds)["y"], feeds["x"])
    np.testing.assert_array_equal(run(original, feeds)["y"], feeds["x"])
    # A second run finds nothing left to do.
    assert rewrite(g, rules, PassReport("t")) == 0


def test_rule_changing_the_type_is_an_error():
    g, x, _ = two_inputs()
    g.outputs.append(g.add_node("Relu", [x], name="r"))
    bad = Rule("bad", pat("Relu", "v"), lambda g, m: g.add_const("c", np.zeros(3, F32)))
    with pytest.raises(GraphcError, match="rule bad changed the type of %r"):
        rewrite(g, [bad])


# ----- replace ----------------------------------------------------------------------------------


def relu_output_graph() -> Graph:
    g = Graph("rep")
    x = g.add_input("x", SHAPE)
    g.outputs.append(g.add_node("Relu", [g.add_node("Exp", [x], name="e")], name="y"))
    return g


def test_replace_output_by_a_new_node_gives_it_the_output_name():
    g = relu_output_graph()
    new = g.add_node("Tanh", [Value("e")], name="tanh")
    replace(g, Value("y"), new)
    g.verify()
    assert g.op("y") == "Tanh" and "tanh" not in g.nx
    assert g.outputs == [Value("y")] and g.output_names() == ["y"]


@pytest.mark.parametrize("kind", ["input", "const"])
def test_replace_output_by_an_input_or_constant_adds_a_named_identity(kind):
    g = relu_output_graph()
    new = Value("x") if kind == "input" else g.add_const("k", np.ones(SHAPE, F32))
    replace(g, Value("y"), new)
    g.verify()
    assert g.op("y") == "Identity" and g.in_values("y") == [new]
    assert g.output_names() == ["y"]
    assert "e" not in g.nx  # the old node's dead inputs go with it
    feeds = random_feeds(g)
    want = feeds["x"] if kind == "input" else np.ones(SHAPE, F32)
    np.testing.assert_array_equal(run(g, feeds)["y"], want)
    np.testing.assert_array_equal(run_onnxruntime(g, feeds)["y"], want)


def test_replace_output_by_another_output_adds_a_named_identity():
    g = relu_output_graph()
    g.outputs.insert(0, Value("e"))
    replace(g, Value("y"), Value("e"))
    g.verify()
    assert g.output_names() == ["e", "y"]
    assert g.op("y") == "Identity" and g.op("e") == "Exp"


def test_replace_by_a_multi_output_node_keeps_its_other_output_name():
    """y = Identity(drop) is an output, and so is drop's mask: after y is replaced by drop's
    data output, both outputs still have their names."""
    g = Graph("multi")
    x = g.add_input("x", SHAPE)
    d = g.add_node("Dropout", [g.add_node("Exp", [x], name="e")], name="drop")
    g.outputs += [g.add_node("Identity", [d], name="y"), Value("drop", 1)]
    g.verify()
    assert g.output_names() == ["y", "drop.mask"]
    replace(g, Value("y"), d)
    g.verify()
    assert g.output_names() == ["y", "drop.mask"]


def test_replace_inside_the_graph_keeps_the_new_nodes_name():
    g = relu_output_graph()
    new = g.add_node("Tanh", [Value("x")], name="tanh")
    replace(g, Value("e"), new)
    g.verify()
    assert "e" not in g.nx and g.in_values("y") == [Value("tanh")]
    g2 = relu_output_graph()
    replace(g2, Value("e"), g2.add_node("Tanh", [Value("x")], name="tanh"), rename=True)
    assert g2.op("e") == "Tanh" and g2.in_values("y") == [Value("e")]


# ----- set_const_input --------------------------------------------------------------------------


def test_set_const_input_updates_an_unshared_constant_in_place():
    g = Graph("sc")
    x = g.add_input("x", SHAPE)
    w = g.add_const("w", np.ones(SHAPE, F32), trainable=True)
    g.outputs.append(g.add_node("Mul", [x, w], name="y"))
    original = g.copy()
    set_const_input(g, "y", 1, np.full(SHAPE, 3.0, F32), "y.new")
    g.verify()
    assert g.in_values("y") == [Value("x"), Value("w")] and "y.new" not in g.nx
    np.testing.assert_array_equal(g.const_value(Value("w")), np.full(SHAPE, 3.0, F32))
    assert g.nx.nodes["w"]["trainable"]
    assert not g.const_value(Value("w")).flags.writeable
    # The graph it was copied from still has its value.
    np.testing.assert_array_equal(original.const_value(Value("w")), np.ones(SHAPE, F32))


def test_set_const_input_leaves_a_shared_constant_to_its_other_user():
    g = Graph("sc")
    x = g.add_input("x", SHAPE)
    w = g.add_const("w", np.ones(SHAPE, F32), trainable=True)
    a = g.add_node("Mul", [x, w], name="a")
    b = g.add_node("Add", [x, w], name="b")
    g.outputs += [a, b]
    set_const_input(g, "a", 1, np.full(SHAPE, 3.0, F32), "a.weight")
    g.verify()
    np.testing.assert_array_equal(g.const_value(Value("w")), np.ones(SHAPE, F32))
    assert g.in_values("b") == [Value("x"), Value("w")]
    new = g.in_values("a")[1]
    assert new.node == "a.weight"
    np.testing.assert_array_equal(g.const_value(new), np.full(SHAPE, 3.0, F32))
    assert g.nx.nodes["a.weight"]["trainable"]
    feeds = random_feeds(g)
    out = run(g, feeds)
    np.testing.assert_allclose(out["a"], feeds["x"] * 3.0)
    np.testing.assert_allclose(out["b"], feeds["x"] + 1.0)


def test_set_const_input_does_not_modify_a_constant_that_is_a_graph_output():
    g = Graph("sc")
    x = g.add_input("x", SHAPE)
    w = g.add_const("w", np.ones(SHAPE, F32))
    g.outputs += [g.add_node("Mul", [x, w], name="y"), w]
    set_const_input(g, "y", 1, np.zeros(SHAPE, F32), "w")
    g.verify()
    np.testing.assert_array_equal(g.const_value(Value("w")), np.ones(SHAPE, F32))
    assert g.in_values("y")[1].node == "w_1"


def test_set_const_input_fills_an_absent_port():
    rng = np.random.default_rng(2)
    g = Graph("sc")
    x = g.add_input("x", (1, 2, 3, 3))
    w = g.add_const("w", rng.standard_normal((4, 2, 1, 1)).astype(F32))
    g.outputs.append(g.add_node("Conv", [x, w], {"kernel_shape": (1, 1)}, name="y"))
    set_const_input(g, "y", 2, np.arange(4, dtype=F32), "y.bias")
    g.verify()
    assert g.in_values("y")[2] == Value("y.bias")
    feeds = random_feeds(g)
    np.testing.assert_allclose(run(g, feeds)["y"],
                               run_onnxruntime(g, feeds)["y"], rtol=1e-5, atol=1e-6)
    base = np.einsum("oi,nihw->nohw", g.const_value(w)[:, :, 0, 0], feeds["x"])
    np.testing.assert_allclose(run(g, feeds)["y"], base + np.arange(4).reshape(1, 4, 1, 1),
                               rtol=1e-5, atol=1e-6)


# ----- the pipeline -----------------------------------------------------------------------------


def test_resolve_names():
    assert resolve(pipeline="inference") == ["remove-dropout", "fold-batchnorm",
                                             "fold-constants", "remove-identity",
                                             "eliminate-dead-code"]
    assert resolve("fold-batchnorm, remove-identity") == ["fold-batchnorm", "remove-identity"]
    assert resolve(["fold-constants"], "inference")[-1] == "fold-constants"
    assert set(registry()) == {"remove-dropout", "fold-batchnorm", "fold-constants",
                               "remove-identity", "eliminate-dead-code", "quantize-int8",
                               "prune-channels", "prune-magnitude", "substitute-student",
                               "binarize"}


def test_unknown_pass_is_a_usage_error_with_the_closest_match():
    with pytest.raises(UsageError) as err:
        resolve("remove-dropout,fold-batchnrom")
    text = str(err.value)
    assert "unknown pass 'fold-batchnrom'" in text
    assert "Did you mean 'fold-batchnorm'?" in text
    assert "'eliminate-dead-code'" in text  # the known names are listed


def test_unknown_pipeline_is_a_usage_error_with_the_closest_match():
    with pytest.raises(UsageError) as err:
        resolve(pipeline="inferense")
    assert "unknown pipeline 'inferense'" in str(err.value)
    assert "Did you mean 'inference'?" in str(err.value)


def snapshot(g: Graph) -> tuple:
    nodes = {}
    for n, d in g.nx.nodes(data=True):
        value = d.get("value")
        nodes[n] = (d["op"], dict(d["attrs"]), list(d["types"]), d.get("trainable"),
                    None if value is None else value.copy())
    edges = sorted((u, v, d["port"], d["out"]) for u, v, d in g.nx.edges(data=True))
    return g.format(), list(g.inputs), list(g.outputs), dict(g.meta), nodes, edges


def assert_same_snapshot(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]
    assert a[1:4] == b[1:4] and a[5] == b[5]
    assert a[4].keys() == b[4].keys()
    for node, (op, attrs, types, trainable, value) in a[4].items():
        assert (op, attrs, types, trainable) == b[4][node][:4], node
        if value is not None:
            np.testing.assert_array_equal(value, b[4][node][4])


def everything_graph() -> Graph:
    """A graph every pass has something to do in: dropout with a used mask, BN (foldable, on
    an input, and refused), constant subgraphs, identities and dead code."""
    rng = np.random.default_rng(3)
    b = GraphBuilder("everything")
    x = b.input("x", (1, 2, 4, 4))
    d = b.op("Dropout", x, b.const(np.float32(0.2)), name="drop")
    w = b.param("conv.weight", (2, 2, 3, 3), init=rng.standard_normal((2, 2, 3, 3)))
    conv = b.op("Conv", d, w, name="conv", kernel_shape=(3, 3), pads=(1, 1, 1, 1))
    stats = [b.param(f"bn.{k}", (2,), init=rng.uniform(0.5, 2.0, 2)) for k in "abcd"]
    h = b.op("BatchNormalization", conv, *stats, name="bn")
    h = b.op("Identity", b.op("Add", h, conv))
    h = h * b.op("Exp", b.const(np.float32(0.5)))
    b.op("Tanh", h, name="dead")
    b.output(h, "y")
    b.output(b.op("Transpose", b.op("Identity", b.op("Identity", d)), perm=(0, 1, 3, 2)), "t")
    return b.build()


CASES = ["cnn", "residual", "mlp", "everything"]


def build_case(name: str) -> Graph:
    return everything_graph() if name == "everything" else load(name).build()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("pass_name", list(registry()))
def test_no_pass_mutates_its_input(case, pass_name):
    g = build_case(case)
    before = snapshot(g)
    options = {}
    if pass_name == "quantize-int8":  # it needs calibration data: a few random batches
        feeds = [random_feeds(g, seed) for seed in range(3)]
        options = {"calibration": {n: np.concatenate([f[n] for f in feeds]) for n in g.inputs},
                   "prefer": "size"}
    if pass_name == "substitute-student":  # a student with the same interface
        options = {"student": build_case(case)}
    out = registry()[pass_name](g, report=PassReport(pass_name), **options)
    out.verify()
    assert out is not g
    assert_same_snapshot(snapshot(g), before)


@pytest.mark.parametrize("case", CASES)
def test_pipeline_does_not_mutate_its_input(case):
    g = build_case(case)
    before = snapshot(g)
    new, reports = run_pipeline(g, resolve(pipeline="inference"))
    assert_same_snapshot(snapshot(g), before)
    assert sum(r.rewrites for r in reports) > 0
    feeds = random_feeds(g)
    want, got = run(g, feeds), run(new, feeds)
    assert list(got) == list(want)
    for name in want:
        scale = float(np.max(np.abs(want[name])))
        assert float(np.max(np.abs(got[name] - want[name]))) <= 1e-5 * scale, name


@pytest.fixture
def extra_pass(monkeypatch):
    """Append a pass to the registry: extra_pass(fn) with fn(g, report=...) -> Graph."""

    def add(fn):
        monkeypatch.setattr(graphc.passes, "PASSES", [*graphc.passes.PASSES, fn])
        return fn.__name__.replace("_", "-")

    return add


def test_failing_pass_is_wrapped_naming_it_and_the_passes_before(extra_pass):
    def explode(g: Graph, *, report: PassReport | None = None) -> Graph:
        raise GraphcError("the graph is too boring")

    name = extra_pass(explode)
    assert name in registry()
    with pytest.raises(PassError) as err:
        run_pipeline(load("cnn").build(), ["remove-dropout", "fold-batchnorm", name])
    text = str(err.value)
    assert "pass 'explode'" in text
    assert "3 of 3" in text and "before it: remove-dropout, fold-batchnorm" in text
    assert "the graph is too boring" in text
    assert isinstance(err.value.__cause__, GraphcError)


def test_pass_crashing_with_a_python_error_is_wrapped_too(extra_pass):
    """A bug in a pass (here a KeyError) still reaches the user as a PassError naming it."""
    def buggy(g: Graph, *, report: PassReport | None = None) -> Graph:
        return {}["missing"]

    name = extra_pass(buggy)
    with pytest.raises(PassError) as err:
        run_pipeline(load("mlp").build(), ["remove-dropout", name])
    assert "pass 'buggy'" in str(err.value)
    assert "before it: remove-dropout" in str(err.value)


def test_pass_output_is_verified(extra_pass):
    def break_types(g: Graph, *, report: PassReport | None = None) -> Graph:
        g = g.copy()
        node = g.op_nodes()[0]
        g.nx.nodes[node]["types"] = [g.types(node)[0]._replace(dtype=np.dtype(np.float64))]
        return g

    name = extra_pass(break_types)
    with pytest.raises(PassError) as err:
        run_pipeline(load("mlp").build(), [name, "eliminate-dead-code"])
    text = str(err.value)
    assert "pass 'break-types' (1 of 2; before it: none)" in text
    assert "stored output types differ from the shape rule" in text


def trainable_size(g: Graph) -> int:
    return sum(int(d["value"].size) for _, d in g.nx.nodes(data=True)
               if d["op"] == CONST and d.get("trainable"))


def test_reports_count_nodes_and_parameters():
    g = load("cnn").build()
    names = resolve(pipeline="inference")
    new, reports = run_pipeline(g, names)
    assert [r.name for r in reports] == names
    ops = [n for n in g.nx if g.op(n) not in ("Input", "Const")]
    assert reports[0].nodes_before == len(ops) == 14
    assert reports[0].params_before == trainable_size(g)
    for prev, nxt in zip(reports, reports[1:], strict=False):
        assert prev.nodes_after == nxt.nodes_before
        assert prev.params_after == nxt.params_before
    assert reports[-1].nodes_after == len([n for n in new.nx
                                           if new.op(n) not in ("Input", "Const")])
    assert reports[-1].params_after == trainable_size(new)
    by_name = {r.name: r for r in reports}
    drop, bn = by_name["remove-dropout"], by_name["fold-batchnorm"]
    assert (drop.rewrites, drop.nodes_before - drop.nodes_after) == (1, 1)
    assert drop.params_after == drop.params_before
    # Three BNs (16, 32, 64 channels) fold into bias-free convs: each drops gamma and beta
    # (2 C trainable) and gives its conv a new bias (C): 112 parameters fewer.
    assert (bn.rewrites, bn.nodes_before - bn.nodes_after) == (3, 3)
    assert bn.params_before - bn.params_after == 16 + 32 + 64
    assert all(r.seconds >= 0 for r in reports)
