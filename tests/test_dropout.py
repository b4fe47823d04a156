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
