"""The compiled training step (graphc.train.step) and its runners (graphc.train.runner) against
independent references: train-mode BatchNorm and its running averages against the course formulas
in float64 numpy, the whole step's gradient against central finite differences of its own loss,
inverted dropout against its expectation, onnxruntime against the interpreter over several steps,
frozen parameters, penalties (against numpy norms), weight masks (masked weights read as 0,
their zeros kept exactly by SGD and Adam) and feature-space augmentation."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError, UsageError
from graphc.interpret import run
from graphc.ir import CONST, Graph, Value
from graphc.models import load
from graphc.onnxio.export import to_bytes
from graphc.pipeline import run_pipeline
from graphc.train.optim import SGD, Adam
from graphc.train.penalties import (
    DEFAULT_PENALTY_WEIGHTS,
    Penalty,
    layer_weights,
    parse_penalty,
    penalty_spec,
)
from graphc.train.runner import InterpreterRunner, OrtRunner, Runner
from graphc.train.step import FeatureAugment, StepSpec, apply_state, compile_step

RUNNERS = [pytest.param(InterpreterRunner, id="interpreter"),
           pytest.param(OrtRunner, id="onnxruntime")]


# ----- numpy references (float64) -----------------------------------------------------------


def bn_train_ref(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Course batch normalization with the batch's statistics over every axis but 1; return
    the output, mu_B and the population variance sigma2_B."""
    axes = (0, *range(2, x.ndim))
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes)
    var = ((x - mu.reshape(per_channel)) ** 2).mean(axis=axes)
    y = ((x - mu.reshape(per_channel)) / np.sqrt(var.reshape(per_channel) + eps)
         * gamma.reshape(per_channel) + beta.reshape(per_channel))
    return y, mu, var


def bn_inference_ref(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
                     var: np.ndarray, eps: float) -> np.ndarray:
    c = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(c)) / np.sqrt(var.reshape(c) + eps) * gamma.reshape(c) \
        + beta.reshape(c)


def conv2d_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Valid cross-correlation, stride 1 (what ONNX Conv computes)."""
    kh, kw = w.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))  # (N, C, H', W', kh, kw)
    return np.einsum("nchwij,ocij->nohw", windows, w) + b.reshape(1, -1, 1, 1)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def cross_entropy_ref(z: np.ndarray, target: np.ndarray) -> float:
    return float(-np.mean(np.sum(target * log_softmax(z), axis=1)))


def one_hot_rows(rng: np.random.Generator, n: int, classes: int, dtype: object) -> np.ndarray:
    return np.eye(classes, dtype=dtype)[rng.integers(0, classes, n)]


# ----- small models -------------------------------------------------------------------------


def bn_only(shape: tuple[int, ...], momentum: float | None, eps: float) -> Graph:
    """x -> BatchNormalization -> output: the prediction is the BN's output itself."""
    b = GraphBuilder("bn_only", dtype=np.float64)
    x = b.input("x", shape)
    kwargs = {} if momentum is None else {"momentum": momentum}
    b.output(nn.batch_norm(x, eps=eps, name="bn", **kwargs), "y")  # the BN node becomes "y"
    return b.build()


EPS = float(np.float32(1e-3))  # tiny_cnn's BN epsilon as its float32 ONNX attribute


def tiny_cnn(batch: int = 6, dtype: object = np.float64, p: float = 0.3) -> Graph:
    """x (N, 2, 4, 4) -> conv 2x2 (3) -> BN (a = 0.8) -> relu -> flatten -> dropout -> fc (4)."""
    b = GraphBuilder("tiny_cnn", seed=3, dtype=dtype)
    x = b.input("x", (batch, 2, 4, 4))
    h = nn.conv2d(x, 3, 2, name="conv")
    h = nn.relu(nn.batch_norm(h, momentum=0.8, eps=1e-3, name="bn"))
    h = nn.dropout(nn.flatten(h), p, name="drop")
    b.output(nn.linear(h, 4, name="fc"), "logits")
    return b.build()


def tiny_cnn_ref(x: np.ndarray, state: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
    """tiny_cnn's train-mode logits in numpy."""
    h = conv2d_ref(x, state["conv.weight"], state["conv.bias"])
    h, _, _ = bn_train_ref(h, state["bn.weight"], state["bn.bias"], EPS)
    h = np.maximum(h, 0.0).reshape(len(x), -1) * mask
    return h @ state["fc.weight"].T + state["fc.bias"]


def two_layer(batch: int = 8, features: int = 6, hidden: int = 10, classes: int = 3,
              dtype: object = np.float64) -> Graph:
    """x -> fc1 -> relu -> fc2 logits (feature augmentation goes after fc1)."""
    b = GraphBuilder("two_layer", seed=5, dtype=dtype)
    x = b.input("x", (batch, features))
    h = nn.relu(nn.linear(x, hidden, name="fc1"), name="act")
    b.output(nn.linear(h, classes, name="fc2"), "logits")
    return b.build()


def inference_batchnorms(g: Graph) -> list[str]:
    """The BatchNormalization nodes of ``g`` in inference form (not training_mode)."""
    return [n for n in g.op_nodes()
            if g.op(n) == "BatchNormalization" and not g.attrs(n).get("training_mode", 0)]


def const(g: Graph, name: str) -> np.ndarray:
    value = g.const_value(Value(name))
    assert value is not None, f"{name} is not a constant of {g.name}"
    return value


def step_feeds(spec: StepSpec, batch: dict[str, np.ndarray], state: dict[str, np.ndarray],
               lr: float = 1.0, step: int = 1) -> dict[str, np.ndarray]:
    return {**batch, **state, "lr": np.float32(lr), "step": np.float32(step)}


# ----- train-mode BatchNorm -----------------------------------------------------------------


@pytest.mark.parametrize("runner_cls", RUNNERS)
@pytest.mark.parametrize("momentum", [pytest.param(0.7, id="a=0.7"),
                                      pytest.param(None, id="default-a")])
@pytest.mark.parametrize("shape", [pytest.param((6, 3, 4, 5), id="conv"),
                                   pytest.param((8, 5), id="linear")])
def test_batchnorm_train_mode_and_running_averages_follow_the_course(
        shape: tuple[int, ...], momentum: float | None, runner_cls: type[Runner]) -> None:
    forward = bn_only(shape, momentum, 1e-3)
    # ONNX float attributes are float32, so the graph's a and eps are the float32 roundings
    # (0.7 -> 0.699999988): the reference uses exactly those.
    a = float(np.float32(0.9 if momentum is None else momentum))  # nn.batch_norm's default
    eps = float(np.float32(1e-3))
    assert forward.attrs("y")["momentum"] == a and forward.attrs("y")["epsilon"] == eps
    spec = compile_step(forward, SGD(lr=0.1), loss="mse")
    assert inference_batchnorms(spec.graph) == []
    assert {"bn.running_mean", "bn.running_var"} <= set(spec.state)
    assert spec.params == ["bn.weight", "bn.bias"]
    runner = runner_cls(spec)
    rng = np.random.default_rng(1)
    channels = shape[1]
    per_channel = (1, -1) + (1,) * (len(shape) - 2)
    other = 0.7 if momentum is None else 0.9
    mean_avg, var_avg = np.zeros(channels), np.ones(channels)  # nn.batch_norm's start values
    mean_other = np.zeros(channels)
    first = runner.state()
    for _ in range(3):
        # Channels with different means and spreads, so every statistic matters.
        centers = rng.uniform(-3, 3, channels).reshape(per_channel)
        spreads = rng.uniform(0.5, 4, channels).reshape(per_channel)
        x = centers + spreads * rng.standard_normal(shape)
        target = rng.standard_normal(shape)
        before = runner.state()
        out = runner.run({"x": x, "target": target}, lr=0.1)
        want, mu_b, var_b = bn_train_ref(x, before["bn.weight"], before["bn.bias"], eps)
        np.testing.assert_allclose(out.prediction, want, rtol=1e-12, atol=1e-12)
        assert out.loss == pytest.approx(np.mean((want - target) ** 2), rel=1e-12)
        mean_avg = a * mean_avg + (1 - a) * mu_b
        var_avg = a * var_avg + (1 - a) * var_b
        mean_other = other * mean_other + (1 - other) * mu_b
    state = runner.state()
    np.testing.assert_allclose(state["bn.running_mean"], mean_avg, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(state["bn.running_var"], var_avg, rtol=1e-12, atol=1e-14)
    # The check has teeth: gamma and beta moved, and the other momentum gives other averages.
    assert not np.allclose(state["bn.weight"], first["bn.weight"])
    assert not np.allclose(state["bn.bias"], first["bn.bias"])
    assert np.abs(state["bn.running_mean"] - mean_other).max() > 1e-3
    # The trained model in inference form normalizes with the running averages.
    trained = apply_state(forward, state)
    x = rng.standard_normal(shape)
    got = run(trained, {"x": x})["y"]
    want = bn_inference_ref(x, state["bn.weight"], state["bn.bias"], mean_avg, var_avg, eps)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_batchnorm_after_a_conv_averages_the_conv_outputs_of_each_step() -> None:
    """tiny_cnn (a = 0.8): the statistics are those of the conv's output with the weights of
    that step, which change from step to step. (Interpreter only: onnxruntime's CPU Conv has
    no float64 kernel.)"""
    a = float(np.float32(0.8))
    spec = compile_step(tiny_cnn(), SGD(lr=0.5, momentum=0.5))
    runner = InterpreterRunner(spec)
    rng = np.random.default_rng(17)
    mean_avg, var_avg = np.zeros(3), np.ones(3)
    for _ in range(3):
        before = runner.state()
        x = 1 + 2 * rng.standard_normal((6, 2, 4, 4))
        batch = {"x": x, "target": one_hot_rows(rng, 6, 4, np.float64), **spec.dropout_masks(rng)}
        out = runner.run(batch, lr=0.5)
        np.testing.assert_allclose(out.prediction, tiny_cnn_ref(x, before, batch["drop.mask"]),
                                   rtol=1e-10, atol=1e-10)
        conv = conv2d_ref(x, before["conv.weight"], before["conv.bias"])
        mu_b, var_b = conv.mean(axis=(0, 2, 3)), conv.var(axis=(0, 2, 3))
        mean_avg = a * mean_avg + (1 - a) * mu_b
        var_avg = a * var_avg + (1 - a) * var_b
    state = runner.state()
    assert not np.allclose(state["conv.weight"], spec.initial["conv.weight"])
    np.testing.assert_allclose(state["bn.running_mean"], mean_avg, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(state["bn.running_var"], var_avg, rtol=1e-12, atol=1e-14)


# ----- the whole step's gradient --------------------------------------------------------------


def test_step_gradient_equals_finite_differences_with_batchnorm_and_dropout() -> None:
    """SGD with lr 1 and no momentum: new = param - grad, so grad = param - new. Central finite
    differences of the step's loss output (masks fixed) in float64."""
    forward = tiny_cnn()
    spec = compile_step(forward, SGD(lr=1.0))
    assert spec.masks == ["drop.mask"]
    assert set(spec.params) == {"conv.weight", "conv.bias", "bn.weight", "bn.bias",
                                "fc.weight", "fc.bias"}
    rng = np.random.default_rng(7)
    # Move gamma and beta away from 1 and 0 so that their gradients are generic.
    state = dict(spec.initial)
    state["bn.weight"] = rng.uniform(0.5, 1.5, 3)
    state["bn.bias"] = rng.uniform(-0.5, 0.5, 3)
    x = rng.standard_normal((6, 2, 4, 4))
    target = one_hot_rows(rng, 6, 4, np.float64)
    masks = spec.dropout_masks(rng)
    assert 0 < np.count_nonzero(masks["drop.mask"]) < masks["drop.mask"].size
    batch = {"x": x, "target": target, **masks}
    out = run(spec.graph, step_feeds(spec, batch, state))

    # The loss and the prediction against the model written out in numpy.
    logits = tiny_cnn_ref(x, state, masks["drop.mask"])
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-12, atol=1e-12)
    assert float(out["loss"]) == pytest.approx(cross_entropy_ref(logits, target), rel=1e-12)

    h = 1e-6
    for name in spec.params:
        grad = state[name] - out[f"{name}.next"]
        fd = np.zeros_like(grad)
        for index in np.ndindex(grad.shape):
            losses = []
            for sign in (1, -1):
                moved = dict(state)
                moved[name] = state[name].copy()
                moved[name][index] += sign * h
                losses.append(float(run(spec.graph, step_feeds(spec, batch, moved))["loss"]))
            fd[index] = (losses[0] - losses[1]) / (2 * h)
        # float64: truncation ~h^2 and rounding ~1e-16/h, both far below 1e-7.
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8, err_msg=name)
    # A conv bias in front of a train-mode BN has no effect on the loss: its gradient is 0.
    np.testing.assert_allclose(state["conv.bias"] - out["conv.bias.next"], 0.0, atol=1e-12)


def test_step_gradient_through_dropout_is_zero_where_the_mask_is_zero() -> None:
    """With every unit of fc's input dropped, the logits are fc's bias and every parameter
    before the dropout (and fc.weight) gets a gradient of exactly zero."""
    spec = compile_step(tiny_cnn(), SGD(lr=1.0))
    rng = np.random.default_rng(2)
    state = dict(spec.initial)
    x = rng.standard_normal((6, 2, 4, 4))
    target = one_hot_rows(rng, 6, 4, np.float64)
    zeros = {"drop.mask": np.zeros((6, 27))}
    out = run(spec.graph, step_feeds(spec, {"x": x, "target": target, **zeros}, state))
    for name in ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight"):
        np.testing.assert_array_equal(out[f"{name}.next"], state[name], err_msg=name)
    assert not np.array_equal(out["fc.bias.next"], state["fc.bias"])
    np.testing.assert_allclose(out["logits"], np.broadcast_to(state["fc.bias"], (6, 4)))


# ----- dropout ---------------------------------------------------------------------------------


def dropout_mlp(batch: int, p: float, features: int = 16, hidden: int = 32,
                dtype: object = np.float32) -> Graph:
    """x -> fc1 -> relu -> dropout -> fc2 (5): the output is linear in the mask."""
    b = GraphBuilder("dropout_mlp", seed=11, dtype=dtype)
    x = b.input("x", (batch, features))
    h = nn.dropout(nn.relu(nn.linear(x, hidden, name="fc1")), p, name="drop")
    b.output(nn.linear(h, 5, name="fc2"), "out")
    return b.build()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_masks_are_zero_or_inverse_keep_with_the_keep_fraction(dtype: object) -> None:
    b = GraphBuilder("masks", dtype=dtype)
    x = b.input("x", (256, 64))
    h = nn.dropout(x, 0.3, name="d1")
    h = nn.dropout(nn.linear(h, 32, name="fc"), 0.5, name="d2")
    b.output(nn.linear(h, 3, name="out"), "logits")
    spec = compile_step(b.build(), SGD(lr=0.1))
    assert spec.masks == ["d1.mask", "d2.mask"]
    assert spec.mask_ratios == pytest.approx({"d1.mask": 0.3, "d2.mask": 0.5})
    masks = spec.dropout_masks(np.random.default_rng(0))
    for name, p, shape in (("d1.mask", 0.3, (256, 64)), ("d2.mask", 0.5, (256, 32))):
        mask = masks[name]
        assert mask.shape == shape and mask.dtype == np.dtype(dtype)
        scale = np.dtype(dtype).type(1.0 / (1.0 - spec.mask_ratios[name]))
        assert set(np.unique(mask).tolist()) == {0.0, float(scale)}
        # The keep fraction of n Bernoulli(1 - p) draws has std sqrt(p(1-p)/n): 5 std is
        # 0.018 for d1 and 0.028 for d2.
        n = mask.size
        assert abs(np.mean(mask != 0) - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    again = spec.dropout_masks(np.random.default_rng(0))
    other = spec.dropout_masks(np.random.default_rng(1))
    np.testing.assert_array_equal(again["d1.mask"], masks["d1.mask"])
    assert not np.array_equal(other["d1.mask"], masks["d1.mask"])


def test_inverted_dropout_keeps_the_expectation() -> None:
    """E[mask * x] = x: over M masks the mean of mask*x has std |x| sqrt(p / ((1-p) M))
    per element (var(mask) = E[mask^2] - 1 = 1/(1-p) - 1). With M = 4000 the means are close
    to normal; 5 std bounds all 16*32 elements (P(some |z| > 5) < 512 * 6e-7 = 3e-4)."""
    p, m = 0.3, 4000
    spec = compile_step(dropout_mlp(16, p), SGD(lr=0.1), loss="mse")
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 2.0, (16, 32)) * rng.choice([-1.0, 1.0], (16, 32))
    total = np.zeros_like(x)
    for _ in range(m):
        total += spec.dropout_masks(rng)["drop.mask"] * x
    mean = total / m
    sigma = np.abs(x) * np.sqrt(p / ((1 - p) * m))
    z = np.abs(mean - x) / sigma
    assert z.max() < 5, z.max()
    # And not trivially: single masks are far from x.
    single = spec.dropout_masks(rng)["drop.mask"] * x
    assert np.abs(single - x).max() > 0.5


def test_inference_graph_is_the_mean_of_train_mode_outputs() -> None:
    """The output is linear in the mask: y_j = sum_f m_f h_f W_jf + b_j, so over M masks the
    mean of y_j has std sqrt(p/(1-p) * sum_f (h_f W_jf)^2 / M). The step runs M copies of the
    batch at once (one mask row per copy) with lr 0, on onnxruntime."""
    p, n, m = 0.4, 4, 4096
    forward = dropout_mlp(n, p)
    train_graph = dropout_mlp(n * m, p)  # same seed: the same weights
    np.testing.assert_array_equal(const(train_graph, "fc2.weight"), const(forward, "fc2.weight"))
    spec = compile_step(train_graph, SGD(lr=0.0), loss="mse")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    batch = {"x": np.tile(x, (m, 1)), "target": np.zeros((n * m, 5), np.float32),
             **spec.dropout_masks(rng)}
    out = OrtRunner(spec).run(batch, lr=0.0)
    mean = out.prediction.astype(np.float64).reshape(m, n, 5).mean(axis=0)

    w1, b1 = const(forward, "fc1.weight").astype(np.float64), const(forward, "fc1.bias")
    w2, b2 = const(forward, "fc2.weight").astype(np.float64), const(forward, "fc2.bias")
    hidden = np.maximum(x @ w1.T + b1, 0.0)
    sigma = np.sqrt(p / (1 - p) * ((hidden[:, None, :] * w2[None]) ** 2).sum(-1) / m)
    inference = {
        "forward on the interpreter": run(forward, {"x": x})["out"],
        "remove-dropout pipeline": run(run_pipeline(forward, ["remove-dropout"])[0],
                                       {"x": x})["out"],
    }
    np.testing.assert_allclose(inference["forward on the interpreter"], hidden @ w2.T + b2,
                               rtol=1e-5, atol=1e-5)
    for what, y in inference.items():
        z = np.abs(mean - y) / sigma
        # 20 outputs, 5 std: P(some |z| > 5) < 20 * 6e-7.
        assert z.max() < 5, (what, z.max())
    # A single train-mode output is far from the inference output (the bound is not vacuous).
    single = out.prediction[:n]
    assert np.abs(single - inference["forward on the interpreter"]).max() > 10 * sigma.max()


# ----- onnxruntime against the interpreter -----------------------------------------------------


@pytest.mark.parametrize("optimizer", [
    pytest.param(SGD(lr=0.05, momentum=0.9, weight_decay=5e-4), id="sgd-momentum"),
    pytest.param(Adam(lr=1e-3, weight_decay=1e-4), id="adam"),
])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_onnxruntime_step_equals_interpreter_step(model: str, optimizer: SGD | Adam) -> None:
    """Three steps with the same batches and masks. Both run float32; the only differences are
    the orders of float32 sums (onnxruntime's blocked Gemm/Conv against numpy), a few ulps per
    reduction that grow slowly over steps: measured at most 2.5e-6 of each array's largest
    magnitude. The bound 2e-5 of that magnitude leaves 8x room and still catches any formula
    error (wrong momentum, bias correction, BN statistics, masks) by orders of magnitude."""
    module = load(model)
    spec = compile_step(module.build(batch=8), optimizer)
    ort, ref = OrtRunner(spec), InterpreterRunner(spec)
    rng = np.random.default_rng(5)
    x_shape = module.example_inputs(batch=8)["x"].shape
    for step in range(1, 4):
        x = (4 * rng.standard_normal(x_shape)).astype(np.float32)
        batch = {"x": x, "target": one_hot_rows(rng, 8, 10, np.float32),
                 **spec.dropout_masks(rng)}
        a, b = ort.run(batch, lr=optimizer.lr), ref.run(batch, lr=optimizer.lr)
        assert a.loss == pytest.approx(b.loss, rel=2e-5)
        np.testing.assert_allclose(a.prediction, b.prediction, rtol=0,
                                   atol=2e-5 * np.abs(b.prediction).max())
        sa, sb = ort.state(), ref.state()
        assert sorted(sa) == sorted(sb) == sorted(spec.state)
        for name in spec.state:
            assert sa[name].dtype == sb[name].dtype == np.float32
            scale = float(np.abs(sb[name]).max())
            np.testing.assert_allclose(sa[name], sb[name], rtol=0, atol=2e-5 * scale,
                                       err_msg=f"{name} after step {step}")
    # The state really moved (the comparison is not of untouched initial values).
    state = ref.state()
    for name in spec.params:
        assert not np.array_equal(state[name], spec.initial[name]), name
    slots = [n for n in spec.state if n.endswith((".velocity", ".m", ".v", ".running_mean"))]
    assert slots and all(np.abs(state[n]).max() > 0 for n in slots)


def test_runner_starts_from_a_given_state_and_counts_steps() -> None:
    """Adam's bias correction uses the runner's step count: a runner started from the state
    after step 1 with steps = 1 continues exactly like the uninterrupted runner."""
    spec = compile_step(two_layer(dtype=np.float32), Adam(lr=1e-2))
    rng = np.random.default_rng(6)
    batches = [{"x": rng.standard_normal((8, 6)).astype(np.float32),
                "target": one_hot_rows(rng, 8, 3, np.float32)} for _ in range(2)]
    whole = InterpreterRunner(spec)
    whole.run(batches[0], lr=1e-2)
    resumed = InterpreterRunner(spec, whole.state())
    resumed.steps = 1
    wrong = InterpreterRunner(spec, whole.state())  # would redo the step-1 bias correction
    whole.run(batches[1], lr=1e-2)
    resumed.run(batches[1], lr=1e-2)
    wrong.run(batches[1], lr=1e-2)
    for name in spec.state:
        np.testing.assert_array_equal(resumed.state()[name], whole.state()[name])
    assert not np.allclose(wrong.state()["fc1.weight"], whole.state()["fc1.weight"])


# ----- frozen parameters ---------------------------------------------------------------------


def test_frozen_parameters_are_constants_and_stay_bit_identical() -> None:
    forward = load("cnn").build(batch=8)
    frozen = ["block1.conv.weight", "block1.bn.weight", "block1.bn.bias", "fc.bias"]
    spec = compile_step(forward, SGD(lr=0.1, momentum=0.9), frozen=frozen)
    g = spec.graph
    assert spec.frozen == frozen
    for name in frozen:
        assert name not in spec.params and name not in spec.state
        assert g.op(name) == CONST and name not in g.inputs
        assert g.const_value(Value(name)).tobytes() == const(forward, name).tobytes()
        assert f"{name}.next" not in g.output_names()
    # block1's BN (scale and bias frozen) keeps its inference form with constant statistics;
    # block2's and block3's are trained with batch statistics.
    (kept,) = inference_batchnorms(g)
    _, _, _, mean, var = g.in_values(kept)
    assert (mean.node, var.node) == ("block1.bn.running_mean", "block1.bn.running_var")
    assert g.op(mean.node) == CONST and g.op(var.node) == CONST
    assert "block1.bn.running_mean" not in spec.state
    assert {"block2.bn.running_mean", "block3.bn.running_var"} <= set(spec.state)
    runner = OrtRunner(spec)
    rng = np.random.default_rng(8)
    for _ in range(2):
        batch = {"x": rng.standard_normal((8, 1, 8, 8)).astype(np.float32),
                 "target": one_hot_rows(rng, 8, 10, np.float32), **spec.dropout_masks(rng)}
        runner.run(batch, lr=0.1)
    state = runner.state()
    assert not np.array_equal(state["block2.conv.weight"], const(forward, "block2.conv.weight"))
    trained = apply_state(forward, state)
    for name in frozen + ["block1.bn.running_mean", "block1.bn.running_var"]:
        assert const(trained, name).tobytes() == const(forward, name).tobytes(), name


def test_batchnorm_with_frozen_scale_and_bias_normalizes_with_running_statistics() -> None:
    b = GraphBuilder("frozen_bn", dtype=np.float64)
    x = b.input("x", (8, 3, 2, 2))
    h = nn.flatten(nn.batch_norm(x, momentum=0.7, name="bn"))
    b.output(nn.linear(h, 2, name="fc"), "y")
    forward = b.build()
    rng = np.random.default_rng(9)
    stats = {"bn.running_mean": rng.standard_normal(3), "bn.running_var": rng.uniform(1, 2, 3),
             "bn.weight": rng.uniform(0.5, 2, 3), "bn.bias": rng.standard_normal(3)}
    forward = apply_state(forward, stats)
    spec = compile_step(forward, SGD(lr=0.1), loss="mse", frozen=["bn.weight", "bn.bias"])
    assert spec.params == ["fc.weight", "fc.bias"]
    assert "bn.running_mean" not in spec.state
    runner = InterpreterRunner(spec)
    for _ in range(2):
        xb = 3 + 2 * rng.standard_normal((8, 3, 2, 2))
        before = runner.state()
        out = runner.run({"x": xb, "target": rng.standard_normal((8, 2))}, lr=0.1)
        normed = bn_inference_ref(xb, stats["bn.weight"], stats["bn.bias"],
                                  stats["bn.running_mean"], stats["bn.running_var"], 1e-5)
        want = normed.reshape(8, -1) @ before["fc.weight"].T + before["fc.bias"]
        np.testing.assert_allclose(out.prediction, want, rtol=1e-12, atol=1e-12)
    # Only the scale frozen: the bias trains, so the BN is in train mode.
    half = compile_step(forward, SGD(lr=0.1), loss="mse", frozen=["bn.weight"])
    assert inference_batchnorms(half.graph) == [] and "bn.running_mean" in half.state


# ----- penalties -----------------------------------------------------------------------------


def one_step(spec: StepSpec, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return run(spec.graph, step_feeds(spec, batch, dict(spec.initial)))


@pytest.mark.parametrize("kind", ["l2", "l1", "group_l2"])
def test_penalty_changes_the_gradient_by_its_derivative(kind: str) -> None:
    """SGD lr 1: grad = param - new, so new_without - new_with = d(w * penalty)/d(param):
    2 w p for l2, w sign(p) for l1, w p / ||row|| for the group lasso (rows = output
    channels); parameters without the penalty get exactly the same update."""
    forward = tiny_cnn()
    w = 0.03
    chosen = ("conv.weight", "fc.weight")
    plain = compile_step(forward, SGD(lr=1.0))
    penalized = compile_step(forward, SGD(lr=1.0), penalties=[Penalty(kind, w, chosen)])
    rng = np.random.default_rng(10)
    batch = {"x": rng.standard_normal((6, 2, 4, 4)), "target": one_hot_rows(rng, 6, 4, float),
             **plain.dropout_masks(rng)}
    a, b = one_step(plain, batch), one_step(penalized, batch)
    for name in plain.params:
        diff = a[f"{name}.next"] - b[f"{name}.next"]
        p = plain.initial[name]
        if name not in chosen:
            np.testing.assert_array_equal(diff, 0.0, err_msg=name)
            continue
        rows = p.reshape(len(p), -1)
        want = {"l2": 2 * w * p, "l1": w * np.sign(p),
                "group_l2": w * (rows / np.sqrt((rows ** 2).sum(1, keepdims=True) + 1e-12)
                                 ).reshape(p.shape)}[kind]
        # new = p - grad: the subtraction rounds to ~1e-16 of |p|.
        np.testing.assert_allclose(diff, want, rtol=1e-9, atol=1e-14, err_msg=name)
    penalty = {"l2": sum(np.sum(plain.initial[n] ** 2) for n in chosen),
               "l1": sum(np.sum(np.abs(plain.initial[n])) for n in chosen),
               "group_l2": sum(np.sum(np.sqrt((plain.initial[n].reshape(
                   len(plain.initial[n]), -1) ** 2).sum(1) + 1e-12)) for n in chosen)}[kind]
    assert float(b["loss"]) - float(a["loss"]) == pytest.approx(w * penalty, rel=1e-10)


# ----- feature-space augmentation --------------------------------------------------------------


def fc1_outputs(spec_initial: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return x @ spec_initial["fc1.weight"].T + spec_initial["fc1.bias"]


def test_feature_noise_is_an_input_added_to_the_layer_output() -> None:
    forward = two_layer()
    plain = compile_step(forward, SGD(lr=1.0))
    spec = compile_step(forward, SGD(lr=1.0), features=[FeatureAugment("fc1", "noise", 0.1)])
    assert list(spec.features) == ["fc1.feature_noise"]
    assert spec.features["fc1.feature_noise"] == FeatureAugment("fc1", "noise", 0.1)
    assert "fc1.feature_noise" in spec.graph.inputs
    assert spec.graph.type_of(Value("fc1.feature_noise")).shape == (8, 10)
    rng = np.random.default_rng(12)
    batch = {"x": rng.standard_normal((8, 6)), "target": one_hot_rows(rng, 8, 3, float)}
    # Zero noise: exactly the step without augmentation.
    a = one_step(plain, batch)
    b = one_step(spec, {**batch, "fc1.feature_noise": np.zeros((8, 10))})
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    # Some noise: the prediction is the model with the noise added to fc1's output.
    noise = 0.5 * rng.standard_normal((8, 10))
    c = one_step(spec, {**batch, "fc1.feature_noise": noise})
    s = spec.initial
    want = np.maximum(fc1_outputs(s, batch["x"]) + noise, 0) @ s["fc2.weight"].T + s["fc2.bias"]
    np.testing.assert_allclose(c["logits"], want, rtol=1e-12, atol=1e-12)
    assert float(c["loss"]) == pytest.approx(cross_entropy_ref(want, batch["target"]), rel=1e-12)


def test_feature_noise_drawn_by_random_inputs_has_the_configured_std() -> None:
    spec = compile_step(two_layer(batch=64, hidden=32, dtype=np.float32), SGD(lr=0.1),
                        features=[FeatureAugment.parse("fc1:noise=0.25")])
    target = one_hot_rows(np.random.default_rng(0), 64, 3, np.float32)
    feeds, same = spec.random_inputs(np.random.default_rng(13), target)
    np.testing.assert_array_equal(same, target)
    noise = feeds["fc1.feature_noise"]
    assert noise.shape == (64, 32) and noise.dtype == np.float32
    # 2048 normal draws: the sample std has relative std 1/sqrt(2n) = 1.6%; the mean has std
    # 0.25/sqrt(n) = 0.0055. Both bounds are 5 of those.
    assert abs(noise.std() / 0.25 - 1) < 5 / np.sqrt(2 * noise.size)
    assert abs(noise.mean()) < 5 * 0.25 / np.sqrt(noise.size)


def test_feature_mixup_with_identity_is_no_mixup_and_mixes_like_the_targets() -> None:
    forward = two_layer()
    plain = compile_step(forward, SGD(lr=1.0))
    spec = compile_step(forward, SGD(lr=1.0), features=[FeatureAugment("fc1", "mixup", 0.4)])
    assert list(spec.features) == ["fc1.feature_mix"]
    assert spec.graph.type_of(Value("fc1.feature_mix")).shape == (8, 8)
    rng = np.random.default_rng(14)
    batch = {"x": rng.standard_normal((8, 6)), "target": one_hot_rows(rng, 8, 3, float)}
    a = one_step(plain, batch)
    b = one_step(spec, {**batch, "fc1.feature_mix": np.eye(8)})
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    # A drawn mix: rows are lam * e_i + (1 - lam) * e_partner, the target is mixed alike.
    feeds, target = spec.random_inputs(rng, batch["target"])
    mix = feeds["fc1.feature_mix"]
    assert mix.shape == (8, 8) and mix.dtype == np.float64
    assert (mix >= 0).all() and (np.count_nonzero(mix, axis=1) <= 2).all()
    np.testing.assert_allclose(mix.sum(axis=1), 1.0, rtol=1e-12)
    assert not np.allclose(mix, np.eye(8))
    np.testing.assert_allclose(target, mix @ batch["target"], rtol=1e-12, atol=1e-15)
    c = one_step(spec, {**batch, **feeds, "target": target})
    s = spec.initial
    want = np.maximum(mix @ fc1_outputs(s, batch["x"]), 0) @ s["fc2.weight"].T + s["fc2.bias"]
    np.testing.assert_allclose(c["logits"], want, rtol=1e-12, atol=1e-12)
    assert float(c["loss"]) == pytest.approx(cross_entropy_ref(want, target), rel=1e-12)


def test_random_inputs_mixes_float32_targets_with_the_fed_matrix() -> None:
    spec = compile_step(two_layer(dtype=np.float32), SGD(lr=0.1),
                        features=[FeatureAugment.parse(" fc1 : mixup = 0.2 ")])
    target = one_hot_rows(np.random.default_rng(0), 8, 3, np.float32)
    feeds, mixed = spec.random_inputs(np.random.default_rng(15), target)
    mix = feeds["fc1.feature_mix"]
    assert mix.dtype == np.float32 and mixed.dtype == np.float32
    np.testing.assert_allclose(mixed, mix.astype(np.float64) @ target, rtol=1e-6, atol=1e-7)


# ----- errors ------------------------------------------------------------------------------------


def test_unknown_loss_is_named_with_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown loss 'cross_entropie'.*'cross_entropy', "
                                         r"'mse'.*Did you mean 'cross_entropy'"):
        compile_step(two_layer(), SGD(lr=0.1), loss="cross_entropie")


def test_unknown_or_total_freeze_is_refused() -> None:
    with pytest.raises(UsageError, match=r"graph two_layer_train: unknown parameter 'fc3.weight'; "
                                         r"expected one of 'fc1.bias', 'fc1.weight', 'fc2.bias', "
                                         r"'fc2.weight', got 'fc3.weight'. Did you mean"):
        compile_step(two_layer(), SGD(lr=0.1), frozen=["fc3.weight"])
    everything = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    with pytest.raises(UsageError, match="nothing to train: every parameter is frozen"):
        compile_step(two_layer(), SGD(lr=0.1), frozen=everything)


def test_bad_penalties_and_feature_augmentations_are_refused() -> None:
    with pytest.raises(UsageError, match=r"unknown penalty 'l3'; expected one of 'group_l1', "
                                         r"'group_l2', 'l1', 'l2'"):
        Penalty("l3", 0.1, ("fc1.weight",))
    with pytest.raises(UsageError, match=r"penalty: unknown parameter 'fc9.weight'"):
        compile_step(two_layer(), SGD(lr=0.1), penalties=[Penalty("l2", 0.1, ("fc9.weight",))])
    with pytest.raises(UsageError, match=r"feature augmentation: unknown layer 'fc3'"):
        compile_step(two_layer(), SGD(lr=0.1), features=[FeatureAugment("fc3", "noise", 0.1)])
    with pytest.raises(UsageError, match=r"unknown feature augmentation 'nois'.*'noise'"):
        FeatureAugment("fc1", "nois", 0.1)
    with pytest.raises(UsageError, match=r"feature noise needs a positive value.*got -0.1"):
        FeatureAugment.parse("fc1:noise=-0.1")
    with pytest.raises(UsageError, match=r"bad feature augmentation 'fc1:noise'.*"
                                         r"LAYER:noise=STD"):
        FeatureAugment.parse("fc1:noise")
    mixups = [FeatureAugment("fc1", "mixup", 0.2), FeatureAugment("act", "mixup", 0.2)]
    with pytest.raises(UsageError, match=r"at most one feature mixup per step"):
        compile_step(two_layer(), SGD(lr=0.1), features=mixups)


def test_mse_target_of_the_wrong_shape_is_refused_at_run_time() -> None:
    spec = compile_step(two_layer(), SGD(lr=0.1), loss="mse")
    with pytest.raises(GraphcError, match=r"input 'target' has the wrong shape; expected "
                                          r"\(8, 3\), got \(8, 1\)"):
        InterpreterRunner(spec).run({"x": np.zeros((8, 6)), "target": np.zeros((8, 1))}, 0.1)


@pytest.mark.parametrize("runner_cls", RUNNERS)
def test_missing_step_input_is_named(runner_cls: type[Runner]) -> None:
    spec = compile_step(load("mlp").build(batch=4), SGD(lr=0.1))
    runner = runner_cls(spec)
    batch = {"x": np.zeros((4, 64), np.float32), "target": np.zeros((4, 10), np.float32)}
    with pytest.raises(GraphcError, match=r"the training step needs 'drop1.mask'; expected x, "
                                          r"target, drop1.mask, drop2.mask, got x, target\. "
                                          r"Draw the dropout masks"):
        runner.run(batch, lr=0.1)
    masks = spec.dropout_masks(np.random.default_rng(0))
    with pytest.raises(GraphcError, match=r"the training step needs 'target'"):
        runner.run({"x": batch["x"], **masks}, lr=0.1)


@pytest.mark.parametrize("runner_cls", RUNNERS)
def test_missing_feature_augmentation_input_is_named(runner_cls: type[Runner]) -> None:
    """The feature noise is a step input like the masks: a step without it must be refused,
    also after steps that had it (nothing from an earlier step may be reused)."""
    spec = compile_step(two_layer(dtype=np.float32), SGD(lr=0.1),
                        features=[FeatureAugment("fc1", "noise", 0.1)])
    runner = runner_cls(spec)
    rng = np.random.default_rng(16)
    batch = {"x": rng.standard_normal((8, 6)).astype(np.float32),
             "target": one_hot_rows(rng, 8, 3, np.float32)}
    for _ in range(2):
        runner.run({**batch, **spec.random_inputs(rng, batch["target"])[0]}, lr=0.1)
    with pytest.raises(GraphcError, match=r"'fc1.feature_noise'"):
        runner.run(batch, lr=0.1)


@pytest.mark.parametrize("runner_cls", RUNNERS)
def test_a_refused_step_is_not_counted(runner_cls: type[Runner]) -> None:
    """Adam's bias correction reads the step count: a call that was refused took no step."""
    spec = compile_step(load("mlp").build(batch=4), Adam(lr=1e-3))
    runner = runner_cls(spec)
    with pytest.raises(GraphcError, match="the training step needs"):
        runner.run({"x": np.zeros((4, 64), np.float32)}, lr=1e-3)
    assert runner.steps == 0


def test_onnxruntime_step_names_a_misshaped_or_unknown_input() -> None:
    spec = compile_step(load("mlp").build(batch=4), SGD(lr=0.1))
    runner = OrtRunner(spec)
    masks = spec.dropout_masks(np.random.default_rng(0))
    good = {"x": np.zeros((4, 64), np.float32), "target": np.zeros((4, 10), np.float32), **masks}
    with pytest.raises(GraphcError, match=r"step input 'x' has the wrong shape; expected "
                                          r"\(4, 64\), got \(3, 64\)"):
        runner.run({**good, "x": np.zeros((3, 64), np.float32)}, lr=0.1)
    with pytest.raises(GraphcError, match=r"has no input 'y'"):
        runner.run({**good, "y": np.zeros(3, np.float32)}, lr=0.1)


def test_runner_state_of_the_wrong_shape_is_named() -> None:
    spec = compile_step(two_layer(), SGD(lr=0.1))
    with pytest.raises(GraphcError, match=r"state 'fc1.weight' has the wrong shape; expected "
                                          r"\(10, 6\), got \(6, 10\)"):
        InterpreterRunner(spec, {"fc1.weight": np.zeros((6, 10))})


def test_models_a_training_step_cannot_serve_are_refused() -> None:
    # A Softmax output: cross-entropy takes logits (training it on probabilities stalls).
    b = GraphBuilder("soft")
    b.output(nn.softmax(nn.linear(b.input("x", (4, 3)), 2, name="fc"), name="probs"), "y")
    with pytest.raises(UsageError, match=r"cross_entropy takes logits, but the model's output "
                                         r"is a Softmax.*Remove the final activation"):
        compile_step(b.build(), SGD(lr=0.1))
    compile_step(b.build(), SGD(lr=0.1), loss="mse")  # fine for a regression-style loss
    # One value per channel: the batch statistics would be the value itself.
    b = GraphBuilder("one")
    b.output(nn.batch_norm(nn.linear(b.input("x", (1, 3)), 2, name="fc"), name="bn"), "y")
    with pytest.raises(GraphcError, match=r"needs more than one value per channel; expected "
                                          r"batch \* spatial size >= 2, got input \(1, 2\)"):
        compile_step(b.build(), SGD(lr=0.1), loss="mse")
    # One BatchNormalization's statistics used by two nodes: one update would be lost.
    b = GraphBuilder("shared")
    h = nn.batch_norm(nn.linear(b.input("x", (4, 3)), 2, name="fc"), name="bn")
    first = b.graph.in_values("bn")
    twice = b.graph.add_node("BatchNormalization", [h.value, *first[1:]], name="bn_again")
    b.graph.outputs = [twice]
    with pytest.raises(GraphcError, match=r"a running statistic is shared by two "
                                          r"BatchNormalization nodes"):
        compile_step(b.build(), SGD(lr=0.1), loss="mse")


def test_onnxruntime_steps_are_deterministic_with_several_threads() -> None:
    """The same steps from the same state give bit-identical weights, also when onnxruntime
    splits the work over threads (an op that accumulates in thread order would not)."""
    spec = compile_step(load("cnn").build(batch=64), SGD(lr=0.05, momentum=0.9))
    states = []
    for _ in range(3):
        runner = OrtRunner(spec, threads=2)
        rng = np.random.default_rng(0)
        for _ in range(3):
            x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
            target = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 64)]
            runner.run({"x": x, "target": target, **spec.dropout_masks(rng)}, lr=0.05)
        states.append(runner.state())
    for other in states[1:]:
        for name, value in states[0].items():
            assert value.tobytes() == other[name].tobytes(), name



def test_onnxruntime_steps_flush_subnormals_without_changing_the_callers_thread() -> None:
    """Flush-to-zero holds inside the steps, also when other sessions were created before in the
    process (onnxruntime's own option acts on the calling thread for the first session only);
    the Python thread keeps IEEE subnormals (1e-40 * 1 stays 1e-40 after training)."""
    import onnxruntime as ort

    tiny = np.float32(1e-40)
    assert tiny * np.float32(1) > 0
    spec = compile_step(tiny_cnn(dtype=np.float32), SGD(lr=0.1), loss="mse")
    ort.InferenceSession(to_bytes(tiny_cnn(dtype=np.float32)), providers=["CPUExecutionProvider"])
    runner = OrtRunner(spec, threads=1)
    if not runner._ftz.available:
        pytest.skip("flush-to-zero is set through glibc's x86-64 fenv_t only")
    rng = np.random.default_rng(3)
    batch = {"x": rng.standard_normal((6, 2, 4, 4)).astype(np.float32),
             "target": rng.standard_normal((6, 4)).astype(np.float32), **spec.dropout_masks(rng)}
    runner.run(batch, lr=0.1)
    assert tiny * np.float32(1) == np.float32(1e-40)
    with runner._ftz:
        assert tiny * np.float32(1) == 0
        assert np.float32(1e-39) + np.float32(0) == 0  # denormals-are-zero on input too
    assert tiny * np.float32(1) == np.float32(1e-40)

# ----- penalty specs and weight masks --------------------------------------------------------


def test_penalty_specs_and_the_weights_they_act_on() -> None:
    assert parse_penalty("l1:0.01") == ("l1", 0.01)
    assert parse_penalty(" Group-L2 ") == ("group_l2", DEFAULT_PENALTY_WEIGHTS["group_l2"])
    assert parse_penalty("group_l1:2e-3") == ("group_l1", 0.002)
    assert penalty_spec("group_l2", 0.01) == "group-l2:0.01"
    # Conv and Gemm weights, not biases, not BatchNorm's scale and shift.
    assert layer_weights(tiny_cnn()) == ["conv.weight", "fc.weight"]
    assert layer_weights(load("cnn").build()) == [
        "block1.conv.weight", "block2.conv.weight", "block3.conv.weight", "fc.weight"]
    for spec, message in [("l3", "unknown penalty 'l3'; expected one of 'group-l1', 'group-l2', "
                                 "'l1', 'l2'"),
                          ("l1:-1", "weight of penalty 'l1' must be a positive number; expected "
                                    "a number > 0, e.g. l1:0.0001, got '-1'"),
                          ("l2:0", "got '0'"), ("l2:inf", "got 'inf'"),
                          ("l1:abc", "bad penalty 'l1:abc'; expected KIND or KIND:WEIGHT")]:
        with pytest.raises(UsageError, match=re.escape(f"--penalty: {message}")
                           if message.startswith(("unknown", "bad")) else re.escape(message)):
            parse_penalty(spec)


def test_penalty_value_is_the_numpy_norm() -> None:
    rng = np.random.default_rng(1)
    state = {"a": rng.standard_normal((3, 2, 2)), "b": rng.standard_normal((4, 5))}
    rows = {k: v.reshape(len(v), -1) for k, v in state.items()}
    want = {"l1": sum(np.abs(v).sum() for v in state.values()),
            "l2": sum((v ** 2).sum() for v in state.values()),
            "group_l1": sum(np.abs(r).sum(1).sum() for r in rows.values()),
            "group_l2": sum(np.sqrt((r ** 2).sum(1) + 1e-12).sum() for r in rows.values())}
    for kind, total in want.items():
        assert Penalty(kind, 0.25, ("a", "b")).value(state) == pytest.approx(0.25 * total,
                                                                            rel=1e-12)


def test_mask_multiplies_the_weight_in_the_forward_and_its_gradient() -> None:
    """The step reads w * mask: its loss is the numpy loss of the masked weights, the masked
    entries are 0 after the step (they started nonzero) and the others get the gradient of the
    model whose weight is w * mask."""
    forward = two_layer()
    rng = np.random.default_rng(4)
    w = const(forward, "fc1.weight")
    mask = rng.random(w.shape) < 0.5
    masked = compile_step(forward, SGD(lr=1.0), masks={"fc1.weight": mask})
    assert [n for n in masked.graph.op_nodes() if n.startswith("fc1.weight.masked")]
    reference = compile_step(apply_state(forward, {"fc1.weight": w * mask}), SGD(lr=1.0))
    x, target = rng.standard_normal((8, 6)), one_hot_rows(rng, 8, 3, float)
    got = one_step(masked, {"x": x, "target": target})
    want = one_step(reference, {"x": x, "target": target})
    p = {n: const(forward, n) for n in forward.params()}
    h = np.maximum(x @ (w * mask).T + p["fc1.bias"], 0)
    assert float(got["loss"]) == pytest.approx(
        cross_entropy_ref(h @ p["fc2.weight"].T + p["fc2.bias"], target), rel=1e-12)
    new = got["fc1.weight.next"]
    assert w[~mask].all() and np.all(new[~mask] == 0)
    np.testing.assert_allclose(new[mask], want["fc1.weight.next"][mask], rtol=1e-12)
    for name in ("fc1.bias", "fc2.weight", "fc2.bias"):
        np.testing.assert_allclose(got[f"{name}.next"], want[f"{name}.next"], rtol=1e-12)


@pytest.mark.parametrize("runner_cls", RUNNERS)
@pytest.mark.parametrize("optimizer", [
    pytest.param(SGD(lr=0.1, momentum=0.9, weight_decay=0.01), id="sgd-momentum-decay"),
    pytest.param(SGD(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True), id="nesterov"),
    pytest.param(Adam(lr=0.05, weight_decay=0.01), id="adam-decay")])
def test_masked_zero_weights_stay_exactly_zero(runner_cls: type[Runner],
                                               optimizer: SGD | Adam) -> None:
    """A weight at 0 under a 0 mask: gradient, momentum (Adam's moments) and decay are all 0,
    so it stays exactly 0 through the steps, with penalties too; the rest trains."""
    forward = tiny_cnn(dtype=np.float32)
    rng = np.random.default_rng(7)
    masks = {n: rng.random(const(forward, n).shape) < 0.6 for n in ("conv.weight", "fc.weight")}
    start = apply_state(forward, {n: const(forward, n) * m for n, m in masks.items()})
    spec = compile_step(start, optimizer, masks=masks,
                        penalties=[Penalty("l1", 0.01, ("conv.weight", "fc.weight")),
                                   Penalty("group_l2", 0.01, ("conv.weight", "fc.weight"))])
    runner = runner_cls(spec, spec.initial)
    for _ in range(6):
        batch = {"x": rng.standard_normal((6, 2, 4, 4)).astype(np.float32),
                 "target": one_hot_rows(rng, 6, 4, np.float32), **spec.dropout_masks(rng)}
        runner.run(batch, 0.1)
    state = runner.state()
    for name, mask in masks.items():
        assert np.all(state[name][~mask] == 0), name
        assert np.all(state[name][mask] != const(start, name)[mask]), name
        for slot in optimizer.state_shapes(mask.shape):
            assert np.all(state[f"{name}.{slot}"][~mask] == 0), (name, slot)


def test_bad_masks_are_refused() -> None:
    w = const(two_layer(), "fc1.weight")
    for masks, message in [
        ({"fc9.weight": np.ones(3)}, "masks: unknown parameter 'fc9.weight'"),
        ({"fc1.weight": np.ones((6, 10))}, "masks: the mask of 'fc1.weight' has the wrong "
                                           "shape; expected (10, 6), got (6, 10)"),
        ({"fc1.weight": np.full(w.shape, 0.5)}, "masks: the mask of 'fc1.weight' is not 0/1; "
                                                "expected an array of 0 and 1 (or of bools), "
                                                "got 60 other values, e.g. 0.5")]:
        with pytest.raises(UsageError, match=re.escape(message)):
            compile_step(two_layer(), SGD(lr=0.1), masks=masks)
