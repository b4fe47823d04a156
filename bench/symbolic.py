"""Measure graphc's symbolic backprop on MLPs: the pipeline's phases, correctness, the size limit.

Cases, run in one process pinned to one thread (and one core when the OS allows), interleaved
round-robin so that a slow spell of the machine hits every case alike; the tables report the
median and the minimum over the repeats.

- ``MLP a-h-o act``: written with ``graphc.GraphBuilder``: input ``x`` of shape (1, a),
  ``nn.linear(init="xavier")`` + activation for each layer, the output is the last activation.
  Sizes 2-2-1, 4-8-1, 8-16-4, 16-32-10 and 64-32-10; activations sigmoid, tanh and relu. The
  point is ``x`` drawn uniformly from [-1, 1] (seed 0) and the parameters as initialized; the
  objective is the sum of the outputs, as ``backprop()`` takes it.

The phases of the full pipeline, timed in one run, each from the end of the previous one:

1. ``forward``: the size check from shapes (``symbolic._check_size``, when there is a limit),
   the scalar expansion, ``symbolic._Expander(...).expand()`` (one sympy symbol per scalar node,
   with its local expression and its float64 value), and the objective's Sum node: the first
   half of ``backprop()``, called the way it calls them.
2. ``backprop``: the reverse pass, ``symbolic._wrt`` + ``BackpropResult`` + ``symbolic._reverse``
   (the second half of ``backprop()``). The correctness check below runs ``backprop()`` itself
   and checks that the split computes exactly the same values and gradients.
3. ``cse``: the shared subexpressions of the formulas. For graphs of at most
   ``closed_form_limit`` (40) scalar nodes, ``BackpropResult.formulas()`` substitutes the program
   into a closed form and runs ``sympy.cse(order="none")`` on it: that part of ``formulas()`` is
   timed (without printing). For larger graphs the node-by-node program is the shared form:
   ``result.program()`` is timed.
4. ``evaluator``: ``result.evaluator()``, the program compiled to a Python function.
5. ``total``: 1-4.

sympy's expression cache is cleared before every run (outside the timing), so each run costs
what the first run of a fresh process costs; the one-time derivative of each activation
(``symbolic.derivative_in_terms_of_output``, cached for the process) is timed once, apart.
Target (from the issue): the full pipeline for 16-32-10 sigmoid (874 parameters) in at most 1 s
and for 64-32-10 sigmoid (2,410) in at most 2 s on one core.

Correctness, for every MLP, after the timed rounds: ``backprop()`` (the public call) against the
split pipeline (the same values and gradients, exactly), the compiled evaluator's outputs at the
point against ``backprop()``'s values (equal up to summation order: relative difference
<= 1e-12), and central finite differences (``result.finite_differences(h=1e-6)``) against the
gradients: max over every input and parameter of |g - fd| / max(|g|, |fd|, 1e-4), which must be
<= 1e-4 (their rounding noise is ~1e-9 absolute; a wrong gradient shows an error near 1). A ReLU
MLP whose units are all dead at the point (every gradient 0) is checked again at |x| with every
parameter replaced by its absolute value.

Calibration of ``symbolic.DEFAULT_LIMIT`` (which counts scalar edges: the sum over the inner
scalar nodes of their number of inputs): one run each of bigger sigmoid MLPs (128-64-10,
256-64-10, 784-32-10, 784-64-10, ...) without a limit, stopping after the first run of 20 s or
more, or when the next run would not fit in the sweep budget (default 180 s); the total time is
fitted linearly in the scalar edges (least squares on relative residuals, over the sweep and
the main sigmoid MLPs of 1,000 edges or more), and the number of edges at which a run reaches
30 s is printed. When the budget allows, one more run, of the MLP with the sweep's input and
output sizes whose edges are nearest that number, checks the prediction (it is not in the fit).

Run it from the repository root::

    python bench/symbolic.py                   # 7 repeats after a warm-up round, ~5 minutes
    python bench/symbolic.py --repeats 15      # steadier medians
    python bench/symbolic.py --quick           # smoke run: 1 repeat, small sweep
    python bench/symbolic.py --sweep-budget 0  # no calibration sweep

It prints markdown tables (phases, correctness, calibration) and the machine; progress goes to
stderr. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import functools
import gc
import inspect
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# harness sets the thread-pool variables when imported: it must come before numpy, which reads
# them once. The split keeps isort from moving it below numpy.
import harness
from harness import Info, Stages, Timings, fmt_e, fmt_n, log, md_table, verdict

# isort: split

import numpy as np
import sympy as sp

import graphc
from graphc import nn, symbolic

SIZES: tuple[tuple[int, ...], ...] = ((2, 2, 1), (4, 8, 1), (8, 16, 4), (16, 32, 10),
                                      (64, 32, 10))
QUICK_SIZES: tuple[tuple[int, ...], ...] = ((2, 2, 1), (4, 8, 1), (16, 32, 10))
ACTIVATIONS = ("sigmoid", "tanh", "relu")
OP_OF = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}
# The targets: total pipeline time of a sigmoid MLP on one core.
TARGETS_S = {(16, 32, 10): 1.0, (64, 32, 10): 2.0}
SWEEP: tuple[tuple[int, ...], ...] = ((128, 64, 10), (256, 64, 10), (784, 32, 10),
                                      (784, 64, 10), (784, 128, 10))
QUICK_SWEEP: tuple[tuple[int, ...], ...] = ((32, 32, 10), (64, 64, 10), (128, 32, 10))
LIMIT_TARGET_S = 30.0  # a run at the default limit should take about this long
SWEEP_STOP_S = 20.0  # the sweep stops after a run this long
FIT_MIN_EDGES = 1_000  # main-table points used in the fit (smaller ones are all overhead)
EQUAL_RTOL = 1e-12  # evaluator vs backprop(): "equal" up to float64 summation order
EQUAL_FLOOR = 1e-12  # denominator floor of that relative difference
FD_H = 1e-6  # central differences (f(p + h) - f(p - h)) / 2h
# Their rounding noise is ~eps |f| / h ~ 1e-9 absolute here: the relative error of a component
# is taken against max(|g|, |fd|, FD_FLOOR), and a wrong gradient would show an error near 1.
FD_FLOOR = 1e-4
FD_RTOL = 1e-4

PHASES = ("forward", "backprop", "cse", "evaluator", "total")


# Durations under 1 ms are shown in whole microseconds (the cse phase of the small MLPs).
fmt_s = functools.partial(harness.fmt_s, us_digits=0)


@dataclass
class Case(Stages):
    """One MLP: ``run()`` times the pipeline's phases and returns them with facts to report."""

    sizes: tuple[int, ...]
    activation: str
    limit: int | None = symbolic.DEFAULT_LIMIT

    @property
    def name(self) -> str:
        return f"{'-'.join(str(n) for n in self.sizes)} {self.activation}"

    def run(self) -> tuple[Timings, Info]:
        g = build_mlp(self.sizes, self.activation)
        timings, info, _ = run_pipeline(g, point(self.sizes), self.limit)
        info["params"] = g.num_params()
        return timings, info


# ----- the pipeline -------------------------------------------------------------------------


def build_mlp(sizes: Sequence[int], activation: str) -> graphc.Graph:
    """Return an MLP ``sizes[0]-...-sizes[-1]``, batch 1, an activation after every layer."""
    b = graphc.GraphBuilder(f"mlp_{'_'.join(str(n) for n in sizes)}_{activation}")
    h = b.input("x", (1, sizes[0]))
    act = getattr(nn, activation)
    for n in sizes[1:]:
        h = act(nn.linear(h, n, init="xavier"))
    b.output(h, "y")
    return b.build()


def point(sizes: Sequence[int]) -> dict[str, np.ndarray]:
    """Return the input point: x uniform in [-1, 1], seed 0."""
    return {"x": np.random.default_rng(0).uniform(-1.0, 1.0, size=(1, sizes[0]))}


def closed_form_limit() -> int:
    """Return ``formulas()``'s default ``closed_form_limit`` (40 today)."""
    return inspect.signature(symbolic.BackpropResult.formulas).parameters[
        "closed_form_limit"].default


def expand(g: graphc.Graph, at: Mapping[str, Any], limit: int | None
           ) -> tuple[symbolic._Expander, sp.Symbol]:
    """The first half of ``backprop()``: the size check, the scalar expansion, the objective."""
    if limit is not None:
        symbolic._check_size(g, limit)
    ex = symbolic._Expander(g, at, limit, False)
    ex.expand()
    nodes = ex.nodes
    out_value = symbolic._pick_output(g, None)
    cells = list(ex.env[out_value].reshape(-1))
    if len(cells) == 1 and isinstance(cells[0], sp.Symbol) and cells[0] in nodes:
        objective = cells[0]
    else:
        objective = ex.inner(f"sum({g.value_name(out_value)})", "Sum", out_value.node, (),
                             sp.Add(*cells))
        nodes[objective].value = float(sum(symbolic._val(nodes, c) for c in cells))
    return ex, objective


def reverse(g: graphc.Graph, ex: symbolic._Expander, objective: sp.Symbol
            ) -> symbolic.BackpropResult:
    """The second half of ``backprop()``: the reverse pass over every input and parameter."""
    wrt = symbolic._wrt(g, ex.nodes, None)
    result = symbolic.BackpropResult(g, ex.nodes, objective, wrt, {}, {}, {},
                                     straight_through=False)
    symbolic._reverse(result)
    return result


def shared_form(result: symbolic.BackpropResult) -> tuple[str, int]:
    """Build what ``formulas()`` shares: return (kind, number of shared definitions).

    Small graphs: the closed-form gradients with ``sympy.cse`` (as ``formulas()`` does it);
    larger ones: the node-by-node program.
    """
    prog = result.program()
    if len(result.nodes) > closed_form_limit():
        return "program", len(prog)
    wanted = [result.adjoints[s] for s in result.wrt if s in result.adjoints]
    subs: dict[sp.Symbol, sp.Expr] = {}
    for s, e in prog:
        subs[s] = e.xreplace(subs)
    closed = [subs.get(a, a) for a in wanted]
    shared, _ = sp.cse(closed, order="none", symbols=sp.numbered_symbols("c", real=True))
    return "closed form + cse", len(shared)


def run_pipeline(g: graphc.Graph, at: Mapping[str, Any], limit: int | None
                 ) -> tuple[Timings, Info, symbolic.BackpropResult]:
    """Time the phases of one run of the full pipeline on ``g`` at ``at``."""
    sp.core.cache.clear_cache()  # a fresh process's cost, not a warm cache's
    gc.collect()  # the previous run's garbage is not this run's cost
    t0 = time.perf_counter()
    ex, objective = expand(g, at, limit)
    t1 = time.perf_counter()
    result = reverse(g, ex, objective)
    t2 = time.perf_counter()
    kind, shared = shared_form(result)
    t3 = time.perf_counter()
    result.evaluator()
    t4 = time.perf_counter()
    nodes = result.nodes
    info = {"nodes": len(nodes), "inner": sum(not n.is_leaf for n in nodes.values()),
            "edges": ex.edges, "cse": kind, "shared": shared, "steps": len(result.steps_list)}
    timings = {"forward": t1 - t0, "backprop": t2 - t1, "cse": t3 - t2, "evaluator": t4 - t3,
               "total": t4 - t0}
    return timings, info, result


def first_call_costs() -> dict[str, float]:
    """Time ``derivative_in_terms_of_output`` once per activation (cached for the process)."""
    out = {}
    for act, op in OP_OF.items():
        t0 = time.perf_counter()
        symbolic.derivative_in_terms_of_output(op)
        out[act] = time.perf_counter() - t0
    return out


# ----- correctness --------------------------------------------------------------------------


def check(case: Case) -> list[dict[str, Any]]:
    """Compare backprop(), the split pipeline, the evaluator and finite differences.

    When every gradient is 0 at the point (a ReLU MLP whose units are all dead there), the check
    is repeated at |x| with every parameter replaced by its absolute value, where every unit is
    active.
    """
    g = build_mlp(case.sizes, case.activation)
    at: dict[str, Any] = point(case.sizes)
    out = [check_at(g, at, case.limit, "")]
    if out[0]["max_grad"] == 0:
        at = {"x": np.abs(at["x"])}
        for node in g.nx.nodes:
            data = g.nx.nodes[node]
            if data.get("trainable"):
                at[node] = np.abs(data["value"].astype(np.float64))
        out.append(check_at(g, at, case.limit, " at abs(x), abs(params)"))
    return out


def check_at(g: graphc.Graph, at: Mapping[str, Any], limit: int | None, label: str
             ) -> dict[str, Any]:
    r = symbolic.backprop(g, at, limit=limit)
    _, _, split = run_pipeline(g, at, limit)
    same = (list(map(str, r.nodes)) == list(map(str, split.nodes))
            and all(r.nodes[s].value == split.nodes[t].value
                    or math.isnan(r.nodes[s].value) and math.isnan(split.nodes[t].value)
                    for s, t in zip(r.nodes, split.nodes, strict=True))
            and [r.gradient_values[s] for s in r.wrt]
            == [split.gradient_values[s] for s in split.wrt])
    leaves = r.leaves()
    outs = r.evaluator()(*[r.nodes[s].value for s in leaves])
    f_eval, grads_eval = float(outs[0]), np.array([float(v) for v in outs[1:]])
    f = r.nodes[r.objective].value
    grads = np.array([r.gradient_values[s] for s in r.wrt])
    eval_rel = float(np.max(np.abs(grads - grads_eval)
                            / np.maximum(np.maximum(np.abs(grads), np.abs(grads_eval)),
                                         EQUAL_FLOOR)))
    fd_map = r.finite_differences(h=FD_H)
    fd = np.array([fd_map[s] for s in r.wrt])
    fd_abs = np.abs(grads - fd)
    fd_rel = float(np.max(fd_abs / np.maximum(np.maximum(np.abs(grads), np.abs(fd)), FD_FLOOR)))
    return {"label": label, "same": same, "f": f,
            "f_eval_rel": abs(f - f_eval) / max(abs(f), EQUAL_FLOOR), "eval_rel": eval_rel,
            "fd_rel": fd_rel, "fd_abs": float(np.max(fd_abs)),
            "max_grad": float(np.max(np.abs(grads))), "zero": int(np.sum(grads == 0)),
            "wrt": len(grads)}


# ----- calibration --------------------------------------------------------------------------


def linear_fit(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``seconds = a + b * edges`` on relative residuals: return (a, b).

    Weighting each residual by 1 / seconds keeps the small runs from being ignored next to the
    big ones (plain least squares would fit the 20 s runs and miss the 0.4 s ones by 2x).
    """
    x = np.array([e for e, _ in points], dtype=float)
    y = np.array([t for _, t in points], dtype=float)
    b, a = np.polyfit(x, y, 1, w=1.0 / y)
    return float(a), float(b)


def loglog_slope(points: Sequence[tuple[int, float]]) -> float:
    """Exponent k of ``seconds ~ edges**k`` (1 = linear), by least squares on logs."""
    x = np.log([e for e, _ in points])
    y = np.log([t for _, t in points])
    return float(np.polyfit(x, y, 1)[0])


def predicted_edges(sizes: Sequence[int]) -> int:
    """Scalar edges of an MLP, counted as the expansion counts them (checked after each run).

    Each Gemm output reads its inputs, weights and bias (2 * fan_in + 1), each activation one
    value, and the objective sums the outputs (none when there is a single output).
    """
    edges = 0
    for a, h in zip(sizes, sizes[1:], strict=False):
        edges += h * (2 * a + 1) + h
    return edges + (sizes[-1] if sizes[-1] > 1 else 0)


def sweep_run(sizes: tuple[int, ...], predicted: float) -> dict[str, Any]:
    """Run the pipeline once on a sigmoid MLP without a limit; return its facts and times."""
    name = "-".join(str(n) for n in sizes)
    edges = predicted_edges(sizes)
    log(f"sweep: {name} sigmoid, {edges:,} edges, predicted {predicted:.1f} s ...")
    g = build_mlp(sizes, "sigmoid")
    timings, info, result = run_pipeline(g, point(sizes), None)
    del result
    if info["edges"] != edges:
        raise AssertionError(f"{name}: {info['edges']} edges, predicted {edges}")
    log(f"sweep: {name}: " + ", ".join(f"{k} {fmt_s(timings[k])}" for k in PHASES))
    return {"name": f"{name} sigmoid", "sizes": sizes, "params": g.num_params(),
            "estimate": symbolic.estimate_edges(g), "rss": peak_rss_mib(),
            "predicted": predicted, **info, **timings}


def peak_rss_mib() -> float | None:
    """The process's peak resident memory so far, in MiB (None where unknown)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def sweep(sizes_list: Sequence[tuple[int, ...]], base: list[tuple[int, float]], budget: float
          ) -> tuple[list[dict[str, Any]], str, float]:
    """Run bigger sigmoid MLPs once each; return the runs, why the sweep stopped, the time."""
    runs: list[dict[str, Any]] = []
    spent = 0.0
    for sizes in sizes_list:
        edges = predicted_edges(sizes)
        points = base + [(r["edges"], r["total"]) for r in runs]
        a, b = linear_fit(points) if len(points) >= 2 else (0.0, 0.0)
        guess = a + b * edges
        name = "-".join(str(n) for n in sizes)
        if spent + guess > budget:
            return runs, (f"stopped before {name} ({edges:,} edges): the fit predicts "
                          f"{guess:.0f} s, over what is left of the {budget:.0f} s budget"), spent
        run = sweep_run(sizes, guess)
        spent += run["total"]
        runs.append(run)
        if run["total"] >= SWEEP_STOP_S:
            return runs, f"stopped after {name}: its run took {run['total']:.1f} s", spent
    return runs, "ran every size", spent


def limit_check(runs: list[dict[str, Any]], base: list[tuple[int, float]], budget: float
                ) -> dict[str, Any] | None:
    """Run once the MLP (the sweep's largest input and output, hidden size chosen) whose edges
    are nearest to where the fit reaches LIMIT_TARGET_S; None when it does not fit the budget.

    This run checks the fit; it is not part of it.
    """
    points = base + [(r["edges"], r["total"]) for r in runs]
    if len(points) < 2 or not runs:
        return None
    a, b = linear_fit(points)
    target = (LIMIT_TARGET_S - a) / b
    first, last = runs[-1]["sizes"][0], runs[-1]["sizes"][-1]
    sizes = min(((first, h, last) for h in range(1, 4_097)),
                key=lambda s: abs(predicted_edges(s) - target))
    guess = a + b * predicted_edges(sizes)
    if guess > budget:
        return None
    return sweep_run(sizes, guess)


# ----- running and reporting ----------------------------------------------------------------


def phase_table(cases: list[Case]) -> str:
    rows = []
    for c in cases:
        target = TARGETS_S.get(c.sizes) if c.activation == "sigmoid" else None
        med = c.median("total")
        met = "" if target is None else verdict(med <= target)
        rows.append([c.name, fmt_n(c.info["params"]), fmt_n(c.info["nodes"]),
                     fmt_n(c.info["edges"])]
                    + [f"{fmt_s(c.median(p))} ({fmt_s(c.min(p))})" for p in PHASES]
                    + ["" if target is None else f"<= {fmt_s(target)}", met])
    head = ["MLP", "params", "scalar nodes", "scalar edges", "forward", "backprop", "cse",
            "evaluator", "total", "target", "verdict"]
    return md_table(head, rows, "lrrrrrrrrll")


def check_table(cases: list[Case], checks: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for c in cases:
        for k in checks[c.name]:
            ok = (k["same"] and k["eval_rel"] <= EQUAL_RTOL and k["f_eval_rel"] <= EQUAL_RTOL
                  and k["fd_rel"] <= FD_RTOL)
            rows.append([c.name + k["label"], f"{k['f']:.6g}", "yes" if k["same"] else "**NO**",
                         fmt_e(max(k["eval_rel"], k["f_eval_rel"])), fmt_e(k["fd_rel"]),
                         fmt_e(k["fd_abs"]), f"{k['max_grad']:.3g}",
                         f"{k['zero']:,} / {k['wrt']:,}", "ok" if ok else "**FAILED**"])
    head = ["MLP", "objective", "split == backprop()", "evaluator vs backprop() (max rel.)",
            "finite diff. max rel. err", "finite diff. max abs err", "max abs gradient",
            "zero gradients", "verdict"]
    return md_table(head, rows, "lrlrrrrrl")


def calibration(cases: list[Case], runs: list[dict[str, Any]], why: str,
                check_run: dict[str, Any] | None) -> list[str]:
    shown = runs + ([check_run] if check_run else [])
    rows = [[r["name"] + (" (check)" if r is check_run else ""), fmt_n(r["params"]),
             fmt_n(r["nodes"]), fmt_n(r["edges"]), fmt_n(r["estimate"])]
            + [fmt_s(r[p]) for p in PHASES]
            + [f"{r['total'] / r['edges'] * 1e6:.0f} us",
               "" if r["rss"] is None else f"{r['rss']:,.0f} MiB"] for r in shown]
    base = [(c.info["edges"], c.median("total"), c.median("forward") + c.median("backprop"))
            for c in cases if c.activation == "sigmoid" and c.info["edges"] >= FIT_MIN_EDGES]
    points = [(e, t) for e, t, _ in base] + [(r["edges"], r["total"]) for r in runs]
    lines = ["**Calibration of the size limit** (sigmoid MLPs, one run each, no limit; "
             f"{why}):", ""]
    lines.append(md_table(["MLP", "params", "scalar nodes", "scalar edges",
                           "estimate_edges()", *PHASES, "total per edge", "peak RSS"],
                          rows, "lrrrrrrrrrrr")
                 if rows else "(no sweep run)")
    lines.append("")
    if len(points) < 2:
        lines.append("- not enough points for a fit")
        return lines
    a, b = linear_fit(points)
    k = loglog_slope(points)
    at_target = (LIMIT_TARGET_S - a) / b
    bp_points = [(e, t) for e, _, t in base] + [(r["edges"], r["forward"] + r["backprop"])
                                                 for r in runs]
    a2, b2 = linear_fit(bp_points)
    largest = max(e for e, _ in points)
    how = ("interpolated" if largest >= at_target else
           f"extrapolated beyond the largest run of the fit ({largest:,} edges)")
    residual = max(abs(t - (a + b * e)) / t for e, t in points)
    per_edge = [r["total"] / r["edges"] for r in runs]
    lines += [
        f"- fit over {len(points)} points (main-table sigmoid medians with >= "
        f"{FIT_MIN_EDGES:,} edges, then the sweep; not the check run): total = {a:.3f} s + "
        f"{b * 1e6:.1f} us x edges (least squares on relative residuals); largest relative "
        f"residual {residual:.0%}; log-log slope {k:.2f} (1 = linear)",
        f"- **a full pipeline run reaches {LIMIT_TARGET_S:.0f} s at about "
        f"{at_target:,.0f} scalar edges** ({how}); backprop() alone (forward + backprop: "
        f"{a2:.3f} s + {b2 * 1e6:.1f} us x edges) reaches it at about "
        f"{(LIMIT_TARGET_S - a2) / b2:,.0f}",
    ]
    ratios = [r["estimate"] / r["edges"] for r in shown]
    if ratios:
        lines.append(f"- the size check before the expansion compares estimate_edges() (from "
                     f"shapes) with the limit: it is {min(ratios):.4f}-{max(ratios):.4f} times "
                     "the counted edges here, so the same number serves both")
    if per_edge:
        lo, hi = min(per_edge), max(per_edge)
        lines.append(f"- the sweep's cost per edge ranged {lo * 1e6:.0f}-{hi * 1e6:.0f} us: "
                     f"{LIMIT_TARGET_S:.0f} s at {LIMIT_TARGET_S / hi:,.0f}-"
                     f"{LIMIT_TARGET_S / lo:,.0f} edges")
    if check_run:
        lines.append(f"- check run at the predicted point: {check_run['name']}, "
                     f"{check_run['edges']:,} edges, total {check_run['total']:.1f} s "
                     f"(the fit predicted {check_run['predicted']:.1f} s)")
    lines.append(f"- current DEFAULT_LIMIT = {symbolic.DEFAULT_LIMIT:,} edges: a full run at the "
                 f"limit is predicted to take {a + b * symbolic.DEFAULT_LIMIT:.1f} s")
    return lines


def machine(core: int | None) -> list[str]:
    return harness.machine_lines(core, [sp, graphc])


def report(cases: list[Case], checks: dict[str, list[dict[str, Any]]], first: dict[str, float],
           runs: list[dict[str, Any]], why: str, check_run: dict[str, Any] | None,
           repeats: int, core: int | None, quick: bool, budget: float) -> str:
    lines = [harness.heading("Symbolic backprop", quick), "",
             f"Median (min) over {harness.plural(repeats, 'repeat')} (cases interleaved"
             " round-robin), one thread, sympy's cache cleared before each run; verdicts compare"
             " the median total with the target.", "", phase_table(cases), "",
             "- cse: for " + (", ".join(c.name for c in cases if c.info["cse"] != "program")
                              or "no MLP")
             + f" (<= {closed_form_limit()} scalar nodes) the closed form + sympy.cse of "
             "formulas(); for every other MLP result.program()",
             "- first call in a process (derivative_in_terms_of_output, cached, not in the "
             "table): " + ", ".join(f"{k} {fmt_s(v)}" for k, v in first.items()), "",
             "**Correctness** (at the point; relative errors as described in the script's "
             "docstring):", "", check_table(cases, checks), ""]
    if budget > 0:
        lines += calibration(cases, runs, why, check_run)
    lines += machine(core)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = harness.arg_parser(__doc__, "smoke run: 1 round, no warm-up, 3 sizes, small sweep")
    parser.add_argument("--sweep-budget", type=float, default=180.0, metavar="S",
                        help="seconds the calibration sweep may take (default 180; 0: none)")
    args = harness.parse_args(parser, argv)

    core = harness.pin_to_one_core()
    first = first_call_costs()
    repeats, warmup = harness.repeats_and_warmup(args)
    sizes = QUICK_SIZES if args.quick else SIZES
    cases = [Case(s, act) for s in sizes for act in ACTIVATIONS]
    # run_pipeline() collects the garbage itself, after clearing sympy's cache.
    harness.run_rounds(cases, repeats, warmup, collect=False, fmt=fmt_s)
    checks: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        checks[case.name] = check(case)
        for k in checks[case.name]:
            log(f"check: {case.name}{k['label']}: same {k['same']}, evaluator "
                f"{fmt_e(k['eval_rel'])}, finite differences {fmt_e(k['fd_rel'])}")
    runs: list[dict[str, Any]] = []
    why = "not run"
    check_run = None
    if args.sweep_budget > 0:
        base = [(c.info["edges"], c.median("total")) for c in cases
                if c.activation == "sigmoid" and c.info["edges"] >= FIT_MIN_EDGES]
        runs, why, spent = sweep(QUICK_SWEEP if args.quick else SWEEP, base, args.sweep_budget)
        if not args.quick:  # a ~30 s run: not for a smoke run
            check_run = limit_check(runs, base, args.sweep_budget - spent)
    print(report(cases, checks, first, runs, why, check_run, repeats, core, args.quick,
                 args.sweep_budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
