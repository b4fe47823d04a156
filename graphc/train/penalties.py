"""Penalties on layer weights, added to the training loss: l1, l2 and the group lasso.

A ``Penalty`` is ``weight * penalty(params)``: ``l1`` (sum |w|), ``l2`` (sum w^2), ``group_l1``
or ``group_l2`` (the sum over output channels of each channel's norm, which drives whole
channels to zero). ``parse_penalty`` reads the ``KIND[:WEIGHT]`` specs of ``--penalty`` (the
weight defaults to ``DEFAULT_PENALTY_WEIGHTS``), ``layer_weights`` names the weights a penalty
acts on by default, and ``penalty_term`` writes a penalty into the step's graph
(``graphc.train.step.compile_step``); ``Penalty.value`` computes the same number in numpy.

>>> from graphc.models import load
>>> kind, weight = parse_penalty("group-l2")
>>> Penalty(kind, weight, tuple(layer_weights(load("mlp").build())))
Penalty(kind='group_l2', weight=0.01, params=('fc1.weight', 'fc2.weight', 'fc3.weight'))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from graphc.dsl import GraphBuilder, Tensor
from graphc.errors import UsageError, unknown
from graphc.ir import Graph, Value
from graphc.train import losses

PENALTIES = ("l1", "l2", "group_l1", "group_l2")
# The weight of each penalty when a spec gives none, measured on the digits cnn and mlp (30
# epochs, docs/training.md): l1 at 1e-3 puts 74% of cnn's weights below 1e-3 at no accuracy
# cost; l2 at 1e-4 is a mild extra weight decay (its gradient is 2e-4 w); group-l2 at 1e-2
# brings 46 of mlp's 202 output channels below 5% of their layer's largest norm. group-l1
# sums |w| row by row, which is l1 itself.
DEFAULT_PENALTY_WEIGHTS = {"l1": 1e-3, "l2": 1e-4, "group_l1": 1e-3, "group_l2": 1e-2}
# The layers whose weights a penalty acts on (biases and BatchNorm are left alone), and the
# ops a weight may pass through on its way there (quantization-aware training's fake
# quantization).
WEIGHT_LAYERS = ("Conv", "Gemm", "MatMul")
_WEIGHT_PATH = ("FakeQuantizeLinear", "Identity")


@dataclass(frozen=True)
class Penalty:
    """``weight * penalty(params)`` added to the loss: ``l1``, ``l2`` (sums over the weights)
    or ``group_l1``/``group_l2`` (the per-output-channel norms of ``graphc.train.losses``)."""

    kind: str
    weight: float
    params: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in PENALTIES:
            raise unknown("penalty", self.kind, PENALTIES, cls=UsageError)

    def value(self, state: Mapping[str, np.ndarray]) -> float:
        """Return what the penalty adds to the loss for the weights in ``state`` (float64).

        >>> w = {"fc.weight": np.array([[3.0, -4.0], [0.0, 0.0]])}
        >>> [round(Penalty(k, 0.5, ("fc.weight",)).value(w), 6) for k in PENALTIES]
        [3.5, 12.5, 3.5, 2.500001]
        """
        total = 0.0
        for name in self.params:
            w = np.asarray(state[name], np.float64)
            rows = w.reshape(len(w), -1) if w.ndim else w.reshape(1, 1)
            if self.kind == "l1":
                total += float(np.abs(w).sum())
            elif self.kind == "l2":
                total += float(np.square(w).sum())
            elif self.kind == "group_l1":
                total += float(np.abs(rows).sum())
            else:  # the eps of losses.group_penalty keeps the gradient finite at 0
                total += float(np.sqrt(np.square(rows).sum(axis=1) + 1e-12).sum())
        return self.weight * total


def parse_penalty(spec: str) -> tuple[str, float]:
    """Read ``KIND[:WEIGHT]`` (``l1``, ``l2``, ``group-l1``, ``group-l2``; ``_`` works too)
    into the Penalty kind and its weight (``DEFAULT_PENALTY_WEIGHTS`` if none is given).

    >>> parse_penalty("group-l2:0.01"), parse_penalty("l1")
    (('group_l2', 0.01), ('l1', 0.001))
    """
    kind, colon, text = str(spec).strip().partition(":")
    kind = kind.strip().lower().replace("-", "_")
    if kind not in PENALTIES:
        raise unknown("penalty", kind.replace("_", "-"), [k.replace("_", "-") for k in PENALTIES],
                      cls=UsageError, where="--penalty")
    if not colon:
        return kind, DEFAULT_PENALTY_WEIGHTS[kind]
    try:
        weight = float(text)
    except ValueError:
        raise UsageError(f"bad penalty {spec!r}", where="--penalty",
                         expected="KIND or KIND:WEIGHT, e.g. l1:0.0001", got=repr(spec)) from None
    if not (np.isfinite(weight) and weight > 0):
        raise UsageError(f"the weight of penalty {kind.replace('_', '-')!r} must be a positive "
                         "number", where="--penalty", expected="a number > 0, e.g. l1:0.0001",
                         got=repr(text.strip()))
    return kind, weight


def penalty_spec(kind: str, weight: float) -> str:
    """Return the canonical ``KIND:WEIGHT`` spec (as ``--penalty`` takes it) of a penalty.

    >>> penalty_spec("group_l1", 1e-05)
    'group-l1:1e-05'
    """
    return f"{kind.replace('_', '-')}:{float(weight)!r}"


def layer_weights(g: Graph) -> list[str]:
    """Return the parameters that are the weights of Conv, Gemm and MatMul layers (not their
    biases, not BatchNorm's scale and shift), in graph order.

    >>> from graphc.models import load
    >>> layer_weights(load("mlp").build())
    ['fc1.weight', 'fc2.weight', 'fc3.weight']
    """
    params = set(g.params())
    found: list[str] = []
    for node in g.topo():
        if g.op(node) not in WEIGHT_LAYERS:
            continue
        # Conv's weight is input 1; a Gemm or MatMul may take its weight on either side.
        ports = [1] if g.op(node) == "Conv" else [0, 1]
        for port in ports:
            value = g.in_values(node)[port]
            while value is not None and value.node not in params \
                    and g.op(value.node) in _WEIGHT_PATH:
                value = g.in_values(value.node)[0]
            if value is not None and value.node in params and value.node not in found:
                found.append(value.node)
    return found


def penalty_term(b: GraphBuilder, penalty: Penalty) -> Tensor:
    """Return ``penalty`` as a scalar of the graph ``b`` builds, over the values of its
    parameters, for the step's loss (autodiff then derives its gradient).

    >>> from graphc.interpret import run
    >>> b = GraphBuilder("penalized")
    >>> w = b.param("w", (2, 2), init=np.array([[3.0, -4.0], [0.0, 0.0]]))
    >>> _ = b.output(penalty_term(b, Penalty("l1", 0.5, ("w",))), "loss")
    >>> float(run(b.build(), {})["loss"])
    3.5
    """
    weights = [Tensor(b, Value(p)) for p in penalty.params]
    if penalty.kind == "l1":
        total = losses.l1_penalty(weights)
    elif penalty.kind == "l2":
        total = losses.l2_penalty(weights)
    else:
        norm = penalty.kind.split("_")[1]
        total = sum(losses.group_penalty(w, norm) for w in weights)  # type: ignore[assignment]
    return total * penalty.weight
