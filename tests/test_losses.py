"""Losses and penalties: values against numpy written here, gradients (through autodiff)
against central finite differences in float64."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.autodiff import gradient_graph
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError
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
        return float(alpha * hard + beta * (tau**2 if kind == "distill" else 1.0) * soft)
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
                                   tau_squared=kind == "distill")
    b.output(loss, "loss")
    return b.build(), {"z": Z, "t": T, "y": Y}, ["z"]


KINDS = ["mse", "ce", "distill", "distill-no-tau2", "l2", "l1", "group"]


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


def test_shape_mismatch_and_bad_options_are_refused() -> None:
    b = GraphBuilder("bad")
    z, y = b.input("z", (2, 3)), b.input("y", (2, 4))
    with pytest.raises(GraphcError, match="prediction and target shapes differ"):
        losses.cross_entropy(z, y)
    with pytest.raises(GraphcError, match="temperature must be positive"):
        losses.distillation(z, z, z, tau=0.0)
    with pytest.raises(GraphcError, match="Did you mean 'l2'"):
        losses.group_penalty(b.param("w", (2, 3)), norm="l22")
