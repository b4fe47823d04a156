"""The two dropout conventions: inverted (scaled in training, ONNX's) and original (at test)."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError
from graphc.interpret import run
from graphc.pipeline import resolve, run_pipeline
from graphc.train.optim import SGD
from graphc.train.runner import InterpreterRunner
from graphc.train.step import compile_step

P = 0.25


def model(scale_at: str):
    b = GraphBuilder("drop", dtype=np.float64)
    x = b.input("x", (6, 4))
    h = nn.linear(x, 5, name="fc")
    b.output(nn.dropout(h, P, scale_at=scale_at, name="drop"), "y")
    return b.build()


def hidden(g, x: np.ndarray) -> np.ndarray:
    w, bias = (g.nx.nodes[n]["value"] for n in ("fc.weight", "fc.bias"))
    return x @ w.T + bias


@pytest.mark.parametrize(("scale_at", "train_values", "test_factor"),
                         [("train", 1 / (1 - P), 1.0), ("test", 1.0, 1 - P)])
def test_training_and_inference_scaling(scale_at: str, train_values: float,
                                        test_factor: float) -> None:
    g = model(scale_at)
    x = np.random.default_rng(0).standard_normal((6, 4))
    h = hidden(g, x)
    inference = run_pipeline(g, resolve(None, "inference"))[0]
    assert "Dropout" not in {inference.op(n) for n in inference.op_nodes()}
    np.testing.assert_allclose(run(inference, {"x": x})["y"], h * test_factor, rtol=1e-12)
    np.testing.assert_allclose(run(g, {"x": x})["y"], h * test_factor, rtol=1e-12)
    spec = compile_step(g, SGD(lr=0.0), loss="mse")
    masks = spec.dropout_masks(np.random.default_rng(1))
    (mask,) = masks.values()
    out = InterpreterRunner(spec).run({"x": x, "target": np.zeros((6, 5)), **masks}, lr=0.0)
    kept = mask != 0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(out.prediction[kept], h[kept] * train_values, rtol=1e-12)
    assert (out.prediction[~kept] == 0).all()
    # Expectation over the mask equals the inference output: E[train] = h * train_values * keep.
    assert train_values * (1 - P) == pytest.approx(test_factor)


def test_unknown_convention_is_named() -> None:
    b = GraphBuilder("drop")
    with pytest.raises(GraphcError, match="unknown dropout scaling 'tset'.*Did you mean 'test'"):
        nn.dropout(b.input("x", (2, 2)), 0.5, scale_at="tset")


@pytest.mark.parametrize("spelling", [{"keep": 0.75}, {"drop": 0.25}, {"p": 0.25}])
def test_keep_and_drop_spell_the_same_layer(spelling: dict) -> None:
    # The course's p is the probability of keeping a unit; ONNX's ratio (and PyTorch's p) the
    # probability of dropping it. keep=0.75 and drop=0.25 are the same layer.
    b = GraphBuilder("drop", dtype=np.float64)
    x = b.input("x", (6, 4))
    b.output(nn.dropout(x, **spelling, scale_at="test", name="drop"), "y")
    g = b.build()
    assert float(g.nx.nodes["drop.ratio"]["value"]) == 0.25
    xv = np.arange(24.0).reshape(6, 4)
    # Scaled at test: the inference output is the expectation keep * x of the training output.
    np.testing.assert_allclose(run(g, {"x": xv})["y"], 0.75 * xv, rtol=1e-12)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"keep": 0.75, "drop": 0.25}, "dropout takes one probability; expected one of p=, keep=, "
                                   "drop=, got keep, drop"),
    ({"keep": 0.0}, "dropout keep probability out of range; expected 0 < keep <= 1, got 0.0"),
    ({"drop": 1.0}, "dropout probability out of range; expected 0 <= drop < 1, got 1.0"),
])
def test_bad_probabilities_are_named(kwargs: dict, message: str) -> None:
    b = GraphBuilder("drop")
    with pytest.raises(GraphcError) as info:
        nn.dropout(b.input("x", (2, 2)), **kwargs, name="d")
    assert message in str(info.value)


def test_keep_one_is_no_dropout() -> None:
    b = GraphBuilder("drop", dtype=np.float64)
    x = b.input("x", (3, 2))
    b.output(nn.dropout(x, keep=1.0, name="d"), "y")
    g = b.build()
    assert float(g.nx.nodes["d.ratio"]["value"]) == 0.0


# --- the course's convention for a model built with inverted dropout ----------------------


def test_dropout_at_test_turns_inverted_dropout_into_the_courses_form() -> None:
    from graphc.train.conventions import dropout_at_test

    g = model("train")
    course = dropout_at_test(g)
    x = np.random.default_rng(0).standard_normal((6, 4))
    h = hidden(g, x)
    np.testing.assert_allclose(run(course, {"x": x})["y"], h * (1 - P), rtol=1e-12)
    # The same layers as nn.dropout(scale_at="test") builds, and nothing changes twice.
    assert [course.op(n) for n in course.op_nodes()] == ["Gemm", "Dropout", "Mul"]
    again = dropout_at_test(course)
    assert [again.op(n) for n in again.op_nodes()] == ["Gemm", "Dropout", "Mul"]
    built = model("test")
    assert [built.op(n) for n in dropout_at_test(built).op_nodes()] == ["Gemm", "Dropout", "Mul"]
    # In training the kept units pass unscaled: zero or h.
    spec = compile_step(course, SGD(lr=0.0), loss="mse")
    masks = spec.dropout_masks(np.random.default_rng(1))
    out = InterpreterRunner(spec).run({"x": x, "target": np.zeros((6, 5)), **masks}, lr=0.0)
    kept = next(iter(masks.values())) != 0
    np.testing.assert_allclose(out.prediction[kept], h[kept], rtol=1e-9)
    assert (out.prediction[~kept] == 0).all()


def test_a_ratio_fed_at_run_time_is_refused() -> None:
    from graphc.train.conventions import dropout_at_test

    b = GraphBuilder("drop")
    x = b.input("x", (2, 2))
    ratio = b.input("ratio", (), dtype=np.float32)
    b.output(b.op("Dropout", x, ratio, name="d"), "y")
    with pytest.raises(GraphcError, match="a Dropout ratio fed at run time cannot be moved to "
                                          "test time; expected a constant ratio, got Input"):
        dropout_at_test(b.build())


def test_train_and_compile_with_the_courses_dropout(tmp_path, capsys) -> None:
    from graphc.cli import main
    from graphc.onnxio.runtime import run_onnxruntime
    from graphc.train.checkpoint import load_checkpoint
    from graphc.train.data import load_digits

    ckpt, onnx_file = tmp_path / "m.ckpt", tmp_path / "m.onnx"
    assert main(["train", "mlp", "--data", "digits", "--epochs", "1", "--dropout-scaling",
                 "test", "-o", str(ckpt)]) == 0
    ck = load_checkpoint(ckpt)
    assert ck.config.dropout_scaling == "test"
    assert main(["compile", "mlp", "--weights", str(ckpt), "--pipeline", "inference", "-o",
                 str(onnx_file)]) == 0
    capsys.readouterr()
    # The written model multiplies each hidden layer by the keep probability 0.8, as computed
    # here in numpy from the checkpoint's weights.
    w = ck.state
    x = load_digits(layout="flat")[1].x[:1]
    h1 = 0.8 * np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    h2 = 0.8 * np.maximum(h1 @ w["fc2.weight"].T + w["fc2.bias"], 0)
    want = h2 @ w["fc3.weight"].T + w["fc3.bias"]
    got = run_onnxruntime(onnx_file.read_bytes(), {"x": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
