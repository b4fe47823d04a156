"""eliminate-dead-code: nodes no output depends on go, graph inputs always stay; numerics,
idempotence and names."""

from __future__ import annotations

import networkx as nx
import numpy as np

from graphc.dsl import GraphBuilder
from graphc.interpret import run
from graphc.ir import CONST, INPUT, Graph, Value
from graphc.models import load
from graphc.onnx_export import run_onnxruntime
from graphc.passes.eliminate_dead_code import eliminate_dead_code
from graphc.rewrite import PassReport

F32 = np.float32
SHAPE = (2, 3)


# ----- helpers ----------------------------------------------------------------------------------


def structure(g: Graph) -> nx.MultiDiGraph:
    """Return ``g`` as a plain multigraph: op, attrs, input names, const types, output slots."""
    s = nx.MultiDiGraph()
    for node, data in g.nx.nodes(data=True):
        label = {"op": data["op"], "attrs": dict(data["attrs"])}
        if data["op"] == INPUT:
            label["name"] = node
        if data["op"] == CONST:
            label["type"] = data["types"][0]
        label["outputs"] = tuple((k, v.out) for k, v in enumerate(g.outputs) if v.node == node)
        s.add_node(node, **label)
    for u, v, d in g.nx.edges(data=True):
        s.add_edge(u, v, port=d["port"], out=d["out"])
    return s


def _edges_match(a: dict, b: dict) -> bool:
    key = lambda edges: sorted((d["port"], d["out"]) for d in edges.values())  # noqa: E731
    return key(a) == key(b)


def assert_isomorphic(got: Graph, want: Graph) -> None:
    same = nx.is_isomorphic(structure(got), structure(want), node_match=lambda a, b: a == b,
                            edge_match=_edges_match)
    assert same, f"got:\n{got}\nexpected:\n{want}"


def assert_same_outputs(before: Graph, after: Graph, feeds: dict) -> None:
    """Outputs agree (names, values) before vs after, on the interpreter and on onnxruntime."""
    for runner in (run, run_onnxruntime):
        want = runner(before, feeds)
        got = runner(after, feeds)
        assert list(got) == list(want), runner.__name__
        for name, w in want.items():
            assert got[name].shape == w.shape and got[name].dtype == w.dtype, name
            np.testing.assert_array_equal(got[name], w)  # an exact pass


def eliminate(g: Graph) -> tuple[Graph, PassReport]:
    report = PassReport("eliminate-dead-code")
    text = g.format()
    nodes = set(g.nx)
    out = eliminate_dead_code(g, report=report)
    assert g.format() == text and set(g.nx) == nodes, "the pass changed its input graph"
    out.verify()
    return out, report


def feeds_for(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(g.types(n)[0].shape).astype(g.types(n)[0].dtype)
            for n in g.inputs}


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
    assert_isomorphic(after, want)
    assert sorted(set(before.nx) - set(after.nx)) == ["exp", "mul", "w"]
    assert after.inputs == ["x", "z", "u"]
    assert report.rewrites == 3
    assert sorted(e.before[0].split(" =")[0] for e in report.explanations) == \
        ["%exp", "%mul", "%w"]
    assert after.output_names() == ["y"]
    assert after.num_params() == 0 and before.num_params() == 6
    assert_same_outputs(before, after, feeds_for(before))


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
    assert_same_outputs(g, after, feeds_for(g))


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
    assert_same_outputs(before, after, feeds_for(before))


def test_nothing_dead_is_unchanged():
    module = load("cnn")
    before = module.build()
    after, report = eliminate(before)
    assert after.format() == before.format()
    assert_isomorphic(after, before)
    assert report.rewrites == 0 and report.explanations == []


# ----- idempotence ------------------------------------------------------------------------------


def test_idempotent():
    before = dead_graph()
    once, _ = eliminate(before)
    twice, report = eliminate(once)
    assert report.rewrites == 0
    assert twice.format() == once.format()
    assert_isomorphic(twice, once)
    assert_same_outputs(before, twice, feeds_for(before))
