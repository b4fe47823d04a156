"""Optimizers that add their update to a graph, and learning-rate schedules.

A training step is one graph: forward, loss, backward and the optimizer update, with the
parameters and the optimizer state as inputs and their new values as outputs. ``SGD.update`` and
``Adam.update`` add the update nodes for one parameter, following the formulas of
``torch.optim``. The learning rate and the (1-based) step count are scalar graph values, so a
schedule changes them from step to step without rebuilding the graph.

>>> import numpy as np
>>> from graphc.interpret import run
>>> from graphc.ir import Graph
>>> g = Graph("step")
>>> w, dw = g.add_input("w", (2,)), g.add_input("dw", (2,))
>>> v, lr, t = g.add_input("w.velocity", (2,)), g.add_input("lr", ()), g.add_input("t", ())
>>> opt = SGD(lr=0.1, momentum=0.9)
>>> opt.state_shapes((2,))
{'velocity': (2,)}
>>> new_w, new_state = opt.update(g, w, dw, {"velocity": v}, lr, t)
>>> g.outputs += [new_w, new_state["velocity"]]
>>> out = run(g, {"w": [1.0, 2.0], "dw": [1.0, -1.0], "w.velocity": [0.0, 0.0],
...               "lr": opt.lr, "t": 1.0})
>>> {name: np.round(value.astype(float), 6).tolist() for name, value in out.items()}
{'w.update.sub': [0.9, 2.1], 'w.update.add': [1.0, -1.0]}
>>> sched = schedule_from_spec("step:10,0.5", 0.1, total=30)
>>> [sched(0), sched(10), sched(25)]
[0.1, 0.05, 0.025]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import UsageError, unknown
from graphc.ir import Graph, Value

Schedule = Callable[[int], float]
SCHEDULES = ("constant", "cosine", "step")


class _Builder:
    """Adds the update nodes of one parameter, named ``<param>.update.<op>``."""

    def __init__(self, g: Graph, param: Value) -> None:
        self.g = g
        self.prefix = f"{g.value_name(param)}.update"
        self.dtype = g.type_of(param).dtype

    def op(self, op: str, *inputs: Value) -> Value:
        return self.g.add_node(op, list(inputs), name=f"{self.prefix}.{op.lower()}")

    def const(self, value: float) -> Value:
        return self.g.add_const(f"{self.prefix}.c", value, dtype=self.dtype)

    def like(self, value: Value, what: str) -> Value:
        """Return ``value`` in the parameter's dtype (a Cast node if it has another)."""
        ttype = self.g.type_of(value)
        if ttype.dtype.kind not in "fiu":
            raise UsageError(f"the {what} must be a number", expected=str(self.dtype),
                             got=str(ttype.dtype))
        if ttype.dtype == self.dtype:
            return value
        return self.cast(value, self.dtype)

    def bias_correction(self, beta: float, step: Value) -> Value:
        """Return ``1 - beta**step`` in the parameter's dtype, computed on float64 scalars.

        In float32, ``1 - 0.999**1`` has a relative error of 1e-5 (0.999 is not exact); in
        float64 it is exact to 1e-13, and a scalar costs nothing.
        """
        t = self.g.type_of(step)
        if t.shape != ():
            raise UsageError("the step must be a scalar", expected="shape ()", got=t.shape)
        if t.dtype.kind not in "fiu":
            raise UsageError("the step must be a number", expected="float", got=str(t.dtype))
        if t.dtype != np.float64:
            step = self.cast(step, np.float64)
        one = self.g.add_const(f"{self.prefix}.c", 1.0, dtype=np.float64)
        beta_t = self.op("Pow", self.g.add_const(f"{self.prefix}.c", beta, dtype=np.float64), step)
        correction = self.op("Sub", one, beta_t)
        return correction if self.dtype == np.float64 else self.cast(correction, self.dtype)

    def cast(self, value: Value, dtype: Any) -> Value:
        from onnx import helper  # here: importing graphc.train must not cost onnx's import

        return self.g.add_node("Cast", [value],
                               {"to": helper.np_dtype_to_tensor_dtype(np.dtype(dtype))},
                               name=f"{self.prefix}.cast")

    def scaled(self, factor: float, value: Value) -> Value:
        return self.op("Mul", self.const(factor), value)


def _check_state(state: dict[str, Value], want: dict[str, tuple[int, ...]], g: Graph,
                 param: Value) -> None:
    if set(state) != set(want):
        raise UsageError(f"wrong optimizer state for {g.value_name(param)!r}",
                         expected=sorted(want), got=sorted(state))
    for key, shape in want.items():
        got = g.type_of(state[key]).shape
        if got != tuple(shape):
            raise UsageError(f"optimizer state {key!r} of {g.value_name(param)!r} has the wrong "
                             "shape", expected=tuple(shape), got=got)


def _check_grad(g: Graph, param: Value, grad: Value) -> None:
    if g.type_of(grad).shape != g.type_of(param).shape:
        raise UsageError(f"the gradient of {g.value_name(param)!r} has the wrong shape",
                         expected=g.type_of(param).shape, got=g.type_of(grad).shape)


def _finite_at_least_0(value: float) -> bool:
    return math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 decay.

    As ``torch.optim.SGD`` (dampening 0): ``d = g + wd*p``; ``v' = momentum*v + d``;
    ``p' = p - lr*v'`` (Nesterov: ``p' = p - lr*(d + momentum*v')``); without momentum
    ``p' = p - lr*d`` and there is no state.
    """

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        if not all(_finite_at_least_0(v) for v in (self.lr, self.momentum, self.weight_decay)):
            raise UsageError("SGD's lr, momentum and weight_decay must be finite and >= 0",
                             expected="numbers >= 0",
                             got=f"lr={self.lr}, momentum={self.momentum}, "
                                 f"weight_decay={self.weight_decay}")
        if self.nesterov and self.momentum == 0:
            raise UsageError("Nesterov momentum needs a momentum", expected="momentum > 0",
                             got=self.momentum)

    def state_shapes(self, param_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """Return the optimizer state of one parameter: name -> shape."""
        return {"velocity": tuple(param_shape)} if self.momentum else {}

    def update(self, g: Graph, param: Value, grad: Value, state: dict[str, Value], lr: Value,
               step: Value) -> tuple[Value, dict[str, Value]]:
        """Add the update of ``param``; return its new value and the new state.

        ``step`` is not used by SGD (it is taken so that every optimizer has one signature).
        """
        _check_grad(g, param, grad)
        _check_state(state, self.state_shapes(g.type_of(param).shape), g, param)
        b = _Builder(g, param)
        lr = b.like(lr, "learning rate")
        d = b.like(grad, "gradient")
        if self.weight_decay:
            d = b.op("Add", d, b.scaled(self.weight_decay, param))
        new_state: dict[str, Value] = {}
        if self.momentum:
            velocity = b.op("Add", b.scaled(self.momentum, state["velocity"]), d)
            new_state["velocity"] = velocity
            d = b.op("Add", d, b.scaled(self.momentum, velocity)) if self.nesterov else velocity
        return b.op("Sub", param, b.op("Mul", lr, d)), new_state


@dataclass(frozen=True)
class Adam:
    """Adam with bias correction; ``weight_decay`` is L2 added to the gradient (torch.optim.Adam).

    ``m' = b1*m + (1-b1)*g``; ``v' = b2*v + (1-b2)*g^2``;
    ``p' = p - lr * (m'/(1-b1^t)) / (sqrt(v'/(1-b2^t)) + eps)`` with ``t`` the 1-based step
    (a scalar of any numeric dtype; the bias corrections are computed in float64).
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        b1, b2 = self.betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise UsageError("Adam's betas must be in [0, 1)", got=self.betas)
        if not all(_finite_at_least_0(v) for v in (self.lr, self.eps, self.weight_decay)):
            raise UsageError("Adam's lr, eps and weight_decay must be finite and >= 0",
                             expected="numbers >= 0",
                             got=f"lr={self.lr}, eps={self.eps}, "
                                 f"weight_decay={self.weight_decay}")

    def state_shapes(self, param_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """Return the optimizer state of one parameter: name -> shape."""
        return {"m": tuple(param_shape), "v": tuple(param_shape)}

    def update(self, g: Graph, param: Value, grad: Value, state: dict[str, Value], lr: Value,
               step: Value) -> tuple[Value, dict[str, Value]]:
        """Add the update of ``param``; return its new value and the new state ``m``, ``v``."""
        _check_grad(g, param, grad)
        _check_state(state, self.state_shapes(g.type_of(param).shape), g, param)
        b1, b2 = self.betas
        b = _Builder(g, param)
        lr = b.like(lr, "learning rate")
        d = b.like(grad, "gradient")
        if self.weight_decay:
            d = b.op("Add", d, b.scaled(self.weight_decay, param))
        m = b.op("Add", b.scaled(b1, state["m"]), b.scaled(1.0 - b1, d))
        v = b.op("Add", b.scaled(b2, state["v"]), b.scaled(1.0 - b2, b.op("Mul", d, d)))
        bc1, bc2 = b.bias_correction(b1, step), b.bias_correction(b2, step)
        m_hat = b.op("Div", m, bc1)
        v_hat = b.op("Div", v, bc2)
        denom = b.op("Add", b.op("Sqrt", v_hat), b.const(self.eps))
        new_param = b.op("Sub", param, b.op("Mul", lr, b.op("Div", m_hat, denom)))
        return new_param, {"m": m, "v": v}


Optimizer = SGD | Adam


# ----- learning-rate schedules ------------------------------------------------------------


def constant(lr: float) -> Schedule:
    """Return the schedule that is ``lr`` at every epoch (or step)."""
    return lambda epoch: float(lr)


def step_decay(lr: float, step_size: int, gamma: float) -> Schedule:
    """Return ``lr * gamma ** (epoch // step_size)`` (torch's ``StepLR``)."""
    if step_size <= 0:
        raise UsageError("step decay needs a positive step size", expected="> 0", got=step_size)
    if not (math.isfinite(gamma) and gamma > 0):
        raise UsageError("step decay needs a positive factor", expected="GAMMA > 0, e.g. 0.5",
                         got=gamma)
    return lambda epoch: float(lr * gamma ** (int(epoch) // step_size))


def cosine(lr: float, total_steps: int, min_lr: float = 0.0) -> Schedule:
    """Return cosine annealing from ``lr`` at 0 to ``min_lr`` at ``total_steps`` (then held).

    ``min_lr + (lr - min_lr) * (1 + cos(pi * t / total_steps)) / 2`` (torch's
    ``CosineAnnealingLR`` without restarts).
    """
    if total_steps <= 0:
        raise UsageError("cosine annealing needs a positive number of steps", expected="> 0",
                         got=total_steps)

    def schedule(epoch: int) -> float:
        t = min(max(int(epoch), 0), total_steps)
        return float(min_lr + (lr - min_lr) * (1.0 + math.cos(math.pi * t / total_steps)) / 2.0)

    return schedule


def schedule_from_spec(spec: str, lr: float, total: int) -> Schedule:
    """Return the schedule named by ``spec``: ``constant``, ``cosine`` or ``step:SIZE,GAMMA``.

    ``total`` is the number of epochs (or steps) the cosine schedule anneals over.

    >>> schedule_from_spec("cosine", 1.0, total=10)(5)
    0.5
    >>> schedule_from_spec("cosin", 1.0, total=10)
    Traceback (most recent call last):
    ...
    graphc.errors.UsageError: unknown schedule 'cosin'; expected one of 'constant', 'cosine', \
'step', got 'cosin'. Did you mean 'cosine'?
    """
    name, _, args = spec.strip().partition(":")
    name = name.strip()
    if name not in SCHEDULES:
        raise unknown("schedule", name, SCHEDULES, cls=UsageError)
    if name == "step":
        parts = [p.strip() for p in args.split(",")] if args else []
        try:
            if len(parts) != 2:
                raise ValueError
            step_size, gamma = int(parts[0]), float(parts[1])
        except ValueError:
            raise UsageError(f"bad step schedule {spec!r}", expected="'step:SIZE,GAMMA', e.g. "
                             "'step:10,0.5'", got=repr(spec)) from None
        return step_decay(lr, step_size, gamma)
    if args:
        raise UsageError(f"schedule {name!r} takes no arguments", expected=repr(name),
                         got=repr(spec))
    if name == "cosine":
        return cosine(lr, total)
    return constant(lr)
