"""fold-constants: constant subgraphs become constants named after their node; graph outputs,
huge results and regions whose folding stores more bytes stay; numerics, idempotence, names."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.dsl import GraphBuilder
from graphc.interpret import run
from graphc.ir import CONST, Graph, Value
from graphc.models import MODELS, load
from graphc.passes.fold_constants import MAX_GROWTH, fold_constants
from graphc.rewrite import PassReport
from graphc.testing import assert_same_outputs as same_outputs
from graphc.testing import assert_same_structure, random_feeds

F32 = np.float32


def assert_same_outputs(before: Graph, after: Graph, feeds: dict) -> None:
    """Outputs agree before and after, on the interpreter and on onnxruntime (folding runs the
    interpreter, so onnxruntime's own arithmetic may differ in the last bits)."""
    same_outputs(before, after, feeds, 1e-5)


# ----- helpers ----------------------------------------------------------------------------------










def fold(g: Graph) -> tuple[Graph, PassReport]:
    report = PassReport("fold-constants")
    text = g.format()
    arrays = {n: g.const_value(Value(n)).copy() for n in g.nx if g.op(n) == CONST}
    out = fold_constants(g, report=report)
    assert g.format() == text, "the pass changed its input graph"
    for node, array in arrays.items():
        np.testing.assert_array_equal(g.const_value(Value(node)), array)
    out.verify()
    return out, report




def ops_of(g: Graph) -> list[str]:
    return [g.op(n) for n in g.op_nodes()]


# ----- structure and values ---------------------------------------------------------------------


def test_sum_of_constants_becomes_one_constant_named_after_its_node():
    b = GraphBuilder("c")
    x = b.input("x", (3,))
    s = b.op("Add", b.const([1.0, 2.0, 3.0], name="c1"), b.const(0.5, name="c2"), name="s")
    b.output(x * s, "y")
    before = b.build()
    after, report = fold(before)

    want = Graph("expected")
    wx = want.add_input("x", (3,))
    want.outputs.append(want.add_node("Mul", [wx, want.add_const("k", np.zeros(3, F32))]))
    assert_same_structure(after, want)
    assert after.in_values("y") == [Value("x"), Value("s")]
    assert after.op("s") == CONST
    np.testing.assert_array_equal(after.const_value(Value("s")), np.array([1.5, 2.5, 3.5], F32))
    assert "c1" not in after.nx and "c2" not in after.nx
    assert report.rewrites == 1 and report.refusals == []
    assert after.output_names() == ["y"]
    assert_same_outputs(before, after, random_feeds(before))


def test_whole_constant_subgraph_folds_in_one_pass():
    """Gemm weight computed as Reshape(Transpose(Exp(W))) from a stored tensor."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((2, 3, 4)).astype(F32)
    g = Graph("chain")
    x = g.add_input("x", (5, 6))
    t = g.add_node("Exp", [g.add_const("w", w)], name="exp")
    t = g.add_node("Transpose", [t], {"perm": (2, 0, 1)}, name="tr")
    t = g.add_node("Reshape", [t, g.add_const("shape", np.array([4, 6], np.int64))],
                   name="wt")
    fc = g.add_node("Gemm", [x, t], {"transB": 1}, name="fc")
    g.outputs.append(g.add_node("Relu", [fc], name="y"))
    g.verify()
    after, report = fold(g)
    assert ops_of(after) == ["Gemm", "Relu"]
    assert report.rewrites == 3
    assert after.in_values("fc") == [Value("x"), Value("wt")]
    want = np.exp(w.astype(np.float64)).transpose(2, 0, 1).reshape(4, 6)
    got = after.const_value(Value("wt"))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert sorted(n for n in after.nx if after.op(n) == CONST) == ["wt"]
    assert_same_outputs(g, after, random_feeds(g))


def test_constant_used_twice_by_one_node():
    b = GraphBuilder("twice")
    x = b.input("x", (2,))
    c = b.op("Neg", b.const([2.0, -3.0]), name="neg")
    b.output(b.op("Add", x * c, c), "y")
    before = b.build()
    after, _ = fold(before)
    assert ops_of(after) == ["Mul", "Add"]
    np.testing.assert_array_equal(after.const_value(Value("neg")), np.array([-2.0, 3.0], F32))
    assert after.nx.out_degree("neg") == 2
    assert_same_outputs(before, after, random_feeds(before))


def test_multi_output_node_folds_its_used_output():
    g = Graph("drop")
    x = g.add_input("x", (2, 2))
    d = g.add_node("Dropout", [g.add_const("c", np.array([[1, 2], [3, 4]], F32))], name="d")
    g.outputs.append(g.add_node("Add", [x, d], name="y"))
    after, _ = fold(g)
    assert ops_of(after) == ["Add"]
    np.testing.assert_array_equal(after.const_value(after.in_values("y")[1]),
                                  np.array([[1, 2], [3, 4]], F32))
    assert_same_outputs(g, after, random_feeds(g))


def test_nodes_reading_inputs_are_not_folded():
    b = GraphBuilder("live")
    x = b.input("x", (3,))
    b.output(b.op("Exp", x) + b.const(1.0), "y")
    before = b.build()
    after, report = fold(before)
    assert after.format() == before.format()
    assert report.rewrites == 0


# ----- refusals ---------------------------------------------------------------------------------


def test_graph_output_keeps_its_node():
    b = GraphBuilder("out")
    x = b.input("x", (2,))
    b.output(b.op("Add", b.const([1.0, 2.0]), b.const([3.0, 4.0])), "k")
    b.output(b.op("Relu", b.op("Neg", b.const([1.0, -2.0]), name="neg")), "r")
    b.output(x + 1.0, "y")
    before = b.build()
    after, _ = fold(before)
    # The outputs keep their nodes (and names); what feeds them is folded.
    assert after.op("k") == "Add" and after.op("r") == "Relu"
    assert [after.op(v.node) for v in after.in_values("k")] == [CONST, CONST]
    assert after.op("neg") == CONST
    np.testing.assert_array_equal(after.const_value(Value("neg")), np.array([-1.0, 2.0], F32))
    assert after.output_names() == ["k", "r", "y"]
    assert_same_outputs(before, after, random_feeds(before))


def huge_pad_graph(side: int) -> Graph:
    """y = x + mean(Pad(c, to side x side)) with c a 1x1 constant."""
    g = Graph("pad")
    x = g.add_input("x", (1, 1, 1, 1))
    c = g.add_const("c", np.full((1, 1, 1, 1), 3.0, F32))
    p = side - 1
    pad = g.add_node("Pad", [c, g.add_const("pads", np.array([0, 0, 0, 0, 0, 0, p, p],
                                                              np.int64))], name="pad")
    gap = g.add_node("GlobalAveragePool", [pad], name="gap")
    g.outputs.append(g.add_node("Add", [x, gap], name="y"))
    g.verify()
    return g


def test_huge_result_is_left_alone():
    side = 1025
    assert side * side > MAX_GROWTH
    before = huge_pad_graph(side)
    after, report = fold(before)
    assert after.format() == before.format()
    assert report.rewrites == 0
    assert len(report.refusals) == 1
    where, reason = report.refusals[0]
    assert where.startswith("%pad = Pad") and f"{side * side:,} elements" in reason, reason
    # GlobalAveragePool of 3 in one corner: 3 / side^2.
    x = np.zeros((1, 1, 1, 1), F32)
    np.testing.assert_allclose(run(after, {"x": x})["y"], np.full((1, 1, 1, 1), 3 / side**2),
                               rtol=1e-5)


def test_large_but_allowed_result_is_folded():
    side = 512
    before = huge_pad_graph(side)
    after, report = fold(before)
    assert report.refusals == []
    assert ops_of(after) == ["Add"]
    np.testing.assert_allclose(after.const_value(Value("gap")),
                               np.full((1, 1, 1, 1), 3 / side**2), rtol=1e-6)
    assert_same_outputs(before, after, {"x": np.ones((1, 1, 1, 1), F32)})


def test_big_result_no_larger_than_its_inputs_is_folded():
    """The limit is on growth: a transpose of a big constant does not grow the file."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((1100, 1000)).astype(F32)
    assert w.size > MAX_GROWTH
    g = Graph("big")
    x = g.add_input("x", (1, 1100))
    t = g.add_node("Transpose", [g.add_const("w", w)], name="wt")
    g.outputs.append(g.add_node("Gemm", [x, t], {"transB": 1}, name="y"))
    after, report = fold(g)
    assert report.refusals == [] and report.rewrites == 1
    np.testing.assert_array_equal(after.const_value(Value("wt")), w.T)
    assert_same_outputs(g, after, random_feeds(g))


def test_folding_that_would_store_more_bytes_is_refused():
    """Expand of a scalar to 1,000 floats: onnxruntime folds it at load; folding it here would
    store 4,000 bytes instead of 12. A region is folded whole or not at all."""
    g = Graph("grow")
    x = g.add_input("x", (1000,))
    big = g.add_node("Expand", [g.add_const("c", np.array(3.0, F32)),
                                g.add_const("shape", np.array([1000], np.int64))], name="big")
    neg = g.add_node("Neg", [big], name="neg")
    g.outputs.append(g.add_node("Add", [x, neg], name="y"))
    after, report = fold(g)
    assert after.format() == g.format()
    assert report.rewrites == 0
    assert report.refusals == [("%neg = Neg(%big)", "fold-constants: folding its 2 constant "
                                "node(s) would store 4,000 bytes of constants instead of 12")]
    assert_same_outputs(g, after, random_feeds(g))


# ----- idempotence, zoo -------------------------------------------------------------------------


def test_idempotent():
    b = GraphBuilder("i")
    x = b.input("x", (3,))
    c = b.op("Exp", b.const([0.0, 1.0, 2.0]) * 2.0)
    b.output(b.op("Sqrt", c) * x + b.op("Neg", b.const(1.5)), "y")
    before = b.build()
    once, report1 = fold(before)
    twice, report2 = fold(once)
    assert report1.rewrites == 4 and report2.rewrites == 0
    assert twice.format() == once.format()
    assert_same_structure(twice, once)
    assert_same_outputs(before, twice, random_feeds(before))


@pytest.mark.parametrize("name", [m for m in MODELS if m != "resnet18"])
def test_zoo_models(name):
    module = load(name)
    before = module.build()
    after, _ = fold(before)
    assert after.output_names() == before.output_names()
    assert after.num_params() <= before.num_params()
    assert_same_outputs(before, after, module.example_inputs())
