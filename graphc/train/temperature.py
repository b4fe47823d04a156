"""Softmax with a temperature, for teaching: the table and the plot of ``graphc explain``.

A teacher's logits ``z`` become the soft targets ``softmax(z / T)`` of distillation. T = 1 is the
ordinary softmax; a larger T softens the distribution until, as T -> infinity, every class gets
1/n; as T -> 0 it tends to the one-hot argmax. Every probability here is computed by graphc's own
``nn.softmax(z, temperature=T)`` on the interpreter, so what students see is what the compiler
runs.

>>> table = temperature_table([2.0, 1.0, 0.5, -1.0], [1.0, 100.0])
>>> [round(float(p), 4) for p in table.probs[0]]
[0.6095, 0.2242, 0.136, 0.0303]
>>> [round(float(p), 4) for p in table.probs[1]]
[0.2534, 0.2509, 0.2497, 0.246]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphc.errors import UsageError

# A teacher that is sure of class 0 and finds class 1 more alike than class 3: at T = 1 the
# wrong classes all look like ~0; at T = 4 their order, the "dark knowledge", shows.
DEFAULT_LOGITS: tuple[float, ...] = (6.0, 2.0, 1.0, -2.0)
DEFAULT_TEMPERATURES: tuple[float, ...] = (1.0, 2.0, 4.0, 20.0, 100.0)
# Points per decade of T on the plot's curves, and at most this many in all.
CURVE_DENSITY = 40
CURVE_POINTS = 401
_FLOAT_MAX = float(np.finfo(np.float64).max)


@dataclass(frozen=True)
class TemperatureTable:
    """softmax(logits / T) for each temperature: ``probs[i]`` is the row of ``temperatures[i]``,
    ``entropy[i]`` its entropy in bits."""

    logits: tuple[float, ...]
    temperatures: tuple[float, ...]
    probs: np.ndarray
    entropy: np.ndarray

    @property
    def classes(self) -> int:
        return len(self.logits)


def check_logits(logits: Sequence[float], where: str = "logits") -> tuple[float, ...]:
    """Return ``logits`` as floats; refuse fewer than two or a number that is not finite.

    >>> check_logits([2, 1])
    (2.0, 1.0)
    """
    values = tuple(float(v) for v in logits)
    if len(values) < 2:
        raise UsageError("softmax over fewer than two classes is always 1", where=where,
                         expected="at least 2 logits", got=len(values),
                         hint="Give one logit per class, e.g. 2,1,0.5,-1.")
    for v in values:
        if not math.isfinite(v):
            raise UsageError("a logit must be a finite number", where=where,
                             expected="finite numbers", got=_number(v))
    return values


def check_temperatures(temperatures: Sequence[float], where: str = "temperatures", *,
                       logits: Sequence[float] = ()) -> tuple[float, ...]:
    """Return ``temperatures`` as floats; refuse none, one that is not finite and > 0, or one so
    small that ``logits / T`` overflows.

    >>> check_temperatures([1, 4])
    (1.0, 4.0)
    """
    values = tuple(float(t) for t in temperatures)
    if not values:
        raise UsageError("no temperature given", where=where,
                         expected="at least one T > 0", got="none")
    big = max((abs(float(v)) for v in logits), default=0.0)
    for t in values:
        if not (math.isfinite(t) and t > 0):
            raise UsageError("a temperature must be positive and finite", where=where,
                             expected="T > 0", got=_number(t),
                             hint="T -> 0 is the one-hot argmax; T -> infinity the uniform 1/n.")
        # z / T must stay finite, or the softmax is inf - inf = nan.
        if not math.isfinite(big / t):
            raise UsageError("the temperature is too small for these logits", where=where,
                             expected=f"T > {big / _FLOAT_MAX:g}", got=_number(t),
                             hint="Any smaller T gives the one-hot argmax.")
    return values


def tempered_softmax(logits: Sequence[float], temperatures: Sequence[float]) -> np.ndarray:
    """Return softmax(logits / T) for each T as rows, run by graphc's interpreter in float64.

    >>> tempered_softmax([0.0, 0.0], [1.0]).tolist()
    [[0.5, 0.5]]
    """
    from graphc import nn
    from graphc.dsl import GraphBuilder
    from graphc.interpret import run

    z = np.asarray(check_logits(logits), np.float64)
    ts = check_temperatures(temperatures, logits=z)
    # float64 so that the printed digits are the softmax's, not float32 rounding.
    b = GraphBuilder("tempered_softmax", dtype=np.float64)
    x = b.input("z", (len(z),))
    for i, t in enumerate(ts):
        b.output(nn.softmax(x, temperature=t, name=f"softmax_{i}"), f"p_{i}")
    out = run(b.build(), {"z": z})
    return np.stack([out[f"p_{i}"] for i in range(len(ts))])


def entropy_bits(probs: np.ndarray) -> np.ndarray:
    """Return the entropy in bits of each row of ``probs`` (with 0 * log 0 = 0).

    >>> entropy_bits(np.array([[0.5, 0.5], [1.0, 0.0]])).tolist()
    [1.0, 0.0]
    """
    p = np.asarray(probs, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(p), 0.0)
    return terms.sum(axis=-1) + 0.0  # + 0.0 turns -0.0 into 0.0


def temperature_table(logits: Sequence[float] = DEFAULT_LOGITS,
                      temperatures: Sequence[float] = DEFAULT_TEMPERATURES) -> TemperatureTable:
    """Compute softmax(logits / T) and its entropy for each temperature.

    >>> table = temperature_table([1.0, 0.0], [1.0])
    >>> round(float(table.probs[0, 0]), 4), round(float(table.entropy[0]), 4)
    (0.7311, 0.8399)
    """
    z = check_logits(logits)
    ts = check_temperatures(temperatures, logits=z)
    probs = tempered_softmax(z, ts)
    return TemperatureTable(z, ts, probs, entropy_bits(probs))


def _number(v: float) -> str:
    return f"{v:g}"


def format_table(table: TemperatureTable, digits: int = 5) -> str:
    """Return the table: one row per temperature, its entropy, and the uniform 1/n last.

    >>> print(format_table(temperature_table([1.0, 0.0], [1.0, 100.0]), digits=4))
      T  class 0  class 1  entropy (bits)
      1   0.7311   0.2689           0.840
    100   0.5025   0.4975           1.000
    1/n   0.5000   0.5000           1.000
    """
    n = table.classes
    heads = [f"class {k}" for k in range(n)]
    t_col = [_number(t) for t in table.temperatures] + ["1/n"]
    t_width = max(len(s) for s in [*t_col, "T"])
    width = max(digits + 3, *(len(h) for h in heads))
    e_head = "entropy (bits)"
    rows = [list(r) for r in table.probs] + [[1.0 / n] * n]
    entropies = [*table.entropy, math.log2(n)]
    lines = ["  ".join([f"{'T':>{t_width}}", *(f"{h:>{width}}" for h in heads), e_head])]
    for t, row, h in zip(t_col, rows, entropies, strict=True):
        cells = [f"{p:>{width}.{digits}f}" for p in row]
        lines.append("  ".join([f"{t:>{t_width}}", *cells, f"{h:>{len(e_head)}.{digits - 1}f}"]))
    return "\n".join(lines)


def explanation(table: TemperatureTable) -> str:
    """Return the few lines that say what the table shows, with this table's numbers.

    >>> print(explanation(temperature_table([3.0, 3.0, 1.0, 0.0], [1.0])).splitlines()[-1])
    T -> infinity tends to the uniform 1/n = 0.25; T -> 0 to 1/2 on each tied max (classes 0, 1).
    """
    n = table.classes
    z = np.asarray(table.logits)
    top = [int(k) for k in np.flatnonzero(z == z.max())]
    if len(top) == 1:
        limit = f"the one-hot argmax (class {top[0]})"
    else:
        # Tied maxima share the mass: softmax never breaks a tie.
        limit = (f"1/{len(top)} on each tied max (classes "
                 + ", ".join(str(k) for k in top) + ")")
    return "\n".join([
        "T = 1 is the ordinary softmax; a larger T softens it: the small probabilities grow and "
        "their",
        "relative sizes, the teacher's \"dark knowledge\" (which wrong classes look alike), become "
        "visible.",
        f"T -> infinity tends to the uniform 1/n = {_number(1.0 / n)}; T -> 0 to {limit}.",
    ])


def _save(fig: object, path: Path) -> bytes:
    """Return the figure's file bytes, without the date or version that would make two runs
    differ."""
    from graphc.files import figure_bytes

    return figure_bytes(fig, path.suffix.lstrip(".").lower() or "png", dpi=110)


def plot_temperature(table: TemperatureTable, path: str | Path) -> None:
    """Draw each class's probability against T (log axis) and bars per temperature into
    ``path`` (written atomically; the same table gives the same bytes).

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.png"
    >>> plot_temperature(temperature_table([2.0, 1.0, 0.5, -1.0]), path)
    >>> path.read_bytes()[:4]
    b'\\x89PNG'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graphc.files import write_atomic

    path = Path(path)
    n = table.classes
    # The curves reach a little past the table's temperatures on both sides, within the Ts that
    # neither overflow z / T nor T itself.
    big = max(abs(v) for v in table.logits)
    lo = max(min(min(table.temperatures), 1.0) / 4, 4 * big / _FLOAT_MAX, 1e-300)
    hi = min(max(max(table.temperatures), 1.0) * 4, 1e300)
    points = round(math.log10(hi / lo) * CURVE_DENSITY) + 1
    grid = np.geomspace(lo, hi, min(max(points, 2), CURVE_POINTS))
    curves = tempered_softmax(table.logits, grid)

    fig, (ax_t, ax_bar) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = [f"C{k % 10}" for k in range(n)]
    for k in range(n):
        ax_t.plot(grid, curves[:, k], color=colors[k],
                  label=f"class {k} (z = {_number(table.logits[k])})")
    ax_t.axhline(1.0 / n, color="grey", ls="--", lw=1, label=f"1/n = {_number(1.0 / n)}")
    for t in table.temperatures:
        ax_t.axvline(t, color="grey", ls=":", lw=0.8)
    ax_t.set(xscale="log", xlabel="temperature T", ylabel="softmax(z / T)", ylim=(0, 1),
             title="probability of each class against T")
    ax_t.legend(fontsize="small", loc="center right")

    groups = [*(f"T = {_number(t)}" for t in table.temperatures), "1/n"]
    rows = [*table.probs, np.full(n, 1.0 / n)]
    step = 0.8 / n
    for k in range(n):
        xs = np.arange(len(groups)) - 0.4 + step * (k + 0.5)
        ax_bar.bar(xs, [r[k] for r in rows], width=step, color=colors[k], label=f"class {k}")
    ax_bar.set_xticks(np.arange(len(groups)), groups, fontsize="small")
    ax_bar.set(ylabel="softmax(z / T)", ylim=(0, 1), title="each temperature")
    for ax in (ax_t, ax_bar):
        ax.grid(alpha=0.3)
    fig.suptitle("softmax(z / T) for z = (" + ", ".join(_number(v) for v in table.logits) + ")")
    fig.tight_layout()
    data = _save(fig, path)
    plt.close(fig)
    write_atomic(path, data)
