"""graphc.train.transfer: finding the head, replacing it under the same names, head and body
params."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError, UsageError
from graphc.interpret import run
from graphc.ir import Graph, Value
from graphc.models import MODELS, load
from graphc.onnxio.export import to_bytes
from graphc.train.transfer import body_params, find_head, head_classes, head_params, replace_head

CLASSIFIERS = [m for m in MODELS if m not in ("backprop_example", "neuron", "mlp_tiny")]


def const(g: Graph, name: str) -> np.ndarray:
    value = g.const_value(Value(name))
    assert value is not None, name
    return value


def small_net(classes: int, seed: int = 0) -> Graph:
    b = GraphBuilder("small", seed=seed)
    x = b.input("x", (4, 6))
    h = nn.relu(nn.linear(x, 8, name="fc1"))
    b.output(nn.linear(h, classes, name="head"), "logits")
    return b.build()


def test_replace_head_on_cnn_keeps_names_and_the_body():
    g = load("cnn").build(batch=3)
    new = replace_head(g, 5, seed=0)
    assert new is not g
    assert const(new, "fc.weight").shape == (5, 256)
    np.testing.assert_array_equal(const(new, "fc.bias"), np.zeros(5, np.float32))
    assert const(new, "fc.bias").dtype == np.float32
    assert new.type_of(new.outputs[0]).shape == (3, 5)
    assert new.output_names() == g.output_names() == ["logits"]
    assert new.params() == g.params()
    # The original is untouched, and the body shares its arrays.
    assert const(g, "fc.weight").shape == (10, 256)
    assert g.type_of(g.outputs[0]).shape == (3, 10)
    for name in body_params(g):
        assert const(new, name) is const(g, name)
    new.verify()
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8), dtype=np.float32)
    sess = ort.InferenceSession(to_bytes(new), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})[0]
    want = run(new, {"x": x})["logits"]
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fresh_head_is_drawn_like_the_dsl_draws_a_layer_of_that_size():
    # Same seed and name: the new 3-class head equals what nn.linear(h, 3) would have made.
    replaced = replace_head(small_net(10, seed=3), 3, seed=3)
    built = small_net(3, seed=3)
    np.testing.assert_array_equal(const(replaced, "head.weight"), const(built, "head.weight"))
    np.testing.assert_array_equal(const(replaced, "head.bias"), const(built, "head.bias"))
    other = replace_head(small_net(10, seed=3), 3, seed=4)
    assert not np.array_equal(const(other, "head.weight"), const(built, "head.weight"))
    # He-normal: std sqrt(2 / fan_in).
    big = replace_head(load("cnn").build(), 2000, seed=0)
    assert np.std(const(big, "fc.weight")) == pytest.approx(np.sqrt(2 / 256), rel=0.02)


def test_same_class_count_gives_a_fresh_head():
    g = small_net(4)
    new = replace_head(g, 4, seed=7)
    assert const(new, "head.weight").shape == const(g, "head.weight").shape
    assert not np.array_equal(const(new, "head.weight"), const(g, "head.weight"))


def matmul_net(*, bias: bool, identity: bool) -> Graph:
    b = GraphBuilder("mm", seed=0)
    x = b.input("x", (2, 6))
    w = b.param("proj.w", (6, 4))
    y = x @ w
    if bias:
        y = y + b.param("proj.b", (4,), init="normal")
    if identity:
        y = b.op("Identity", y, name="out")
    b.output(y, "y")
    return b.build()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("identity", [True, False])
def test_matmul_head_with_or_without_bias_and_identity(bias, identity):
    g = matmul_net(bias=bias, identity=identity)
    assert head_params(g) == ["proj.w", "proj.b"][:1 + bias]
    new = replace_head(g, 3, seed=0)
    w = const(new, "proj.w")
    assert w.shape == (6, 3)
    # The MatMul layout (features, classes) holds the DSL's draw of a (classes, features)
    # weight of that name, transposed.
    ref = GraphBuilder("ref", seed=0)
    drawn = const(ref.graph, ref.param("proj.w", (3, 6)).value.node)
    np.testing.assert_array_equal(w, drawn.T)
    x = np.arange(12, dtype=np.float32).reshape(2, 6) / 10
    want = x @ w
    if bias:
        np.testing.assert_array_equal(const(new, "proj.b"), np.zeros(3, np.float32))
    got = run(new, {"x": x})
    np.testing.assert_allclose(list(got.values())[0], want, rtol=1e-6)
    assert head_classes(new) == 3


def test_gemm_without_transposed_weight():
    g = Graph("g")
    x = g.add_input("x", (2, 5))
    w = g.add_const("w", np.ones((5, 4), np.float32), trainable=True)
    bias = g.add_const("b", np.ones((4,), np.float32), trainable=True)
    g.outputs.append(g.add_node("Gemm", [x, w, bias], name="fc"))
    new = replace_head(g, 7)
    assert const(new, "w").shape == (5, 7) and head_classes(new) == 7
    assert new.type_of(new.outputs[0]).shape == (2, 7)
    x_value = np.ones((2, 5), np.float32)
    np.testing.assert_allclose(run(new, {"x": x_value})["fc"], x_value @ const(new, "w"),
                               rtol=1e-6)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_head_and_body_params_of_the_zoo(name):
    g = load(name).build()
    head = head_params(g)
    gemm = find_head(g).node
    assert g.op(gemm) == "Gemm"
    assert head == [v.node for v in g.in_values(gemm)[1:]]
    assert body_params(g) == [p for p in g.params() if p not in head]
    assert head_classes(g) == g.type_of(g.outputs[0]).shape[-1]


def test_head_classes_of_a_checkpoint_state():
    g = load("mlp").build()
    assert head_classes(g) == 10
    assert head_classes(g, {"fc3.weight": np.zeros((4, 64))}) == 4
    assert head_classes(g, {"fc1.weight": np.zeros((4, 64))}) == 10
    with pytest.raises(GraphcError, match="wrong rank"):
        head_classes(g, {"fc3.weight": np.zeros(4)})


def test_refuses_an_output_that_is_not_a_linear_layer():
    g = load("mlp_tiny").build()
    with pytest.raises(GraphcError) as info:
        replace_head(g, 3)
    text = str(info.value)
    assert text.startswith("%y = Sigmoid(%fc2)")
    assert "the first output comes from a Sigmoid" in text


def test_refuses_a_shared_weight():
    b = GraphBuilder("tied", seed=0)
    x = b.input("x", (2, 4))
    w = b.param("w", (4, 4))
    h = x @ w
    b.output(h @ w, "y")
    with pytest.raises(GraphcError, match=r"its weight %w is shared; .*also used by %matmul"):
        head_params(b.build())


def test_refuses_a_constant_that_is_not_a_parameter():
    g = Graph("g")
    x = g.add_input("x", (2, 5))
    w = g.add_const("w", np.ones((4, 5), np.float32))
    g.outputs.append(g.add_node("Gemm", [x, w], {"transB": 1}, name="fc"))
    with pytest.raises(GraphcError, match="its weight is not a trainable constant"):
        replace_head(g, 2)


@pytest.mark.parametrize("classes", [0, -1, True, 2.5])
def test_bad_class_counts(classes):
    with pytest.raises(UsageError, match="positive integer"):
        replace_head(small_net(3), classes)


def test_a_layer_after_the_head_that_no_longer_fits():
    b = GraphBuilder("two_outputs", seed=0)
    x = b.input("x", (2, 6))
    h = nn.linear(x, 4, name="fc")
    b.output(h, "logits")
    shape = b.const(np.array([2, 2, 2], np.int64), dtype=np.int64)
    b.output(b.op("Reshape", h, shape, name="grid"), "grid")
    g = b.build()
    assert head_params(g) == ["fc.weight", "fc.bias"]
    with pytest.raises(GraphcError) as info:
        replace_head(g, 3)
    assert str(info.value).startswith("%grid = Reshape(%logits")
    assert "cannot give the head 3 classes" in str(info.value)


def test_an_output_from_another_layer_is_refused():
    b = GraphBuilder("reshaped", seed=0)
    x = b.input("x", (2, 6))
    shape = b.const(np.array([2, 2, 2], np.int64), dtype=np.int64)
    b.output(b.op("Reshape", nn.linear(x, 4, name="fc"), shape, name="grid"), "y")
    with pytest.raises(GraphcError, match="comes from a Reshape"):
        replace_head(b.build(), 3)


def test_replace_head_keeps_a_broadcast_bias_shape():
    g = Graph("g")
    x = g.add_input("x", (2, 5))
    w = g.add_const("w", np.ones((4, 5), np.float32), trainable=True)
    bias = g.add_const("b", np.ones((1,), np.float32), trainable=True)
    g.outputs.append(g.add_node("Gemm", [x, w, bias], {"transB": 1}, name="fc"))
    new = replace_head(g, 3)
    np.testing.assert_array_equal(const(new, "b"), np.zeros(1, np.float32))
