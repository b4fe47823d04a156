"""remove-identity: users of y = Identity(x) read x; an Identity that names a graph output fed by
an input, a constant or another output stays; numerics, idempotence and names."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from graphc.dsl import GraphBuilder, Tensor
from graphc.ir import Graph, Value
from graphc.passes.remove_identity import remove_identity
from graphc.rewrite import PassReport, Rule
from graphc.testing import assert_same_outputs, assert_same_structure, random_feeds

# The package re-exports the function under the module's name, so fetch the module itself.
remove_identity_module = importlib.import_module("graphc.passes.remove_identity")

F32 = np.float32
SHAPE = (2, 3)


# ----- helpers ----------------------------------------------------------------------------------










def remove(g: Graph) -> tuple[Graph, PassReport]:
    report = PassReport("remove-identity")
    text = g.format()
    out = remove_identity(g, report=report)
    assert g.format() == text, "the pass changed its input graph"
    out.verify()
    return out, report




def ops_of(g: Graph) -> list[str]:
    return [g.op(n) for n in g.op_nodes()]


@pytest.fixture
def bounded_rewrites(monkeypatch):
    """Fail (instead of hanging) if the pass's rule fires more than 50 times on a tiny graph."""
    (rule,) = remove_identity_module.RULES
    calls = []

    def counted(g, m):
        calls.append(m.root)
        if len(calls) > 50:
            raise AssertionError(f"remove-identity does not converge: {len(calls)} rewrites, "
                                 f"the last ones of %{calls[-1]}; graph now:\n{g}")
        return rule.apply(g, m)

    monkeypatch.setattr(remove_identity_module, "RULES",
                        [Rule(rule.name, rule.pattern, counted, rule.formula)])
    return calls


# ----- structure --------------------------------------------------------------------------------


def test_chain_of_identities_is_removed():
    g = Graph("chain")
    x = g.add_input("x", SHAPE)
    h = g.add_node("Relu", [x], name="relu")
    h = g.add_node("Identity", [h], name="id1")
    h = g.add_node("Identity", [h], name="id2")
    e = g.add_node("Exp", [h], name="exp")
    g.outputs.append(g.add_node("Add", [e, h], name="y"))
    after, report = remove(g)

    want = Graph("expected")
    wx = want.add_input("x", SHAPE)
    r = want.add_node("Relu", [wx])
    want.outputs.append(want.add_node("Add", [want.add_node("Exp", [r]), r]))
    assert_same_structure(after, want)
    assert report.rewrites == 2 and report.refusals == []
    assert after.in_values("y") == [Value("exp"), Value("relu")]
    assert after.output_names() == ["y"]
    assert_same_outputs(g, after, random_feeds(g))


def test_identity_naming_an_output_gives_its_name_to_the_producer():
    b = GraphBuilder("named")
    x = b.input("x", SHAPE)
    b.output(b.op("Identity", b.op("Sigmoid", x, name="sig")), "y")
    before = b.build()
    after, _ = remove(before)
    assert ops_of(after) == ["Sigmoid"]
    assert after.op("y") == "Sigmoid" and "sig" not in after.nx
    assert after.output_names() == ["y"]
    assert_same_outputs(before, after, random_feeds(before))


# ----- refusals ---------------------------------------------------------------------------------


def test_identity_naming_an_output_fed_by_an_input_stays():
    b = GraphBuilder("io")
    x = b.input("x", SHAPE)
    b.output(x, "y")
    b.output(b.op("Relu", x), "r")
    before = b.build()
    assert before.op("y") == "Identity"
    after, report = remove(before)
    assert after.format() == before.format()
    assert report.rewrites == 0
    assert len(report.refusals) == 1
    where, reason = report.refusals[0]
    assert where.startswith("%y = Identity(%x)") and "input" in reason, report.refusals
    assert reason.startswith("remove-identity: ")
    assert after.output_names() == ["y", "r"]
    assert_same_outputs(before, after, random_feeds(before))


def test_identity_naming_an_output_fed_by_a_constant_stays():
    b = GraphBuilder("co")
    x = b.input("x", SHAPE)
    b.output(b.const(np.arange(6, dtype=F32).reshape(SHAPE), name="k"), "table")
    b.output(b.op("Relu", x), "r")
    before = b.build()
    after, report = remove(before)
    assert after.format() == before.format()
    assert after.output_names() == ["table", "r"]
    assert len(report.refusals) == 1
    assert_same_outputs(before, after, random_feeds(before))


def test_identity_naming_an_output_fed_by_another_output_stays():
    b = GraphBuilder("oo")
    x = b.input("x", SHAPE)
    r = b.output(b.op("Relu", x), "r")
    b.output(r, "r_copy")
    before = b.build()
    assert before.op("r_copy") == "Identity"
    after, report = remove(before)
    assert after.format() == before.format()
    assert after.output_names() == ["r", "r_copy"]
    assert len(report.refusals) == 1
    assert_same_outputs(before, after, random_feeds(before))


def test_identity_naming_the_dropout_mask_stays(bounded_rewrites):
    """The mask is output 1 of the Dropout: only an Identity can give it the name ``mask``."""
    b = GraphBuilder("mask")
    x = b.input("x", SHAPE)
    d = b.op("Dropout", x, name="drop")
    b.output(b.op("Relu", d), "y")
    b.output(Tensor(b, Value("drop", 1)), "mask")
    before = b.build()
    assert before.op("mask") == "Identity"
    after, _ = remove(before)
    assert after.output_names() == ["y", "mask"]
    assert ops_of(after).count("Identity") == 1
    assert_same_outputs(before, after, random_feeds(before))


# ----- idempotence ------------------------------------------------------------------------------


def test_idempotent():
    b = GraphBuilder("i")
    x = b.input("x", SHAPE)
    h = b.op("Identity", b.op("Identity", b.op("Tanh", x)))
    b.output(b.op("Identity", h * 2.0), "y")
    b.output(x, "x_copy")
    before = b.build()
    once, report1 = remove(before)
    twice, report2 = remove(once)
    assert report1.rewrites == 3
    assert report2.rewrites == 0
    assert twice.format() == once.format()
    assert_same_structure(twice, once)
    assert twice.output_names() == before.output_names() == ["y", "x_copy"]
    assert_same_outputs(before, twice, random_feeds(before))

