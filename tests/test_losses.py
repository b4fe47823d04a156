"""Losses and penalties: values against numpy written here, gradients (through autodiff)
against central finite differences in float64."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from graphc.autodiff import gradient_graph
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError, UsageError
from graphc.interpret import run
from graphc.train import losses

RNG = np.random.default_rng(0)
Z = RNG.standard_normal((4, 5))
T = RNG.standard_normal((4, 5))
Y = np.eye(5)[[0, 3, 1, 4]]
W = RNG.standard_normal((3, 2, 2, 2))


def log_softmax(z: np.ndarray, tau: float = 1.0) -> np.ndarray:
    z = z / tau
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def reference(kind: str) -> float:
    if kind == "mse":
        return float(np.mean((Z - T) ** 2))
    if kind == "ce":
        return float(-np.mean(np.sum(Y * log_softmax(Z), axis=-1)))
    if kind.startswith("distill"):
        tau, alpha, beta = 3.0, 0.3, 0.7
        hard = -np.mean(np.sum(Y * log_softmax(Z), axis=-1))
        p_teacher = np.exp(log_softmax(T, tau))
        soft = -np.mean(np.sum(p_teacher * log_softmax(Z, tau), axis=-1))
        return float(alpha * hard + beta * (tau**2 if kind == "distill-tau2" else 1.0) * soft)
    if kind == "l2":
        return float(np.sum(W**2))
    if kind == "l1":
        return float(np.sum(np.abs(W)))
    if kind == "group":
        return float(np.sum(np.sqrt(np.sum(W**2, axis=(1, 2, 3)) + 1e-12)))
    raise AssertionError(kind)


def loss_graph(kind: str):
    b = GraphBuilder(kind, dtype=np.float64)
    if kind in ("l2", "l1", "group"):
        w = b.param("w", W.shape, init=W)
        loss = {"l2": lambda: losses.l2_penalty([w]), "l1": lambda: losses.l1_penalty([w]),
                "group": lambda: losses.group_penalty(w)}[kind]()
        b.output(loss, "loss")
        return b.build(), {}, ["w"]
    z, t, y = b.input("z", Z.shape), b.input("t", T.shape), b.input("y", Y.shape)
    if kind == "mse":
        loss = losses.mse(z, t)
    elif kind == "ce":
        loss = losses.cross_entropy(z, y)
    else:
        loss = losses.distillation(z, t, y, alpha=0.3, beta=0.7, tau=3.0,
                                   tau_squared=kind == "distill-tau2")
    b.output(loss, "loss")
    return b.build(), {"z": Z, "t": T, "y": Y}, ["z"]


KINDS = ["mse", "ce", "distill", "distill-tau2", "l2", "l1", "group"]


@pytest.mark.parametrize("kind", KINDS)
def test_value_matches_numpy(kind: str) -> None:
    g, feeds, _ = loss_graph(kind)
    assert float(run(g, feeds)["loss"]) == pytest.approx(reference(kind), rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_matches_finite_differences(kind: str) -> None:
    g, feeds, wrt = loss_graph(kind)
    grads = run(gradient_graph(g, wrt=wrt), feeds)
    name = wrt[0]
    base = W if name == "w" else Z
    got = grads[f"dloss/d{name}"]
    h = 1e-6
    for index in np.ndindex(base.shape):
        up, down = base.copy(), base.copy()
        up[index] += h
        down[index] -= h
        if name == "w":
            lo = float(run(loss_graph_with_w(kind, down), {})["loss"])
            hi = float(run(loss_graph_with_w(kind, up), {})["loss"])
        else:
            hi = float(run(g, {**feeds, "z": up})["loss"])
            lo = float(run(g, {**feeds, "z": down})["loss"])
        fd = (hi - lo) / (2 * h)
        assert abs(got[index] - fd) <= 1e-6 * max(1.0, abs(fd)), (index, got[index], fd)


def loss_graph_with_w(kind: str, w_value: np.ndarray):
    b = GraphBuilder(kind, dtype=np.float64)
    w = b.param("w", W.shape, init=w_value)
    loss = {"l2": lambda: losses.l2_penalty([w]), "l1": lambda: losses.l1_penalty([w]),
            "group": lambda: losses.group_penalty(w)}[kind]()
    b.output(loss, "loss")
    return b.build()


def test_cross_entropy_gradient_is_softmax_minus_target_over_batch() -> None:
    g, feeds, _ = loss_graph("ce")
    got = run(gradient_graph(g, wrt=["z"]), feeds)["dloss/dz"]
    np.testing.assert_allclose(got, (np.exp(log_softmax(Z)) - Y) / len(Z), atol=1e-14)


# ----- distillation by hand ------------------------------------------------------------------
#
# One sample, two classes: z_s = (1, 0), z_t = (2, 0), y = (1, 0). With s(a) = 1 / (1 + e^-a),
# softmax((u, 0) / T) = (s(u / T), s(-u / T)), so every term is written with exp and log only.

ZS, ZT, YH = np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]]), np.array([[1.0, 0.0]])


def by_hand(T: float, alpha: float, beta: float, tau_squared: bool) -> float:
    def sig(a: float) -> float:
        return 1.0 / (1.0 + math.exp(-a))

    hard = -math.log(sig(1.0))  # H(y, softmax(z_s)) = -log softmax(z_s)_0
    p0, p1 = sig(2.0 / T), sig(-2.0 / T)  # softmax(z_t / T)
    soft = -(p0 * math.log(sig(1.0 / T)) + p1 * math.log(sig(-1.0 / T)))
    return alpha * hard + beta * (T * T if tau_squared else 1.0) * soft


def small_graph(T: float, alpha: float, beta: float, tau_squared: bool | None):
    b = GraphBuilder("kd", dtype=np.float64)
    zs, zt, y = b.input("zs", (1, 2)), b.input("zt", (1, 2)), b.input("y", (1, 2))
    options = {} if tau_squared is None else {"tau_squared": tau_squared}
    b.output(losses.distillation(zs, zt, y, alpha=alpha, beta=beta, tau=T, **options), "loss")
    return b.build()


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("tau_squared", [False, True])
def test_distillation_equals_the_hand_computed_value(T: float, tau_squared: bool) -> None:
    g = small_graph(T, 0.5, 0.5, tau_squared)
    got = float(run(g, {"zs": ZS, "zt": ZT, "y": YH})["loss"])
    assert got == pytest.approx(by_hand(T, 0.5, 0.5, tau_squared), rel=1e-12)


def test_distillation_hand_values_spelled_out() -> None:
    # T = 1: hard = log(1 + e^-1) = 0.3132617, soft = 0.8807971 * 0.3132617 + 0.1192029 *
    # 1.3132617 = 0.4324646; L = 0.5 * (0.3132617 + 0.4324646).
    feeds = {"zs": ZS, "zt": ZT, "y": YH}
    assert float(run(small_graph(1.0, 0.5, 0.5, None), feeds)["loss"]) == \
        pytest.approx(0.3728631, abs=1e-7)
    # T = 4 in the course's form (the default) and with Hinton's T^2 = 16 on the soft term.
    plain = float(run(small_graph(4.0, 0.5, 0.5, None), feeds)["loss"])
    hinton = float(run(small_graph(4.0, 0.5, 0.5, True), feeds)["loss"])
    hard = math.log(1 + math.exp(-1))
    assert (hinton - 0.5 * hard) == pytest.approx(16 * (plain - 0.5 * hard), rel=1e-12)
    assert plain == pytest.approx(0.5 * hard + 0.5 * 0.6703246, abs=1e-7)


def test_distillation_weights_select_the_terms() -> None:
    feeds = {"zs": ZS, "zt": ZT, "y": YH}
    hard = float(run(small_graph(4.0, 1.0, 0.0, False), feeds)["loss"])
    assert hard == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-12)
    # alpha = 0: only the soft term, whose minimum over z_s is at z_s = z_t (H = entropy).
    b = float(run(small_graph(1.0, 0.0, 1.0, False), {**feeds, "zs": ZT})["loss"])
    p = np.array([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))])
    assert b == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-12)


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("tau_squared", [False, True])
def test_distillation_gradient_matches_finite_differences(T: float, tau_squared: bool) -> None:
    g = small_graph(T, 0.3, 0.7, tau_squared)
    zs = np.array([[0.7, -0.2]])
    feeds = {"zs": zs, "zt": ZT, "y": YH}
    got = run(gradient_graph(g, wrt=["zs"]), feeds)["dloss/dzs"]
    h = 1e-6
    for index in np.ndindex(zs.shape):
        up, down = zs.copy(), zs.copy()
        up[index] += h
        down[index] -= h
        fd = (float(run(g, {**feeds, "zs": up})["loss"])
              - float(run(g, {**feeds, "zs": down})["loss"])) / (2 * h)
        assert abs(got[index] - fd) <= 1e-7 * max(1.0, abs(fd)), (index, got[index], fd)
    # The closed form: alpha (q - y) + beta [T^2] (q_T - p_T) / T.
    q, q_t, p_t = (np.exp(log_softmax(zs)), np.exp(log_softmax(zs, T)),
                   np.exp(log_softmax(ZT, T)))
    closed = 0.3 * (q - YH) + 0.7 * (T * T if tau_squared else 1.0) * (q_t - p_t) / T
    np.testing.assert_allclose(got, closed, atol=1e-12)


@pytest.mark.parametrize(("options", "message"), [
    ({"tau": 0.0}, "the distillation temperature must be positive; expected T > 0"),
    ({"tau": -2.0}, "the distillation temperature must be positive"),
    ({"alpha": -0.1}, "the distillation weight alpha must be >= 0"),
    ({"beta": -1.0}, "the distillation weight beta must be >= 0"),
    ({"alpha": 0.0, "beta": 0.0}, "alpha and beta are both 0; expected alpha + beta > 0"),
])
def test_bad_distillation_settings_are_refused(options, message) -> None:
    b = GraphBuilder("bad")
    z = b.input("z", (2, 3))
    with pytest.raises(UsageError, match=re.escape(message)):
        losses.distillation(z, z, z, **options)


def test_shape_mismatch_and_bad_options_are_refused() -> None:
    b = GraphBuilder("bad")
    z, y = b.input("z", (2, 3)), b.input("y", (2, 4))
    with pytest.raises(GraphcError, match="prediction and target shapes differ"):
        losses.cross_entropy(z, y)
    with pytest.raises(GraphcError, match="temperature must be positive"):
        losses.distillation(z, z, z, tau=0.0)
    with pytest.raises(GraphcError, match="Did you mean 'l2'"):
        losses.group_penalty(b.param("w", (2, 3)), norm="l22")
