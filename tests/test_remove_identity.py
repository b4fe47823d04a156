"""remove-identity: users of y = Identity(x), or of a one-input Concat/Sum/Max/Min/Mean, read
x; one that names a graph output fed by an input, a constant or another output stays; numerics
(interpreter and onnxruntime), idempotence and names; a DenseNet block's one-input Concat."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphc.dsl import GraphBuilder, Tensor
from graphc.ir import Graph, Value
from graphc.onnxio.export import to_bytes
from graphc.onnxio.importer import from_onnx
from graphc.onnxio.runtime import session
from graphc.passes.remove_identity import remove_identity
from graphc.pipeline import resolve, run_pipeline
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



# ----- ops that are the identity with one input -------------------------------------------------


def relu_of(op: str, inputs: int) -> Graph:
    """Relu(op(Tanh(x))) with one input, or Relu(op(x, Tanh(x))) with two."""
    g = Graph(op)
    x = g.add_input("x", SHAPE)
    args = [g.add_node("Tanh", [x], name="tanh")]
    if inputs == 2:
        args.insert(0, x)
    h = g.add_node(op, args, {"axis": 1} if op == "Concat" else {}, name="op")
    g.outputs.append(g.add_node("Relu", [h], name="y"))
    return g


@pytest.mark.parametrize("op", remove_identity_module.ONE_INPUT_IDENTITY)
def test_one_input_op_is_removed(op):
    g = relu_of(op, inputs=1)
    after, report = remove(g)

    want = Graph("expected")
    wx = want.add_input("x", SHAPE)
    want.outputs.append(want.add_node("Relu", [want.add_node("Tanh", [wx])]))
    assert_same_structure(after, want)
    assert report.rewrites == 1 and report.refusals == []
    assert report.notes == [f"removed as the identity (one input): 1 {op}"]
    assert_same_outputs(g, after, random_feeds(g))


@pytest.mark.parametrize("op", remove_identity_module.ONE_INPUT_IDENTITY)
def test_op_of_two_inputs_stays_without_a_refusal(op):
    g = relu_of(op, inputs=2)
    after, report = remove(g)
    assert after.format() == g.format()
    assert report.rewrites == 0 and report.refusals == [] and report.notes == []


def test_one_input_concat_naming_an_output_gives_its_name_to_the_producer():
    g = Graph("named")
    x = g.add_input("x", SHAPE)
    g.outputs.append(g.add_node("Concat", [g.add_node("Exp", [x], name="exp")], {"axis": 0},
                                name="y"))
    after, report = remove(g)
    assert ops_of(after) == ["Exp"] and after.op("y") == "Exp"
    assert after.output_names() == ["y"]
    assert_same_outputs(g, after, random_feeds(g))


def test_one_input_concat_naming_an_output_fed_by_an_input_stays():
    g = Graph("io")
    x = g.add_input("x", SHAPE)
    g.outputs.append(g.add_node("Concat", [x], {"axis": 1}, name="y"))
    after, report = remove(g)
    assert after.format() == g.format()
    assert report.rewrites == 0 and report.notes == []
    ((where, reason),) = report.refusals
    assert where.startswith("%y = Concat(%x)") and "input" in reason, report.refusals
    assert_same_outputs(g, after, random_feeds(g))


def dense_block_onnx(seed: int = 0) -> bytes:
    """The start of a DenseNet block as PyTorch exports it: MaxPool -> Concat([pool]) -> BN ->
    Relu -> Conv, then Concat([pool, conv]) -> BN -> Relu (random BN statistics)."""
    rng = np.random.default_rng(seed)
    c, grow = 4, 3

    def init(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(array.astype(F32), name)

    def bn(name: str, channels: int) -> list[onnx.TensorProto]:
        return [init(f"{name}_gamma", rng.uniform(0.5, 1.5, channels)),
                init(f"{name}_beta", rng.uniform(-0.5, 0.5, channels)),
                init(f"{name}_mean", rng.uniform(-0.5, 0.5, channels)),
                init(f"{name}_var", rng.uniform(0.5, 2.0, channels))]

    stats = [*bn("bn1", c), *bn("bn2", c + grow)]
    inits = [*stats, init("w", rng.standard_normal((grow, c, 3, 3))),
             init("b", rng.standard_normal(grow))]
    nodes = [
        helper.make_node("MaxPool", ["x"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Concat", ["pool"], ["cat1"], axis=1),
        helper.make_node("BatchNormalization", ["cat1", *(s.name for s in stats[:4])], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["pool", "conv"], ["cat2"], axis=1),
        helper.make_node("BatchNormalization", ["cat2", *(s.name for s in stats[4:])], ["n2"]),
        helper.make_node("Relu", ["n2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "dense_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c + grow, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def test_one_input_concat_of_a_dense_block_goes_in_the_inference_pipeline():
    given = dense_block_onnx()
    g = from_onnx(given)
    after, reports = run_pipeline(g, resolve(pipeline="inference"))
    assert sorted(ops_of(g)) == sorted(["MaxPool", "Concat", "BatchNormalization", "Relu",
                                        "Conv", "Concat", "BatchNormalization", "Relu"])
    # The one-input Concat goes; its BN now reads the MaxPool and, like the BN after the
    # two-input Concat, stays one BatchNormalization node.
    assert sorted(ops_of(after)) == sorted(["MaxPool", "BatchNormalization", "Relu", "Conv",
                                            "Concat", "BatchNormalization", "Relu"])
    (concat,) = [n for n in after.op_nodes() if after.op(n) == "Concat"]
    assert len(after.in_values(concat)) == 2
    (report,) = [r for r in reports if r.name == "remove-identity"]
    assert report.notes == ["removed as the identity (one input): 1 Concat"]
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(F32)}
    assert_same_outputs(g, after, feeds)
    want = session(given, threads=1).run(None, feeds)
    got = session(to_bytes(after), threads=1).run(None, feeds)
    np.testing.assert_array_equal(got[0], want[0])
