"""The training form of binary networks (graphc.compress.binary_train): its structure, its
forward pass against alpha * sign(W) computed here in numpy, the activations mode "all"
replaces, the straight-through gradient against numpy, a short training run that keeps the
latent weights fp32 while the forward uses binary ones, evaluate_weights, the record, errors."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import nn
from graphc.autodiff import gradient_graph
from graphc.compress import int8
from graphc.compress.binary_train import (
    binary_graph,
    binary_layers,
    binary_record,
    evaluate_weights,
    find_layers,
    from_record,
    kept_layers,
    parse_keep,
)
from graphc.compress.calibrate import Grid
from graphc.compress.int8 import needed_values
from graphc.compress.qat import insert_fake_quant
from graphc.dsl import GraphBuilder
from graphc.errors import UsageError
from graphc.interpret import run
from graphc.ir import Graph
from graphc.models import load
from graphc.passes.binarize import binarize
from graphc.pipeline import resolve, run_pipeline
from graphc.rewrite import PassReport
from graphc.train.data import Dataset
from graphc.train.loop import TrainConfig, train
from graphc.train.step import apply_state

F32 = np.float32


def numpy_binary(w: np.ndarray, axis: int) -> np.ndarray:
    """alpha * sign(w) with alpha = mean|w| over every axis but ``axis``, sign(0) = +1."""
    others = tuple(k for k in range(w.ndim) if k != axis)
    alpha = np.abs(w.astype(np.float64)).mean(axis=others, keepdims=True)
    return (np.where(w >= 0, 1.0, -1.0) * alpha).astype(F32)


def with_weights(g: Graph, weights: dict[str, np.ndarray]) -> Graph:
    return apply_state(g, weights)


def layer_graph(kind: str, seed: int = 3) -> Graph:
    """x (4, 6) -> a MatMul, a Gemm (transB 0 or 1) -> relu -> Gemm head, random weights with
    some entries exactly 0 (sign(0) = +1)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(kind, seed=seed)
    x = b.input("x", (4, 6))
    w = rng.normal(0, 0.5, (6, 5) if kind != "gemm_t" else (5, 6)).astype(F32)
    w[0, :2] = 0.0
    w1 = b.param("w1", w.shape, init=w)
    if kind == "matmul":
        h = b.op("MatMul", x, w1, name="mm")
    else:
        h = b.op("Gemm", x, w1, name="mm", transB=1 if kind == "gemm_t" else 0)
    h = nn.relu(h, name="act")
    w2 = b.param("w2", (3, 5), init=rng.normal(0, 0.5, (3, 5)).astype(F32))
    b.output(b.op("Gemm", h, w2, name="head", transB=1), "y")
    return b.build()


# ----- structure ----------------------------------------------------------------------------


def test_weights_mode_structure_on_cnn() -> None:
    g = load("cnn").build()
    before = [g.format_node(n) for n in g.topo()]
    h = binary_graph(g)
    assert [g.format_node(n) for n in g.topo()] == before  # the input graph is not changed
    assert binary_layers(h) == ["block2.conv", "block3.conv"]
    for layer in ("block2.conv", "block3.conv"):
        w = h.in_values(layer)[1]
        assert h.op(w.node) == "Mul"
        sign, alpha = h.in_values(w.node)
        assert h.op(sign.node) == "BinarySign"
        assert h.in_values(sign.node)[0].node == f"{layer}.weight"
        assert h.op(alpha.node) == "ReduceMean"
        assert h.const_value(h.in_values(alpha.node)[1]).tolist() == [1, 2, 3]
        magnitude = h.in_values(alpha.node)[0]
        assert h.op(magnitude.node) == "Abs"
        assert h.in_values(magnitude.node)[0].node == f"{layer}.weight"
    # The kept layers read their weights directly; the latent weights stay the parameters.
    assert h.in_values("block1.conv")[1].node == "block1.conv.weight"
    assert h.in_values("logits")[1].node == "fc.weight"
    assert h.params() == g.params()
    assert sorted(h.op(n) for n in h.op_nodes() if h.op(n) == "Relu") == ["Relu"] * 3


@pytest.mark.parametrize("kind, axis", [("matmul", 1), ("gemm", 1), ("gemm_t", 0)])
def test_forward_equals_numpy_alpha_sign(kind: str, axis: int) -> None:
    g = layer_graph(kind)
    h = binary_graph(g, keep_fp32=["last"])
    assert binary_layers(h) == ["mm"]
    w = g.const_value(g.in_values("mm")[1])
    expected_w = numpy_binary(w, axis)
    assert expected_w[0, 0] > 0  # w = 0 gives +alpha
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(F32)
    got = run(h, {"x": x})["y"]
    want = run(with_weights(g, {"w1": expected_w}), {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    folded = evaluate_weights(h)
    wb = folded.const_value(folded.in_values("mm")[1])
    assert np.array_equal(np.sign(wb), np.where(w >= 0, 1.0, -1.0))
    np.testing.assert_allclose(wb, expected_w, rtol=1e-6)
    assert np.array_equal(run(folded, {"x": x})["y"], got)


def test_forward_of_the_cnn_equals_numpy() -> None:
    g = load("cnn").build(batch=3)
    h = binary_graph(g, keep_fp32=["first"])
    assert binary_layers(h) == ["block2.conv", "block3.conv", "logits"]
    weights = {name: numpy_binary(g.const_value(g.in_values(layer)[1]), 0)
               for name, layer in (("block2.conv.weight", "block2.conv"),
                                   ("block3.conv.weight", "block3.conv"),
                                   ("fc.weight", "logits"))}
    x = np.random.default_rng(1).normal(size=(3, 1, 8, 8)).astype(F32)
    got = run(h, {"x": x})["logits"]
    want = run(with_weights(g, weights), {"x": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_mode_all_replaces_the_activations_around_binarized_layers() -> None:
    g = load("cnn").build()
    h = binary_graph(g, mode="all")
    assert not [n for n in h.op_nodes() if h.op(n) == "Relu"]
    signs = {n: h.in_values(n)[0].node for n in h.op_nodes() if h.op(n) == "BinarySign"
             and not n.endswith(".weight.sign")}
    # Each ReLU's place: a sign of the BatchNormalization's output, after the MaxPool that
    # follows it (the same values, since the sign is monotone).
    assert signs == {"block1.sign": "block1.bn", "block2.sign": "pool2",
                     "block3.sign": "pool3"}
    assert h.in_values("pool2")[0].node == "block2.bn"
    assert h.in_values("pool3")[0].node == "block3.bn"
    assert h.in_values("block1.conv")[0].node == "x"  # the image stays float
    assert h.in_values("block2.conv")[0].node == "block1.sign"
    assert h.in_values("block3.conv")[0].node == "block2.sign"
    assert h.in_values("flatten1")[0].node == "block3.sign"
    # Only block3 binarized: the ReLU between two fp32 layers stays.
    one = binary_graph(g, mode="all", keep_fp32=["first", "block2.conv", "last"])
    assert binary_layers(one) == ["block3.conv"]
    assert one.op("block1.relu") == "Relu"
    assert one.op(one.in_values("block3.conv")[0].node) == "BinarySign"
    assert one.op(one.in_values("flatten1")[0].node) == "BinarySign"
    x = np.random.default_rng(4).normal(size=(1, 1, 8, 8)).astype(F32)
    relu_then_pool = binary_graph(g, mode="weights")
    for node in ("block1.relu", "block2.relu", "block3.relu"):
        relu_then_pool.nx.nodes[node]["op"] = "BinarySign"
    np.testing.assert_array_equal(run(h, {"x": x})["logits"],
                                  run(relu_then_pool, {"x": x})["logits"])


def test_mode_all_values_are_signs_of_the_float_preactivations() -> None:
    g = load("mlp").build(batch=2)
    h = binary_graph(g, mode="all", keep_fp32=())
    assert binary_layers(h) == find_layers(g)
    x = np.random.default_rng(2).normal(size=g.type_of(g.in_values("fc1")[0]).shape)
    x = x.astype(F32)
    inputs = {layer: h.in_values(layer)[0] for layer in binary_layers(h)}
    assert inputs["fc1"].node == "x"  # the first layer's input (the data) stays float
    # The input of fc2 is the sign of fc1's output, computed here in numpy.
    w1 = numpy_binary(g.const_value(g.in_values("fc1")[1]), 0)
    b1 = g.const_value(g.in_values("fc1")[2])
    pre = x @ w1.T + b1
    probe = h.copy()
    probe.outputs = [inputs["fc2"]]
    got = run(probe, {"x": x})
    np.testing.assert_array_equal(next(iter(got.values())), np.where(pre >= 0, 1.0, -1.0))


def test_mode_all_puts_a_sign_before_a_layer_without_activation() -> None:
    b = GraphBuilder("res", seed=0)
    x = b.input("x", (2, 4))
    h = nn.linear(x, 4, name="fc1")
    h = nn.linear(h + x, 4, name="fc2")  # a residual sum, no activation
    b.output(nn.linear(nn.relu(h), 3, name="fc3"), "y")
    g = b.build()
    h2 = binary_graph(g, mode="all")
    assert binary_layers(h2) == ["fc2"]
    sign = h2.in_values("fc2")[0].node
    assert h2.op(sign) == "BinarySign" and h2.op(h2.in_values(sign)[0].node) == "Add"
    head = h2.outputs[0].node
    assert h2.op(h2.in_values(head)[0].node) == "BinarySign"  # fc2's ReLU


# ----- the straight-through estimator ------------------------------------------------------


def test_ste_gradient_against_numpy() -> None:
    rng = np.random.default_rng(5)
    w = rng.uniform(-1.6, 1.6, (4, 3)).astype(F32)  # some |w| > 1: no gradient through sign
    w[1, 1] = 1.0  # the window's bound is inside
    x = rng.normal(size=(2, 3)).astype(F32)
    r = rng.normal(size=(2, 4)).astype(F32)
    b = GraphBuilder("ste")
    xt = b.input("x", (2, 3))
    wt = b.param("w", (4, 3), init=w)
    y = b.op("Gemm", xt, wt, name="fc", transB=1)
    b.output(b.op("ReduceSum", y * b.const(r, name="r"), keepdims=0), "loss")
    h = binary_graph(b.build(), keep_fp32=())
    got = run(gradient_graph(h, wrt=["w"]), {"x": x})["dloss/dw"]
    # dL/dWb = r^T x; Wb = sign(W) * alpha with alpha_o = mean_i |W_oi|:
    # dL/dW_oi = dL/dWb_oi * alpha_o * (|W_oi| <= 1) + sign(W_oi) * sum_j dL/dWb_oj sign(W_oj) / n
    g_b = (r.T @ x).astype(np.float64)
    sign = np.where(w >= 0, 1.0, -1.0)
    alpha = np.abs(w.astype(np.float64)).mean(axis=1, keepdims=True)
    through_sign = g_b * alpha * (np.abs(w) <= 1)
    through_alpha = sign * (g_b * sign).sum(axis=1, keepdims=True) / w.shape[1]
    np.testing.assert_allclose(got, through_sign + through_alpha, rtol=1e-5, atol=1e-6)
    assert np.any(np.abs(w) > 1) and np.any(np.abs(w) <= 1)


# ----- training ----------------------------------------------------------------------------


def small_digits(n: int, seed: int) -> Dataset:
    from graphc.train.data import load_digits

    train_set, _ = load_digits()
    pick = np.random.default_rng(seed).choice(len(train_set), n, replace=False)
    return Dataset(train_set.x[pick], train_set.y[pick], train_set.classes, "digits-small")


def test_training_keeps_latent_weights_and_forwards_binary_ones() -> None:
    module = load("cnn")
    plain = module.build(seed=0, batch=32)

    def build(batch: int) -> Graph:
        return binary_graph(module.build(seed=0, batch=batch), mode="all")

    config = TrainConfig(epochs=2, batch=32, lr=0.05, seed=0, backend="onnxruntime",
                         threads=1)
    start = {k: v for k, v in apply_state(plain, {}).nx.nodes(data="value") if v is not None}
    result = train(build, small_digits(128, 0), small_digits(64, 1), config, progress=False)
    state = result.state
    for name in ("block2.conv.weight", "block3.conv.weight"):
        latent = state[name]
        assert not np.array_equal(latent, start[name])  # trained
        rows = np.abs(latent.reshape(latent.shape[0], -1))
        assert min(len(np.unique(r)) for r in rows) > 2  # latent, not binary
    # The trained model's forward pass uses alpha * sign(W) (numpy) and sign activations.
    trained = apply_state(build(4), state)
    x = small_digits(4, 2).x.reshape(4, 1, 8, 8).astype(F32)
    got = run(trained, {"x": x})["logits"]
    binary_weights = {n: numpy_binary(state[n], 0)
                      for n in ("block2.conv.weight", "block3.conv.weight")}
    reference = binary_graph(apply_state(module.build(seed=0, batch=4),
                                         {**state, **binary_weights}), mode="all")
    np.testing.assert_allclose(got, run(reference, {"x": x})["logits"], rtol=1e-5, atol=1e-5)
    # evaluate_weights: the same outputs from constant +-alpha weights.
    folded = evaluate_weights(trained)
    np.testing.assert_array_equal(run(folded, {"x": x})["logits"], got)
    for layer in ("block2.conv", "block3.conv"):
        w = folded.const_value(folded.in_values(layer)[1])
        assert all(len(np.unique(np.abs(row))) == 1 for row in w.reshape(w.shape[0], -1))


def test_inference_pipeline_gives_binarize_its_integer_forms() -> None:
    g = evaluate_weights(binary_graph(load("cnn").build(), mode="all"))
    folded, _ = run_pipeline(g, resolve(pipeline="inference"))
    report = PassReport("binarize")
    binarize(folded, prefer="integer", report=report)
    forms = {line.split()[0]: line.split()[1] for line in report.notes
             if line.split()[0] in ("block2.conv", "block3.conv")}
    assert forms == {"block2.conv": "integer:", "block3.conv": "integer:"}
    assert not [n for n in folded.op_nodes() if folded.op(n) == "BatchNormalization"]


# ----- records and errors ------------------------------------------------------------------


def test_record_rebuilds_the_same_graph() -> None:
    g = load("cnn").build()
    data = binary_record(g, "all", ["first"])
    assert data == {"mode": "all", "keep_fp32": ["block1.conv"],
                    "layers": ["block2.conv", "block3.conv", "logits"]}
    a = binary_graph(g, "all", ["first"])
    b = from_record(g, data)
    assert [a.format_node(n) for n in a.topo()] == [b.format_node(n) for n in b.topo()]
    with pytest.raises(UsageError, match="binary record does not fit"):
        from_record(load("mlp").build(), data)


def test_keep_fp32_parsing_and_names() -> None:
    g = load("cnn").build()
    assert parse_keep("first,last") == ("first", "last")
    assert parse_keep(" none ") == ()
    assert kept_layers(g, "first, block3.conv") == ["block1.conv", "block3.conv"]
    assert kept_layers(g, ()) == []
    with pytest.raises(UsageError, match="--keep-fp32"):
        parse_keep("none,first")
    with pytest.raises(UsageError) as err:
        kept_layers(g, ["block9.conv"])
    text = str(err.value)
    assert "unknown layer 'block9.conv'" in text
    for name in ("'first'", "'last'", "'block1.conv'", "'block2.conv'", "'logits'"):
        assert name in text


def test_errors() -> None:
    g = load("cnn").build()
    with pytest.raises(UsageError, match="unknown binary mode 'al'.*Did you mean 'all'"):
        binary_graph(g, mode="al")
    with pytest.raises(UsageError, match="no layer left to binarize"):
        binary_graph(g, keep_fp32=["first", "block2.conv", "block3.conv", "last"])
    folded = run_pipeline(g, ["fold-batchnorm"])[0]
    grids = {v: Grid(0.1, 0) for v in needed_values(folded, int8.find_layers(folded))}
    with pytest.raises(UsageError, match="a quantization-aware graph"):
        binary_graph(insert_fake_quant(folded, grids))
