"""remove-dropout: every inference form goes, a used mask becomes a constant all-true tensor,
active or runtime-controlled Dropout is refused, keep_dropout keeps them; numerics and names."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.dsl import GraphBuilder, Tensor
from graphc.interpret import run
from graphc.ir import CONST, Graph, Value
from graphc.models import load
from graphc.passes.remove_dropout import remove_dropout
from graphc.rewrite import PassReport
from graphc.testing import assert_same_outputs as same_outputs
from graphc.testing import assert_same_structure, random_feeds

F32 = np.float32
SHAPE = (2, 3, 4)


def assert_same_outputs(before: Graph, after: Graph, feeds: dict, rtol: float = 1e-5) -> None:
    """Outputs agree before and after, on the interpreter and on onnxruntime."""
    same_outputs(before, after, feeds, rtol)


# ----- helpers ----------------------------------------------------------------------------------










def remove(g: Graph, **options) -> tuple[Graph, PassReport]:
    report = PassReport("remove-dropout")
    text = g.format()
    out = remove_dropout(g, report=report, **options)
    assert g.format() == text, "the pass changed its input graph"
    out.verify()
    return out, report




def ops_of(g: Graph) -> list[str]:
    return [g.op(n) for n in g.op_nodes()]


FORMS = {
    # name: (ratio, training_mode) given as constants; None = absent
    "data-only": (None, None),
    "ratio": (0.3, None),
    "ratio-training-false": (0.3, False),
    "training-false-no-ratio": (None, False),
    "ratio-zero": (0.0, None),
}


def dropout_graph(form: str) -> Graph:
    """x -> Exp -> Dropout -> Relu -> y, with the Dropout in the given form."""
    ratio, training = FORMS[form]
    g = Graph(form)
    x = g.add_input("x", SHAPE)
    h = g.add_node("Exp", [x], name="exp")
    inputs: list[Value | None] = [h]
    if ratio is not None or training is not None:
        inputs.append(None if ratio is None else g.add_const("drop.ratio", np.float32(ratio)))
    if training is not None:
        inputs.append(g.add_const("drop.training", np.array(training)))
    d = g.add_node("Dropout", inputs, name="drop")
    g.outputs.append(g.add_node("Relu", [d], name="y"))
    g.verify()
    return g


def expected_without_dropout() -> Graph:
    g = Graph("expected")
    x = g.add_input("x", SHAPE)
    g.outputs.append(g.add_node("Relu", [g.add_node("Exp", [x])], name="y"))
    return g


# ----- every form -------------------------------------------------------------------------------


@pytest.mark.parametrize("form", list(FORMS))
def test_every_inference_form_is_removed(form):
    before = dropout_graph(form)
    after, report = remove(before)
    assert_same_structure(after, expected_without_dropout())
    assert report.rewrites == 1 and report.refusals == []
    assert after.in_values("y") == [Value("exp")]
    assert after.output_names() == ["y"]
    assert_same_outputs(before, after, random_feeds(before))


@pytest.mark.parametrize("form", list(FORMS))
def test_idempotent(form):
    once, _ = remove(dropout_graph(form))
    twice, report = remove(once)
    assert report.rewrites == 0
    assert twice.format() == once.format()
    assert_same_structure(twice, once)


def test_dropout_that_is_a_graph_output_keeps_its_name():
    b = GraphBuilder("out")
    x = b.input("x", SHAPE)
    b.output(b.op("Dropout", b.op("Sigmoid", x), b.const(np.float32(0.5))), "y")
    before = b.build()
    after, _ = remove(before)
    assert ops_of(after) == ["Sigmoid"]
    assert after.output_names() == ["y"]
    assert_same_outputs(before, after, random_feeds(before))


def test_dropout_of_a_graph_input_that_is_an_output_keeps_the_output_name():
    g = Graph("io")
    x = g.add_input("x", SHAPE)
    g.outputs.append(g.add_node("Dropout", [x], name="y"))
    after, _ = remove(g)
    assert ops_of(after) == ["Identity"]
    assert after.output_names() == ["y"]
    assert_same_outputs(g, after, random_feeds(g))


# ----- the mask ---------------------------------------------------------------------------------


def mask_graph(mask_as_output: str) -> Graph:
    """x -> Dropout; y = Relu(data); the mask feeds a Transpose (``"node"``), is itself a graph
    output (``"raw"``), or is named by the DSL (an Identity, ``"dsl"``)."""
    b = GraphBuilder("mask")
    x = b.input("x", SHAPE)
    d = b.op("Dropout", x, b.const(np.float32(0.25)), name="drop")
    mask = Tensor(b, Value("drop", 1))
    b.output(b.op("Relu", d), "y")
    if mask_as_output == "node":
        b.output(b.op("Transpose", mask, perm=(2, 0, 1)), "mask_t")
    elif mask_as_output == "dsl":
        b.output(mask, "mask")
    g = b.build()
    if mask_as_output == "raw":
        g.outputs.append(Value("drop", 1))
        g.verify()
    return g


def test_used_mask_becomes_a_constant_all_true_tensor():
    before = mask_graph("node")
    after, report = remove(before)
    assert "Dropout" not in ops_of(after)
    assert report.rewrites == 1
    (mask,) = after.in_values("mask_t")
    array = after.const_value(mask)
    assert array is not None, after.format()
    assert array.dtype == np.bool_ and array.shape == SHAPE
    assert array.all()
    assert after.in_values("y") == [Value("x")]
    assert after.output_names() == ["y", "mask_t"]
    assert_same_outputs(before, after, random_feeds(before))


def test_mask_named_by_the_dsl_becomes_a_constant():
    before = mask_graph("dsl")
    after, _ = remove(before)
    assert "Dropout" not in ops_of(after)
    (mask,) = after.in_values("mask")
    array = after.const_value(mask)
    assert array is not None and array.dtype == np.bool_ and array.all()
    assert array.shape == SHAPE
    assert after.output_names() == ["y", "mask"]
    assert_same_outputs(before, after, random_feeds(before))


def test_mask_that_is_a_graph_output_keeps_its_name():
    before = mask_graph("raw")
    assert before.output_names() == ["y", "drop.mask"]
    after, _ = remove(before)
    assert "Dropout" not in ops_of(after)
    mask = after.outputs[1]
    # The output keeps its name through an Identity (an ONNX output needs a producing node) of
    # a bool constant, all true: never the data.
    assert after.op(mask.node) == "Identity"
    array = after.const_value(after.in_values(mask.node)[0])
    assert array is not None and array.dtype == np.bool_ and array.shape == SHAPE
    assert array.all()
    _, mask_value = run(after, random_feeds(before)).values()
    assert mask_value.dtype == np.bool_ and mask_value.all()
    assert after.output_names() == ["y", "drop.mask"]
    assert_same_outputs(before, after, random_feeds(before))


def test_unused_mask_adds_no_constant():
    after, _ = remove(dropout_graph("ratio"))
    assert not [n for n in after.nx if after.op(n) == CONST
                and after.type_of(Value(n)).dtype == np.bool_]


# ----- refusals and keep_dropout ----------------------------------------------------------------


def test_training_mode_true_is_refused():
    g = Graph("active")
    x = g.add_input("x", SHAPE)
    d = g.add_node("Dropout", [x, g.add_const("ratio", np.float32(0.5)),
                               g.add_const("training", np.array(True))], name="drop")
    g.outputs.append(g.add_node("Relu", [d], name="y"))
    after, report = remove(g)
    assert_same_structure(after, g)
    assert report.rewrites == 0
    assert len(report.refusals) == 1
    where, reason = report.refusals[0]
    assert where.startswith("%drop") and "training_mode is true" in reason, report.refusals


def test_training_mode_graph_input_is_refused():
    g = Graph("runtime")
    x = g.add_input("x", SHAPE)
    training = g.add_input("training", (), np.bool_)
    d = g.add_node("Dropout", [x, g.add_const("ratio", np.float32(0.5)), training], name="drop")
    g.outputs.append(g.add_node("Relu", [d], name="y"))
    after, report = remove(g)
    assert_same_structure(after, g)
    assert report.rewrites == 0
    assert len(report.refusals) == 1
    assert "runtime input" in report.refusals[0][1], report.refusals
    feeds = {"x": random_feeds(g)["x"], "training": np.array(False)}
    assert_same_outputs(g, after, feeds)


@pytest.mark.parametrize("form", list(FORMS))
def test_keep_dropout_leaves_them(form):
    before = dropout_graph(form)
    after, report = remove(before, keep_dropout=True)
    assert_same_structure(after, before)
    assert after.format() == before.format()
    assert report.rewrites == 0 and report.refusals == []


# ----- zoo --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "cnn", "teacher"])
def test_zoo_models_lose_every_dropout(name):
    module = load(name)
    before = module.build()
    n_dropout = ops_of(before).count("Dropout")
    assert n_dropout >= 1
    after, report = remove(before)
    assert "Dropout" not in ops_of(after)
    assert report.rewrites == n_dropout
    assert len(after.op_nodes()) == len(before.op_nodes()) - n_dropout
    assert after.output_names() == before.output_names()
    assert_same_outputs(before, after, module.example_inputs())
    kept, _ = remove(before, keep_dropout=True)
    assert ops_of(kept).count("Dropout") == n_dropout
