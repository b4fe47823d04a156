"""Optimizer updates in the IR against float64 numpy references of the torch.optim formulas, on
the interpreter and on onnxruntime over several successive steps; learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from graphc.errors import GraphcError, UsageError
from graphc.interpret import run
from graphc.ir import Graph
from graphc.onnxio.runtime import run_onnxruntime
from graphc.train.optim import SGD, Adam, constant, cosine, schedule_from_spec, step_decay

SHAPE = (3, 4)
STEPS = 5
RTOL = 1e-6

Runner = Callable[[Graph, dict[str, np.ndarray]], dict[str, np.ndarray]]
RUNNERS = [pytest.param(run, id="interpret"), pytest.param(run_onnxruntime, id="onnxruntime")]


def build(opt: SGD | Adam) -> tuple[Graph, list[str]]:
    """One parameter ``w`` with gradient, state, lr and step as inputs; outputs w' then state'."""
    g = Graph("step")
    w = g.add_input("w", SHAPE)
    dw = g.add_input("dw", SHAPE)
    state = {k: g.add_input(f"w.{k}", s) for k, s in opt.state_shapes(SHAPE).items()}
    lr = g.add_input("lr", ())
    t = g.add_input("t", ())
    new_w, new_state = opt.update(g, w, dw, state, lr, t)
    assert sorted(new_state) == sorted(state)
    keys = sorted(state)
    g.outputs += [new_w] + [new_state[k] for k in keys]
    g.verify()
    return g, keys


def sgd_ref(opt: SGD, p: np.ndarray, grad: np.ndarray, state: dict[str, np.ndarray],
            lr: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    d = grad + opt.weight_decay * p
    if not opt.momentum:
        return p - lr * d, {}
    v = opt.momentum * state["velocity"] + d
    step = d + opt.momentum * v if opt.nesterov else v
    return p - lr * step, {"velocity": v}


def adam_ref(opt: Adam, p: np.ndarray, grad: np.ndarray, state: dict[str, np.ndarray],
             lr: float, t: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    b1, b2 = opt.betas
    d = grad + opt.weight_decay * p
    m = b1 * state["m"] + (1 - b1) * d
    v = b2 * state["v"] + (1 - b2) * d * d
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + opt.eps), {"m": m, "v": v}


def close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """rtol 1e-6, relative to each element and to the array's scale: float32 sums of O(1) terms
    that cancel to a small element keep an absolute error of about 1e-7 of the terms."""
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * float(np.max(np.abs(want))),
                               err_msg=what)


def check_steps(opt: SGD | Adam, runner: Runner, lrs: list[float] | None = None) -> None:
    """Run ``STEPS`` successive updates, feeding the graph's outputs back in, against the
    float64 reference fed with its own outputs."""
    g, keys = build(opt)
    rng = np.random.default_rng(0)
    p64 = rng.normal(size=SHAPE)
    s64 = {k: np.zeros(SHAPE) for k in keys}
    p32 = p64.astype(np.float32)
    s32 = {k: v.astype(np.float32) for k, v in s64.items()}
    lrs = lrs or [opt.lr] * STEPS
    for t in range(1, STEPS + 1):
        grad = rng.normal(size=SHAPE)
        lr = lrs[t - 1]
        feeds = {"w": p32, "dw": grad.astype(np.float32), "lr": np.float32(lr),
                 "t": np.float32(t), **{f"w.{k}": s32[k] for k in keys}}
        out = list(runner(g, feeds).values())
        if isinstance(opt, Adam):
            p64, s64 = adam_ref(opt, p64, grad, s64, lr, t)
        else:
            p64, s64 = sgd_ref(opt, p64, grad, s64, lr)
        assert out[0].dtype == np.float32 and out[0].shape == SHAPE
        close(out[0], p64, f"w at t={t}")
        for k, value in zip(keys, out[1:], strict=True):
            assert value.dtype == np.float32
            close(value, s64[k], f"{k} at t={t}")
        # Continue from the graph's own outputs, as training will.
        p32, s32 = out[0], dict(zip(keys, out[1:], strict=True))


SGD_CASES = [
    pytest.param(SGD(lr=0.1), id="plain"),
    pytest.param(SGD(lr=0.1, weight_decay=0.01), id="wd"),
    pytest.param(SGD(lr=0.05, momentum=0.9), id="momentum"),
    pytest.param(SGD(lr=0.05, momentum=0.9, nesterov=True), id="nesterov"),
    pytest.param(SGD(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True), id="nesterov-wd"),
]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("opt", SGD_CASES)
def test_sgd_matches_torch_formulas(opt: SGD, runner: Runner) -> None:
    check_steps(opt, runner)


ADAM_CASES = [
    pytest.param(Adam(lr=1e-2), id="default"),
    pytest.param(Adam(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05), id="wd"),
]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("opt", ADAM_CASES)
def test_adam_matches_torch_formulas(opt: Adam, runner: Runner) -> None:
    check_steps(opt, runner)


@pytest.mark.parametrize("runner", RUNNERS)
def test_lr_is_a_graph_value(runner: Runner) -> None:
    """A schedule changes the learning rate between steps without rebuilding the graph."""
    sched = cosine(0.1, STEPS - 1)
    lrs = [sched(t) for t in range(STEPS)]
    check_steps(SGD(lr=0.1, momentum=0.9), runner, lrs)
    check_steps(Adam(lr=0.1), runner, lrs)


@pytest.mark.parametrize("runner", RUNNERS)
def test_adam_bias_correction(runner: Runner) -> None:
    """With a constant gradient, m_hat = g and v_hat = g^2 at every t, so each step moves the
    parameter by lr * g / (|g| + eps); without bias correction step 1 would be ~sqrt(1000)/10x
    that. Checked at t = 1, 2, 3."""
    opt = Adam(lr=0.01, eps=0.0)
    g, keys = build(opt)
    grad = np.array([[0.5, -2.0, 1e-3, 4.0]] * 3, np.float32)
    p = np.zeros(SHAPE, np.float32)
    state = {k: np.zeros(SHAPE, np.float32) for k in keys}
    for t in (1, 2, 3):
        feeds = {"w": p, "dw": grad, "lr": np.float32(0.01), "t": np.float32(t),
                 **{f"w.{k}": state[k] for k in keys}}
        out = list(runner(g, feeds).values())
        np.testing.assert_allclose(out[0] - p, -0.01 * np.sign(grad), rtol=1e-4)
        b1, b2 = opt.betas
        np.testing.assert_allclose(out[1], (1 - b1 ** t) * grad, rtol=1e-5)  # m
        np.testing.assert_allclose(out[2], (1 - b2 ** t) * grad * grad, rtol=1e-4)  # v
        p, state = out[0], dict(zip(keys, out[1:], strict=True))


def test_no_state_without_momentum_and_readable_names() -> None:
    assert SGD().state_shapes(SHAPE) == {}
    assert SGD(momentum=0.9).state_shapes(SHAPE) == {"velocity": SHAPE}
    assert Adam().state_shapes(SHAPE) == {"m": SHAPE, "v": SHAPE}
    g, keys = build(SGD(lr=0.1))
    assert keys == []
    assert all(n.startswith("w.update.") for n in g.op_nodes())
    g, _ = build(Adam())
    assert {g.op(n) for n in g.op_nodes()} >= {"Pow", "Sqrt", "Div"}
    assert all(n.startswith("w.update.") for n in g.op_nodes())


def test_bad_arguments() -> None:
    with pytest.raises(UsageError, match="Nesterov"):
        SGD(nesterov=True)
    with pytest.raises(UsageError, match="betas"):
        Adam(betas=(0.9, 1.0))
    g = Graph("bad")
    w, dw = g.add_input("w", SHAPE), g.add_input("dw", (4, 3))
    lr, t = g.add_input("lr", ()), g.add_input("t", ())
    with pytest.raises(GraphcError, match="gradient of 'w' has the wrong shape"):
        SGD().update(g, w, dw, {}, lr, t)
    with pytest.raises(GraphcError, match="wrong optimizer state"):
        SGD(momentum=0.9).update(g, w, g.add_input("dw2", SHAPE), {}, lr, t)


def test_lr_of_another_dtype_is_cast() -> None:
    g = Graph("cast")
    w, dw = g.add_input("w", (2,)), g.add_input("dw", (2,))
    lr, t = g.add_input("lr", (), np.float64), g.add_input("t", (), np.int64)
    new_w, _ = Adam(lr=0.1).update(g, w, dw, {"m": g.add_input("m", (2,)),
                                              "v": g.add_input("v", (2,))}, lr, t)
    g.outputs.append(new_w)
    feeds = {"w": np.ones(2, np.float32), "dw": np.array([1.0, -1.0], np.float32),
             "m": np.zeros(2, np.float32), "v": np.zeros(2, np.float32), "lr": 0.1,
             "t": np.int64(1)}
    for runner in (run, run_onnxruntime):
        out = next(iter(runner(g, feeds).values()))
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, [0.9, 1.1], rtol=1e-5)


# ----- schedules --------------------------------------------------------------------------


def test_constant() -> None:
    assert [constant(0.1)(e) for e in (0, 5, 1000)] == [0.1, 0.1, 0.1]


def test_step_decay() -> None:
    sched = step_decay(0.1, 10, 0.5)
    assert [sched(e) for e in (0, 9, 10, 19, 20, 35)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125])
    with pytest.raises(UsageError):
        step_decay(0.1, 0, 0.5)


def test_cosine() -> None:
    sched = cosine(0.1, 100, min_lr=0.001)
    assert sched(0) == pytest.approx(0.1)
    assert sched(50) == pytest.approx((0.1 + 0.001) / 2)
    assert sched(100) == pytest.approx(0.001)
    assert sched(150) == pytest.approx(0.001)  # held after the end
    assert sched(25) == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine(1.0, 10)(10) == pytest.approx(0.0)
    values = [sched(e) for e in range(101)]
    assert values == sorted(values, reverse=True)


def test_schedule_from_spec() -> None:
    assert schedule_from_spec("constant", 0.3, 10)(7) == 0.3
    assert schedule_from_spec("cosine", 1.0, 10)(5) == pytest.approx(0.5)
    assert schedule_from_spec("cosine", 1.0, 10)(10) == pytest.approx(0.0)
    step = schedule_from_spec("step:10,0.5", 0.1, 100)
    assert [step(0), step(10), step(25)] == pytest.approx([0.1, 0.05, 0.025])
    assert schedule_from_spec(" step: 3 , 0.1 ", 1.0, 10)(3) == pytest.approx(0.1)


@pytest.mark.parametrize("spec, closest", [("cosin", "cosine"), ("constnat", "constant"),
                                           ("stpe:10,0.5", "step")])
def test_unknown_schedule_names_closest_match(spec: str, closest: str) -> None:
    with pytest.raises(UsageError) as info:
        schedule_from_spec(spec, 0.1, 10)
    assert f"unknown schedule {spec.split(':')[0]!r}" in str(info.value)
    assert f"Did you mean {closest!r}?" in str(info.value)
    assert "'constant', 'cosine', 'step'" in str(info.value)


@pytest.mark.parametrize("spec", ["step", "step:10", "step:a,0.5", "step:10,0.5,1", "cosine:3"])
def test_bad_schedule_arguments(spec: str) -> None:
    with pytest.raises(UsageError):
        schedule_from_spec(spec, 0.1, 10)
