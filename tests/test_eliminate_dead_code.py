"""eliminate-dead-code: nodes no output depends on go, graph inputs always stay; numerics,
idempotence and names."""

from __future__ import annotations

import numpy as np

from graphc.dsl import GraphBuilder
from graphc.ir import Graph, Value
from graphc.models import load
from graphc.passes.eliminate_dead_code import eliminate_dead_code
from graphc.rewrite import PassReport
from graphc.testing import assert_same_outputs, assert_same_structure, random_feeds

F32 = np.float32
SHAPE = (2, 3)


# ----- helpers ----------------------------------------------------------------------------------










def eliminate(g: Graph) -> tuple[Graph, PassReport]:
    report = PassReport("eliminate-dead-code")
    text = g.format()
    nodes = set(g.nx)
    out = eliminate_dead_code(g, report=report)
    assert g.format() == text and set(g.nx) == nodes, "the pass changed its input graph"
    out.verify()
    return out, report




def dead_graph() -> Graph:
    """y = Relu(x) + z, plus a dead chain Exp(x) -> Mul(., w) and an unused input u."""
    g = Graph("dead")
    x = g.add_input("x", SHAPE)
    z = g.add_input("z", SHAPE)
    g.add_input("u", SHAPE)
    e = g.add_node("Exp", [x], name="exp")
    w = g.add_const("w", np.full(SHAPE, 2.0, F32), trainable=True)
    g.add_node("Mul", [e, w], name="mul")
    r = g.add_node("Relu", [x], name="relu")
    g.outputs.append(g.add_node("Add", [r, z], name="y"))
    g.verify()
    return g


# ----- structure --------------------------------------------------------------------------------


def test_dead_chain_and_its_constants_go_inputs_stay():
    before = dead_graph()
    after, report = eliminate(before)
    want = Graph("expected")
    x = want.add_input("x", SHAPE)
    z = want.add_input("z", SHAPE)
    want.add_input("u", SHAPE)
    want.outputs.append(want.add_node("Add", [want.add_node("Relu", [x]), z]))
    assert_same_structure(after, want)
    assert sorted(set(before.nx) - set(after.nx)) == ["exp", "mul", "w"]
    assert after.inputs == ["x", "z", "u"]
    assert report.rewrites == 3
    assert sorted(e.before[0].split(" =")[0] for e in report.explanations) == \
        ["%exp", "%mul", "%w"]
    assert after.output_names() == ["y"]
    assert after.num_params() == 0 and before.num_params() == 6
    assert_same_outputs(before, after, random_feeds(before))


def test_unused_output_of_a_live_node_keeps_the_node():
    """Dropout's mask is unused but its data output is live: the node stays."""
    b = GraphBuilder("multi")
    x = b.input("x", SHAPE)
    b.output(b.op("Relu", b.op("Dropout", x, name="drop")), "y")
    before = b.build()
    after, report = eliminate(before)
    assert after.format() == before.format()
    assert report.rewrites == 0


def test_node_live_only_through_output_one_stays():
    g = Graph("mask")
    x = g.add_input("x", SHAPE)
    g.add_node("Dropout", [x], name="drop")
    g.add_node("Exp", [x], name="dead")
    g.outputs.append(Value("drop", 1))
    after, _ = eliminate(g)
    assert "drop" in after.nx and "dead" not in after.nx
    assert after.output_names() == ["drop.mask"]
    assert_same_outputs(g, after, random_feeds(g))


def test_graph_output_fed_by_an_input_or_constant():
    b = GraphBuilder("io")
    x = b.input("x", SHAPE)
    b.op("Exp", x, name="dead")
    b.output(x, "same")
    b.output(b.const([1.0, 2.0], name="k"), "table")
    before = b.build()
    after, _ = eliminate(before)
    assert sorted(after.nx) == ["k", "same", "table", "x"]
    assert after.output_names() == ["same", "table"]
    assert_same_outputs(before, after, random_feeds(before))


def test_nothing_dead_is_unchanged():
    module = load("cnn")
    before = module.build()
    after, report = eliminate(before)
    assert after.format() == before.format()
    assert_same_structure(after, before)
    assert report.rewrites == 0 and report.explanations == []


# ----- idempotence ------------------------------------------------------------------------------


def test_idempotent():
    before = dead_graph()
    once, _ = eliminate(before)
    twice, report = eliminate(once)
    assert report.rewrites == 0
    assert twice.format() == once.format()
    assert_same_structure(twice, once)
    assert_same_outputs(before, twice, random_feeds(before))
