"""graphc.compress.speed_check: the verdict rule by hand, the paired check's structure, a model
made 30x slower on purpose, and the random inputs made for a model's inputs. No clock limits:
only the verdict on a 30-fold difference, far outside any noise band."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from graphc.compress.speed_check import (
    MIN_NOISE,
    SpeedCheck,
    check_speed,
    feeds_for,
    speed_verdict,
)
from graphc.errors import GraphcError, UsageError


@pytest.mark.parametrize("ratio, noise, want", [
    (1.0, 0.01, "same"), (1.02, 0.03, "same"), (0.98, 0.03, "same"), (1.031, 0.03, "slower"),
    (0.969, 0.03, "faster"), (1.03, 0.03, "same"), (1.5, 0.4, "slower"), (2.0, 1.5, "same"),
])
def test_verdict_rule(ratio, noise, want):
    assert speed_verdict(ratio, noise) == want


def relu_chain(depth: int, batch: str | int = "N") -> bytes:
    """X (batch, 64, 32, 32) -> depth Relu nodes -> Y."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, 64, 32, 32])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, 64, 32, 32])
    names = ["X"] + [f"h{k}" for k in range(depth - 1)] + ["Y"]
    nodes = [helper.make_node("Relu", [names[k]], [names[k + 1]], name=f"relu{k}")
             for k in range(depth)]
    graph = helper.make_graph(nodes, "chain", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def test_a_much_slower_file_is_slower_and_the_check_has_its_numbers():
    fast, slow = relu_chain(1), relu_chain(30)
    feeds = feeds_for(fast, batch=2)
    result = check_speed(fast, slow, feeds, rounds=5)
    assert isinstance(result, SpeedCheck)
    assert result.verdict == "slower" and result.slower
    assert result.ratio_low <= result.ratio <= result.ratio_high
    assert result.ratio > 1 + result.noise
    assert result.noise >= MIN_NOISE
    assert result.rounds == 5 and result.threads == 1
    assert result.after > result.before > 0
    assert result.describe().endswith("onnxruntime, 1 thread, 5 rounds: slower")
    # The other way round, the compiled file is faster.
    assert check_speed(slow, fast, feeds, rounds=5).verdict == "faster"


def test_feeds_for_uses_the_batch_for_a_symbolic_first_dimension():
    feeds = feeds_for(relu_chain(1), batch=3, seed=7)
    assert list(feeds) == ["X"]
    assert feeds["X"].shape == (3, 64, 32, 32) and feeds["X"].dtype == np.float32
    np.testing.assert_array_equal(feeds["X"], feeds_for(relu_chain(1), batch=3, seed=7)["X"])
    assert not np.array_equal(feeds["X"], feeds_for(relu_chain(1), batch=3, seed=8)["X"])
    fixed = feeds_for(relu_chain(1, batch=2), batch=5)
    assert fixed["X"].shape == (2, 64, 32, 32)


def test_feeds_for_refusals():
    with pytest.raises(UsageError, match="batch must be a positive integer"):
        feeds_for(relu_chain(1), batch=0)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "C"])
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g", [x],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GraphcError, match="input X has a symbolic dimension 1"):
        feeds_for(model)
