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
