"""substitute-student: the zoo's teacher replaced by its trained student (outputs, interface,
the accuracy gate against accuracies computed here in numpy), a named subgraph replaced by a
smaller block (against numpy), refusals, idempotence; and graphc.compress.gate."""

from __future__ import annotations

import numpy as np
import pytest

import graphc.passes
from graphc import testing
from graphc.compress import gate as gates
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError, UsageError
from graphc.interpret import run
from graphc.ir import Graph
from graphc.models import load
from graphc.onnxio.export import to_bytes
from graphc.onnxio.runtime import run_onnxruntime
from graphc.passes.substitute_student import find_region, substitute_student
from graphc.pipeline import run_pipeline
from graphc.rewrite import PassReport
from graphc.shapes import layer_table
from graphc.train.data import load_digits
from graphc.train.loop import TrainConfig, train
from graphc.train.step import apply_state


def _trained(name: str, epochs: int, lr: float, train_set, test_set) -> dict:
    module = load(name)
    config = TrainConfig(epochs=epochs, batch=32, lr=lr)
    return train(lambda batch: module.build(seed=0, batch=batch), train_set, test_set, config,
                 progress=False).state


def _numpy_accuracy(name: str, state: dict, x: np.ndarray, y: np.ndarray) -> float:
    """The model built at the whole test split's batch, on the interpreter, argmax in numpy:
    independent of the gate's chunking and of onnxruntime."""
    g = apply_state(load(name).build(seed=0, batch=len(x)), state)
    logits = run(g, {"x": x.reshape(len(x), 1, 8, 8).astype(np.float32)})["logits"]
    return float(np.mean(np.argmax(logits, axis=1) == y))


@pytest.fixture(scope="module")
def zoo():
    """The teacher (3 epochs), a good student (20 epochs) and an untrained one, at batch 1,
    with the digits test split and each model's accuracy on it."""
    train_set, test_set = load_digits()
    states = {"teacher": _trained("teacher", 3, 0.05, train_set, test_set),
              "student": _trained("student", 20, 0.1, train_set, test_set)}
    graphs = {k: apply_state(load(k).build(seed=0), s) for k, s in states.items()}
    graphs["untrained"] = load("student").build(seed=0)
    states["untrained"] = {}
    x, y = test_set.x, test_set.y
    accuracy = {k: _numpy_accuracy("teacher" if k == "teacher" else "student", states[k], x, y)
                for k in graphs}
    return graphs, (x, y), accuracy


def _pct(a: float) -> str:
    return f"{100 * a:.2f}%"


def _feeds(seed: int, shape=(1, 1, 8, 8)) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


# ----- whole model --------------------------------------------------------------------------


def test_whole_model_computes_the_student(zoo):
    graphs, data, accuracy = zoo
    teacher, student = graphs["teacher"], graphs["student"]
    before = teacher.copy()
    report = PassReport("substitute-student")
    new = substitute_student(teacher, student=student, data=data, gate=1.0, report=report)
    new.verify()
    assert testing.same_structure(teacher, before)  # the input is not changed
    assert testing.same_structure(new, student)
    assert new.inputs == teacher.inputs and new.output_names() == teacher.output_names()
    for seed in range(3):
        feeds = _feeds(seed)
        want = run(student, feeds)["logits"]
        np.testing.assert_array_equal(run(new, feeds)["logits"], want)
        got = run_onnxruntime(to_bytes(new), feeds)["logits"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    notes = "\n".join(report.notes)
    assert (f"student {_pct(accuracy['student'])} vs teacher {_pct(accuracy['teacher'])}"
            in notes), notes
    assert f"{len(data[1])} held-out samples" in notes
    assert f"teacher {teacher.num_params():,} -> student {student.num_params():,}" in notes
    assert student.num_params() == 1442 and teacher.num_params() == 99370
    flops = [sum(r.flops for r in layer_table(g)) for g in (teacher, student)]
    assert f"teacher {flops[0]:,} -> student {flops[1]:,}" in notes
    sizes = [len(to_bytes(g)) / 1024 for g in (teacher, student)]
    assert f"teacher {sizes[0]:,.1f} KiB -> student {sizes[1]:,.1f} KiB" in notes
    assert "latency      student " in notes and "x teacher at batch 1" in notes
    assert report.rewrites == 1


def test_the_gate_refuses_an_untrained_student_with_both_accuracies(zoo):
    graphs, data, accuracy = zoo
    teacher, bad = accuracy["teacher"], accuracy["untrained"]
    assert bad < teacher - 0.05
    with pytest.raises(GraphcError) as err:
        substitute_student(graphs["teacher"], student=graphs["untrained"], data=data, gate=1.0)
    text = str(err.value)
    assert text.startswith("accuracy gate: student accuracy "), text
    assert (f"expected >= {100 * teacher - 1:.2f}% (teacher {_pct(teacher)} - 1.0 points), "
            f"got {_pct(bad)}.") in text


def test_the_gate_is_the_difference_in_points(zoo):
    graphs, data, accuracy = zoo
    teacher, student = graphs["teacher"], graphs["student"]
    diff = 100 * (accuracy["teacher"] - accuracy["student"])
    assert diff < 1.0  # the trained student is within the default gate
    substitute_student(teacher, student=student, data=data)
    substitute_student(teacher, student=student, data=data, gate=max(diff, 0.0) + 0.01,
                       backend="interpreter")
    if diff > 0.01:
        with pytest.raises(GraphcError, match="more than .* points below teacher"):
            substitute_student(teacher, student=student, data=data, gate=diff - 0.01)


def test_gate_accuracy_on_both_backends_equals_numpy(zoo):
    graphs, (x, y), accuracy = zoo
    for name in ("teacher", "student"):
        for backend in gates.BACKENDS:
            got = gates.accuracy(graphs[name], x, y, backend=backend)
            assert got == pytest.approx(accuracy[name], abs=0.5 / len(y)), (name, backend)
    result = gates.compare(graphs["teacher"], graphs["student"], (x, y), points=1.0,
                           names=("teacher", "student"))
    assert (result.reference, result.candidate) == pytest.approx(
        (accuracy["teacher"], accuracy["student"]), abs=0.5 / len(y))


def test_pipeline_runs_the_pass_and_keeps_the_interface(zoo, monkeypatch):
    graphs, data, _ = zoo
    if substitute_student not in graphc.passes.PASSES:
        monkeypatch.setattr(graphc.passes, "PASSES", [*graphc.passes.PASSES, substitute_student])
    folded, _ = run_pipeline(graphs["student"], ["fold-batchnorm"])
    new, reports = run_pipeline(graphs["teacher"], ["fold-batchnorm", "substitute-student"],
                                {"substitute-student": {"student": folded, "data": data}})
    assert testing.same_structure(new, folded)
    assert [r.name for r in reports] == ["fold-batchnorm", "substitute-student"]
    assert reports[1].params_after == folded.num_params()


def test_interface_mismatch_is_refused_naming_what_differs(zoo):
    graphs, _, _ = zoo
    cnn_teacher = graphs["teacher"]
    with pytest.raises(GraphcError) as err:
        substitute_student(cnn_teacher, student=load("mlp").build())
    assert str(err.value) == ("student input 'x': the student's input 'x' differs from the "
                              "teacher's; expected (1,1,8,8) f32, got (1,64) f32. Build the "
                              "student at the teacher's batch size and shapes.")
    with pytest.raises(GraphcError, match=r"input 'x'.*expected \(1,1,8,8\) f32, got "
                                          r"\(4,1,8,8\) f32"):
        substitute_student(cnn_teacher, student=load("student").build(batch=4))
    b = GraphBuilder("other")
    x = b.input("image", (1, 1, 8, 8))
    b.output(b.op("Flatten", b.op("AveragePool", x, kernel_shape=(8, 8))), "scores")
    with pytest.raises(GraphcError) as err:
        substitute_student(cnn_teacher, student=b.build())
    assert "the student has no input 'x' and an extra input 'image'" in str(err.value)
    b = GraphBuilder("other")
    x = b.input("x", (1, 1, 8, 8))
    b.output(b.op("Flatten", b.op("AveragePool", x, kernel_shape=(8, 8))), "scores")
    with pytest.raises(GraphcError) as err:
        substitute_student(cnn_teacher, student=b.build())
    assert ("the student has no output 'logits' and an extra output 'scores'; expected the "
            "teacher's outputs logits (1,10) f32, got scores (1,1) f32") in str(err.value)


def test_whole_model_substitution_is_idempotent(zoo):
    graphs, _, _ = zoo
    once = substitute_student(graphs["teacher"], student=graphs["student"])
    twice = substitute_student(once, student=graphs["student"])
    assert testing.same_structure(once, twice)


@pytest.mark.parametrize(("options", "message"), [
    ({"gate": -1.0}, "the accuracy gate must be a number of points >= 0"),
    ({"gate": float("nan")}, "the accuracy gate must be a number of points >= 0"),
    ({"data": (np.zeros((3, 64)), np.zeros(2, np.int64))}, "one label per sample"),
    ({"data": (np.zeros((3, 64)), np.zeros(3))}, "one integer class per sample"),
    ({"student": "student"}, "needs the student as a graph"),
])
def test_bad_options(options, message):
    teacher = load("teacher").build()
    with pytest.raises(UsageError, match=message):
        substitute_student(teacher, **{"student": load("student").build(), **options})


def test_held_out_data_of_another_shape_is_refused():
    teacher = load("teacher").build()
    data = (np.zeros((4, 64), np.float32), np.zeros(4, np.int64))
    substitute_student(teacher, student=load("student").build(), data=data)  # 64 = 8 x 8
    with pytest.raises(GraphcError, match=r"do not fit the model's input; expected samples of "
                                          r"shape \(1, 8, 8\)"):
        substitute_student(teacher, student=load("student").build(),
                           data=(np.zeros((4, 10), np.float32), np.zeros(4, np.int64)))


# ----- a named subgraph ---------------------------------------------------------------------

RNG = np.random.default_rng(7)
W = {name: RNG.standard_normal(shape).astype(np.float32) for name, shape in (
    ("stem.w", (8, 6)), ("stem.b", (8,)), ("fc1.w", (16, 8)), ("fc1.b", (16,)),
    ("fc2.w", (8, 16)), ("fc2.b", (8,)), ("head.w", (3, 8)), ("head.b", (3,)),
    ("small.w", (8, 8)), ("small.b", (8,)))}


def _gemm(b: GraphBuilder, h, key: str, name: str):
    return b.op("Gemm", h, b.const(W[key + ".w"], name + ".weight"),
                b.const(W[key + ".b"], name + ".bias"), name=b.scoped(name), transB=1)


def scoped_net() -> Graph:
    """x (2, 6) -> stem: Relu(Gemm) -> backbone: Relu(Gemm 8->16), Relu(Gemm 16->8) -> head:
    Gemm 8->3, the output head.fc."""
    b = GraphBuilder("scoped")
    x = b.input("x", (2, 6))
    with b.scope("stem"):
        h = b.op("Relu", _gemm(b, x, "stem", "fc"), name="stem.relu")
    with b.scope("backbone"):
        h = b.op("Relu", _gemm(b, h, "fc1", "fc1"), name="backbone.relu1")
        h = b.op("Relu", _gemm(b, h, "fc2", "fc2"), name="backbone.relu2")
    with b.scope("head"):
        b.output(_gemm(b, h, "head", "fc"))
    return b.build()


def small_block(shape=(2, 8), out: int = 8) -> Graph:
    """The student block: tanh(h W^T + b), one Gemm 8->8 instead of two."""
    b = GraphBuilder("small")
    h = b.input("h", shape)
    w = W["small.w"][:out]
    y = b.op("Gemm", h, b.const(w, "fc.weight"), b.const(W["small.b"][:out], "fc.bias"),
             name="fc", transB=1)
    b.output(b.op("Tanh", y, name="tanh"))
    return b.build()


def _numpy_scoped(x: np.ndarray, block) -> np.ndarray:
    def gemm(h, key):
        return h.astype(np.float64) @ W[key + ".w"].T.astype(np.float64) + W[key + ".b"]

    h = np.maximum(gemm(x, "stem"), 0)
    return gemm(block(h, gemm), "head")


def test_subgraph_is_replaced_by_the_block_as_numpy_computes_it():
    g = scoped_net()
    x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    teacher = _numpy_scoped(x, lambda h, gemm: np.maximum(gemm(np.maximum(gemm(h, "fc1"), 0),
                                                               "fc2"), 0))
    np.testing.assert_allclose(run(g, {"x": x})["head.fc"], teacher, rtol=1e-5, atol=1e-5)
    report = PassReport("substitute-student")
    new = substitute_student(g, student=small_block(), subgraph="backbone", report=report)
    new.verify()
    want = _numpy_scoped(x, lambda h, gemm: np.tanh(gemm(h, "small")))
    np.testing.assert_allclose(run(new, {"x": x})["head.fc"], want, rtol=1e-5, atol=1e-5)
    got = run_onnxruntime(to_bytes(new), {"x": x})["head.fc"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The block under the region's scope, its output with the region's exit name; the rest
    # (stem, head) untouched; the region's nodes and weights gone.
    inside = sorted(n for n in new.nx if n.startswith("backbone."))
    assert inside == ["backbone.fc", "backbone.fc.bias", "backbone.fc.weight",
                      "backbone.relu2"]
    assert new.op("backbone.relu2") == "Tanh"
    assert new.in_values("head.fc")[0].node == "backbone.relu2"
    assert sorted(set(g.nx) - set(new.nx)) == [
        "backbone.fc1", "backbone.fc1.bias", "backbone.fc1.weight", "backbone.fc2",
        "backbone.fc2.bias", "backbone.fc2.weight", "backbone.relu1"]
    assert new.num_params() == g.num_params()  # consts from b.const are not trainable
    assert report.notes[0] == ("replaced     subgraph 'backbone' (4 ops, %stem.relu -> "
                               "%backbone.relu2) by 'small' (2 ops)")
    assert "accuracy     not measured (no held-out data)" in report.notes[1]
    again = substitute_student(new, student=small_block(), subgraph="backbone")
    assert testing.same_structure(again, new)


def test_subgraph_at_the_graph_output_keeps_the_output_name():
    g = scoped_net()
    b = GraphBuilder("head2")
    h = b.input("h", (2, 8))
    b.output(b.op("Gemm", h, b.const(W["head.w"] * 2, "w"), b.const(W["head.b"], "b"),
                  name="fc", transB=1))
    new = substitute_student(g, student=b.build(), subgraph="head")
    assert new.output_names() == g.output_names() == ["head.fc"]
    x = np.ones((2, 6), np.float32)
    h = np.maximum(x @ W["stem.w"].T + W["stem.b"], 0)
    h = np.maximum(np.maximum(h @ W["fc1.w"].T + W["fc1.b"], 0) @ W["fc2.w"].T + W["fc2.b"], 0)
    np.testing.assert_allclose(run(new, {"x": x})["head.fc"], h @ (2 * W["head.w"]).T + W["head.b"],
                               rtol=1e-5)


def test_subgraph_refusals():
    g = scoped_net()
    with pytest.raises(GraphcError, match=r"unknown subgraph 'trunk'; expected one of "
                                          r"'backbone', 'head', 'stem'"):
        substitute_student(g, student=small_block(), subgraph="trunk")
    with pytest.raises(GraphcError) as err:
        substitute_student(g, student=small_block(out=4), subgraph="backbone")
    assert str(err.value) == ("student output %tanh: the student block's output differs from "
                              "the value leaving subgraph 'backbone'; expected (2,8) f32 "
                              "(%backbone.relu2), got (2,4) f32.")
    with pytest.raises(GraphcError, match=r"input differs .* expected \(2,8\) f32 "
                                          r"\(%stem.relu\), got \(3,8\) f32"):
        substitute_student(g, student=small_block(shape=(3, 8)), subgraph="backbone")
    # Two values leave the region (a skip around its second half), two enter another.
    b = GraphBuilder("skips")
    x = b.input("x", (2, 8))
    z = b.input("z", (2, 8))
    with b.scope("block"):
        a = b.op("Relu", x, name="block.relu")
        c = b.op("Tanh", a, name="block.tanh")
    with b.scope("join"):
        s = b.op("Add", b.op("Add", a, c, name="join.add"), z, name="join.add2")
    b.output(s)
    skips = b.build()
    with pytest.raises(GraphcError) as err:
        substitute_student(skips, student=small_block(), subgraph="block")
    assert str(err.value).startswith("subgraph 'block': 2 values are leaving subgraph 'block'; "
                                     "expected one value leaving it, got %block.relu, "
                                     "%block.tanh.")
    with pytest.raises(GraphcError, match="3 values are entering subgraph 'join'.*got "
                                          "%block.relu, %block.tanh, %z"):
        substitute_student(skips, student=small_block(), subgraph="join")
    two = GraphBuilder("two")
    x = two.input("h", (2, 8))
    two.output(two.op("Relu", x, name="r"))
    two.output(two.op("Tanh", x, name="t"))
    with pytest.raises(GraphcError, match="the student block has 1 inputs and 2 outputs"):
        substitute_student(g, student=two.build(), subgraph="backbone")


def test_region_of_the_zoo_cnn():
    g = load("cnn").build()
    region = find_region(g, "block2")
    assert [n for n in region.nodes if g.op(n) != "Const"] == [
        "block2.conv", "block2.bn", "block2.relu"]
    assert (region.entry.node, region.exit.node) == ("block1.relu", "block2.relu")


# ----- the gate -----------------------------------------------------------------------------


def test_gate_boundary_and_message():
    assert gates.Gate(0.98, 0.97, 1.0).passed  # exactly on the floor passes
    assert not gates.Gate(0.98, 0.9699, 1.0).passed
    assert gates.Gate(0.5, 0.9, 0.0).passed
    gate = gates.Gate(0.9833, 0.96, 1.0, "teacher", "student")
    assert gate.change == pytest.approx(-2.33)
    with pytest.raises(GraphcError) as err:
        gate.require("accuracy gate")
    assert str(err.value) == ("accuracy gate: student accuracy 96.00% is more than 1.0 points "
                              "below teacher 98.33%; expected >= 97.33% (teacher 98.33% - 1.0 "
                              "points), got 96.00%.")


def test_gate_accuracy_against_hand_computed_scores():
    b = GraphBuilder("identity")
    x = b.input("x", (2, 3))
    b.output(b.op("Identity", x), "y")
    g = b.build()
    scores = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32)
    labels = np.array([1, 0, 2, 2, 1])  # 3 of 5 right; 5 samples in chunks of 2
    for backend in gates.BACKENDS:
        assert gates.accuracy(g, scores, labels, backend=backend) == pytest.approx(0.6)
    with pytest.raises(GraphcError, match=r"expected labels 0..2, got labels 0..3"):
        gates.accuracy(g, scores, np.array([1, 0, 2, 3, 1]))
    with pytest.raises(UsageError, match="unknown backend 'gpu'"):
        gates.accuracy(g, scores, labels, backend="gpu")
