"""The course's activations, their derivatives and the tanh/sigmoid identity, for teaching.

Each value is computed by graphc itself: ``f(x)`` by the interpreter on the op's numpy
reference, ``f'(x)`` by the gradient graph that ``graphc.autodiff`` builds from the op's sympy
formula (so the kinks follow the op records: Heaviside' = 0, ReLU'(0) = 0, LeakyReLU'(0) = 1).
``graphc explain activations`` prints the table and draws the curves.

>>> table = activation_table([-1.0, 0.0, 2.0])
>>> [float(v) for v in table.values["relu"]], [float(v) for v in table.slopes["relu"]]
([0.0, 0.0, 2.0], [0.0, 0.0, 1.0])
>>> float(table.slopes["sigmoid"][1])
0.25
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphc.errors import UsageError

# The course's activations, in its order, with the DSL function that builds each.
ACTIVATIONS = ("heaviside", "sigmoid", "tanh", "relu", "leaky_relu")
DEFAULT_POINTS: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
LEAKY_ALPHA = 0.1  # shown larger than nn.leaky_relu's default 0.01, so that the slope is visible
MAX_POINTS = 20


@dataclass(frozen=True)
class ActivationTable:
    """``values[name][i]`` = f(points[i]) and ``slopes[name][i]`` = f'(points[i])."""

    points: np.ndarray
    values: dict[str, np.ndarray]
    slopes: dict[str, np.ndarray]


def _graph(name: str, n: int):  # -> Graph
    from graphc import nn
    from graphc.dsl import GraphBuilder

    b = GraphBuilder(f"act_{name}", dtype=np.float64)
    x = b.input("x", (n,))
    fn = getattr(nn, name)
    y = fn(x, LEAKY_ALPHA, name="f") if name == "leaky_relu" else fn(x, name="f")
    b.output(y, "y")
    return b.build()


def activation_table(points: Sequence[float]) -> ActivationTable:
    """Return f(x) and f'(x) of every activation at ``points`` (float64)."""
    return _evaluate(check_points(points))


def _evaluate(x: np.ndarray) -> ActivationTable:
    from graphc.autodiff import gradient_graph
    from graphc.interpret import run

    values, slopes = {}, {}
    for name in ACTIVATIONS:
        g = _graph(name, len(x))
        values[name] = np.asarray(run(g, {"x": x})["y"], dtype=np.float64)
        # d(sum_i f(x_i))/dx_j = f'(x_j): the gradient of the summed output is the slope.
        slopes[name] = np.asarray(run(gradient_graph(g, wrt=["x"]), {"x": x})["dy/dx"],
                                  dtype=np.float64)
    return ActivationTable(x, values, slopes)


def check_points(points: Sequence[float], where: str = "points") -> np.ndarray:
    """Return ``points`` as a float64 array; refuse none, too many, or a non-finite one.

    >>> check_points([0, 1.5]).tolist()
    [0.0, 1.5]
    """
    x = np.asarray([float(p) for p in points], dtype=np.float64)
    if not 1 <= x.size <= MAX_POINTS:
        raise UsageError("wrong number of points", where=where,
                         expected=f"1 to {MAX_POINTS} numbers", got=x.size)
    if not np.isfinite(x).all():
        raise UsageError("points must be finite numbers", where=where, expected="finite",
                         got=", ".join(f"{v:g}" for v in x))
    return x


def format_table(table: ActivationTable) -> str:
    """Return the table as text: one row per activation, f(x) and f'(x) at each point."""
    head = ["activation", *[f"x={p:g}" for p in table.points]]
    rows = [head]
    for name in ACTIVATIONS:
        label = f"leaky_relu({LEAKY_ALPHA:g})" if name == "leaky_relu" else name
        rows.append([f"{label}", *[_num(v) for v in table.values[name]]])
        rows.append([f"  {label}'", *[_num(v) for v in table.slopes[name]]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _num(v: float) -> str:
    text = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def tanh_identity(points: Sequence[float]) -> tuple[float, bool]:
    """Check tanh(x) = 2 sigmoid(2x) - 1: the largest difference at ``points`` computed by
    graphc's Tanh and Sigmoid ops, and whether sympy proves the identity for every x."""
    import sympy as sp

    from graphc import nn
    from graphc.dsl import GraphBuilder
    from graphc.interpret import run

    x = check_points(points)
    b = GraphBuilder("tanh_identity", dtype=np.float64)
    t = b.input("x", (len(x),))
    b.output(nn.tanh(t, name="tanh"), "tanh")
    b.output(2.0 * nn.sigmoid(2.0 * t, name="sigmoid") - 1.0, "via_sigmoid")
    out = run(b.build(), {"x": x})
    difference = float(np.abs(out["tanh"] - out["via_sigmoid"]).max())
    s = sp.Symbol("x", real=True)
    proved = sp.simplify((sp.tanh(s) - (2 / (1 + sp.exp(-2 * s)) - 1)).rewrite(sp.exp)) == 0
    return difference, bool(proved)


def plot_activations(path: str | Path, low: float = -4.0, high: float = 4.0) -> None:
    """Draw every activation (solid) and its derivative (dashed), one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graphc.files import write_figure

    # An even count keeps 0 off the grid: the step's jump is drawn, not a point on it.
    table = _evaluate(np.linspace(low, high, 400))
    fig, axes = plt.subplots(1, len(ACTIVATIONS), figsize=(3.2 * len(ACTIVATIONS), 3.0),
                             sharey=True)
    for ax, name in zip(axes, ACTIVATIONS, strict=True):
        ax.plot(table.points, table.values[name], label="f(x)", color="tab:blue")
        ax.plot(table.points, table.slopes[name], "--", label="f'(x)", color="tab:red")
        ax.axhline(0, color="0.8", lw=0.8)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.set_title(f"leaky_relu ({LEAKY_ALPHA:g})" if name == "leaky_relu" else name)
        ax.set_xlabel("x")
    axes[0].legend(loc="upper left")
    fig.tight_layout()
    write_figure(fig, path)  # closes the figure
