"""Measure graphc's inference pipeline against onnxoptimizer and onnxsim: nodes, exactness, speed.

Everything runs in one process on one thread (and one core when the OS allows). For each zoo
model ``cnn``, ``residual`` and ``resnet18`` (``graphc.models.load(name).build()``), four ONNX
files are compared:

- ``before``: ``graphc.to_bytes`` of the graph as built, no passes;
- ``graphc``: ``run_pipeline(g, resolve(pipeline="inference"))`` then ``graphc.to_bytes``;
- ``onnxoptimizer``: ``onnxoptimizer.optimize`` of the before-file with ``ONNXOPTIMIZER_PASSES``;
- ``onnxsim``: ``onnxsim.simplify`` of the before-file (default options).

onnxoptimizer and onnxsim are not graphc dependencies: when one is missing its rows say "not
installed". The script prints these tables:

1. Node counts, BatchNormalization / Dropout nodes left, file sizes, and the max abs difference
   of each file's outputs from the before-file's on onnxruntime (graph optimizations disabled,
   so that onnxruntime's own Conv+BN fusion does not hide a difference), on
   ``example_inputs(seed)`` for three seeds. Relative = max abs diff / max |before output|.
   Targets: graphc's node count <= onnxsim's; relative difference <= 1e-5.
2. The same exactness check after giving every BatchNormalization random statistics and every
   Conv/Gemm bias random values: the zoo's BNs are initialized to the identity (mean 0, var 1,
   gamma 1, beta 0), where a fold with a wrong axis would go unnoticed.
3. The time of graphc's inference pipeline (and with ``to_bytes``), with ``onnxoptimizer.optimize``
   and ``onnxsim.simplify`` of a parsed ModelProto as references; median and min over interleaved
   rounds. Target: resnet18's pipeline <= 1 s. When missed, a cProfile summary is printed.
4. onnxruntime latency of the four files, one thread (intra_op_num_threads=1,
   inter_op_num_threads=1, ORT_SEQUENTIAL), with ORT_DISABLE_ALL and ORT_ENABLE_ALL: the median
   and min per-call time over many calls, all sessions of a model interleaved round-robin in
   blocks of ~5 ms, and the ratio to "before" in the same mode (the median over rounds of the
   ratio of the two sessions' block medians in that round, so slow spells cancel out).
5. Coverage on small synthetic models (random BN statistics and biases): ConvTranspose+BN,
   Gemm+BN (transB=1), MatMul+Add+BN, MatMul+BN, Conv+BN and Dropout(ratio 0.5), exported at
   opset 17 and at ``graphc.onnxio.export.max_opset()``, plus a Dropout at opset 13 written with
   ``onnx.helper`` (graphc's column needs ``graphc.onnxio.importer``; skipped when it is absent).
   Target: no BatchNormalization / Dropout left by graphc, outputs within 1e-5 relative.

A summary table gives one verdict per target of the issue.

Run it from the repository root::

    python bench/passes.py               # 7 timed rounds after a warm-up round, ~2 minutes
    python bench/passes.py --repeats 15  # steadier medians
    python bench/passes.py --quick       # smoke run: 1 round, short latency loops

The tables go to stdout, progress to stderr. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import cProfile
import functools
import gc
import importlib
import importlib.util
import io
import pstats
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

# harness sets the thread-pool variables when imported: it must come before numpy (and
# onnxruntime), which read them once. The split keeps isort from moving it below numpy.
import harness
from harness import (
    Case,
    Info,
    Row,
    Timings,
    fmt_bytes,
    fmt_e,
    log,
    md_table,
    timing_row,
    timing_table,
    verdict,
)

# isort: split

import networkx
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import graphc
from graphc import models, nn
from graphc.ir import CONST, Graph, Value
from graphc.onnxio.export import max_opset
from graphc.pipeline import resolve, run_pipeline

ZOO = ("cnn", "residual", "resnet18")
TOOLS = ("graphc", "onnxoptimizer", "onnxsim")
FILES = ("before",) + TOOLS
ONNXOPTIMIZER_PASSES = ["eliminate_nop_dropout", "fuse_bn_into_conv", "eliminate_identity",
                        "eliminate_deadend"]
REL_TOL = 1e-5
PIPELINE_TARGET_S = 1.0
SEEDS = (0, 1, 2)
LEVELS = {"DISABLE_ALL": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
          "ENABLE_ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


# Durations under 1 ms are shown in microseconds with one decimal (latency of the small models).
fmt_s = functools.partial(harness.fmt_s, us_digits=1)


# ----- the files compared -------------------------------------------------------------------


@dataclass
class Tools:
    """The optional comparison tools (None when not installed)."""

    onnxoptimizer: ModuleType | None
    onnxsim: ModuleType | None

    def module(self, tool: str) -> ModuleType | None:
        return getattr(self, tool)


def run_graphc(g: Graph, opset: int | None = None) -> bytes:
    """Return the file of ``g`` after graphc's inference pipeline."""
    new, _ = run_pipeline(g, resolve(pipeline="inference"))
    return graphc.to_bytes(new, opset)


def run_onnxoptimizer(mod: ModuleType, model: onnx.ModelProto) -> onnx.ModelProto:
    return mod.optimize(model, ONNXOPTIMIZER_PASSES)


def run_onnxsim(mod: ModuleType, model: onnx.ModelProto) -> onnx.ModelProto:
    simplified, ok = mod.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim's own check of the simplified model failed")
    return simplified


def transform(tool: str, tools: Tools, before: bytes) -> tuple[bytes | None, str]:
    """Return (bytes, "") of ``tool`` applied to the before-file, or (None, why not)."""
    mod = tools.module(tool)
    if mod is None:
        return None, "not installed"
    fn = run_onnxoptimizer if tool == "onnxoptimizer" else run_onnxsim
    try:
        return fn(mod, onnx.load_from_string(before)).SerializeToString(), ""
    except Exception as err:  # noqa: BLE001 - a tool's failure is a result to report
        return None, f"error: {type(err).__name__}: {str(err).splitlines()[0][:80]}"


def op_counts(data: bytes) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load_from_string(data).graph.node)


# ----- onnxruntime --------------------------------------------------------------------------


def session(data: bytes, level: str = "DISABLE_ALL") -> ort.InferenceSession:
    """Return a one-thread, sequential CPU session with the given graph optimization level."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = LEVELS[level]
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def outputs(sess: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return sess.run(None, dict(feeds))


def difference(before: bytes, after: bytes, feeds: Sequence[Mapping[str, np.ndarray]]
               ) -> tuple[float, float]:
    """Return (max abs diff, that / max |before output|) over ``feeds``, both without ORT opts."""
    ref, new = session(before), session(after)
    worst_abs, scale = 0.0, 0.0
    for feed in feeds:
        for a, b in zip(outputs(ref, feed), outputs(new, feed), strict=True):
            a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
            if a64.shape != b64.shape:
                raise AssertionError(f"output shapes differ: {a64.shape} vs {b64.shape}")
            if a64.size:
                worst_abs = max(worst_abs, float(np.max(np.abs(a64 - b64))))
                scale = max(scale, float(np.max(np.abs(a64))))
    return worst_abs, worst_abs / scale if scale else worst_abs


# ----- random statistics --------------------------------------------------------------------


def randomize(g: Graph, seed: int = 0) -> Graph:
    """Give every BatchNormalization random statistics and every conv/linear bias random values.

    Changes ``g`` in place (the arrays are replaced, not written into) and returns it.
    """
    rng = np.random.default_rng(seed)

    def put(v: Value | None, make: Callable[[tuple[int, ...]], np.ndarray]) -> None:
        if v is None or g.op(v.node) != CONST:
            return
        old = g.nx.nodes[v.node]["value"]
        new = np.asarray(make(old.shape), dtype=old.dtype)
        new.flags.writeable = False
        g.nx.nodes[v.node]["value"] = new

    for node in g.op_nodes():
        ins = g.in_values(node)
        if g.op(node) == "BatchNormalization":
            put(ins[1], lambda s: rng.uniform(0.5, 1.5, s))   # gamma
            put(ins[2], lambda s: rng.normal(0.0, 0.5, s))    # beta
            put(ins[3], lambda s: rng.normal(0.0, 0.5, s))    # running mean
            put(ins[4], lambda s: rng.uniform(0.25, 2.0, s))  # running variance
        elif g.op(node) in ("Conv", "ConvTranspose", "Gemm") and len(ins) > 2:
            put(ins[2], lambda s: rng.normal(0.0, 0.1, s))
    return g


# ----- 1 and 2: node counts and exactness on the zoo ----------------------------------------


@dataclass
class ZooModel:
    name: str
    graph: Graph
    feeds: list[dict[str, np.ndarray]]
    files: dict[str, bytes | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def zoo_model(name: str, tools: Tools, random_stats: bool = False) -> ZooModel:
    module = models.load(name)
    g = module.build()
    if random_stats:
        randomize(g)
    feeds = [module.example_inputs(seed) for seed in SEEDS]
    m = ZooModel(name, g, feeds)
    m.files["before"] = graphc.to_bytes(g)
    m.files["graphc"] = run_graphc(g)
    m.notes["graphc"] = ""
    for tool in ("onnxoptimizer", "onnxsim"):
        m.files[tool], m.notes[tool] = transform(tool, tools, m.files["before"])
    return m


def node_rows(m: ZooModel) -> tuple[list[Row], dict[str, Any]]:
    """Return the node-count rows of one model and facts for the summary."""
    rows: list[Row] = []
    counts = {f: op_counts(d) for f, d in m.files.items() if d is not None}
    sim_nodes = sum(counts["onnxsim"].values()) if "onnxsim" in counts else None
    facts: dict[str, Any] = {"nodes": {f: sum(c.values()) for f, c in counts.items()}}
    before = m.files["before"]
    assert before is not None
    for f in FILES:
        data = m.files[f]
        if data is None:
            rows.append((m.name, f, m.notes[f], "", "", "", "", "", ""))
            continue
        c = counts[f]
        nodes = sum(c.values())
        absd = reld = None
        if f != "before":
            absd, reld = difference(before, data, m.feeds)
        facts.setdefault("rel", {})[f] = reld
        v = ""
        if f == "graphc":
            parts = [f"nodes {verdict(sim_nodes is None or nodes <= sim_nodes)}"
                     + ("" if sim_nodes is not None else " (no onnxsim to compare)"),
                     f"exact {verdict(reld is not None and reld <= REL_TOL)}"]
            v = "; ".join(parts)
        rows.append((m.name, f, str(nodes), str(c["BatchNormalization"]), str(c["Dropout"]),
                     fmt_bytes(len(data)), fmt_e(absd), fmt_e(reld), v))
    return rows, facts


def exact_rows(m: ZooModel) -> tuple[Row, float | None]:
    before = m.files["before"]
    assert before is not None
    cells, graphc_rel = [], None
    for tool in TOOLS:
        data = m.files[tool]
        if data is None:
            cells.append(m.notes[tool])
            continue
        absd, reld = difference(before, data, m.feeds)
        cells.append(f"{fmt_e(absd)} ({fmt_e(reld)})")
        if tool == "graphc":
            graphc_rel = reld
    ok = graphc_rel is not None and graphc_rel <= REL_TOL
    return (m.name, *cells, verdict(ok)), graphc_rel


# ----- 3: pipeline time ---------------------------------------------------------------------


def graphc_timer(g: Graph) -> Callable[[], tuple[Timings, Info]]:
    names = resolve(pipeline="inference")

    def run() -> tuple[Timings, Info]:
        t0 = time.perf_counter()
        new, reports = run_pipeline(g, names)
        t1 = time.perf_counter()
        graphc.to_bytes(new)
        t2 = time.perf_counter()
        timings = {"pipeline": t1 - t0, "pipeline + to_bytes": t2 - t0}
        timings.update({f"pass {r.name}": r.seconds for r in reports})
        return timings, {}

    return run


def tool_timer(tool: str, mod: ModuleType, before: bytes) -> Callable[[], tuple[Timings, Info]]:
    fn = run_onnxoptimizer if tool == "onnxoptimizer" else run_onnxsim

    def run() -> tuple[Timings, Info]:
        model = onnx.load_from_string(before)  # parsed outside the timing: the tool's input
        t0 = time.perf_counter()
        fn(mod, model)
        return {tool: time.perf_counter() - t0}, {}

    return run


def profile_pipeline(g: Graph, top: int = 15) -> str:
    """Return cProfile's top functions (cumulative time) of one run of the inference pipeline."""
    names = resolve(pipeline="inference")
    prof = cProfile.Profile()
    prof.enable()
    run_pipeline(g, names)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# ----- 4: onnxruntime latency ---------------------------------------------------------------


@dataclass
class Latency:
    """Per-call times of one session, and the median of each of its blocks (one per round)."""

    calls: list[float] = field(default_factory=list)
    blocks: list[float] = field(default_factory=list)


def latency(m: ZooModel, repeats: int, warmup_s: float, budget_s: float, block_s: float
            ) -> dict[tuple[str, str], Latency]:
    """Time every (file, level) session of ``m``, interleaved in short blocks.

    A round runs one block of calls on every session, in an order rotated each round; a block
    lasts about ``block_s`` and each session gets about ``budget_s`` of calls per repeat. Short
    blocks spread every session over the whole measurement, so a slow spell of a shared machine
    hits all of them alike, and the blocks of one round can be compared pairwise.
    """
    feed = m.feeds[0]
    sessions = {(f, level): session(data, level) for f, data in m.files.items()
                if data is not None for level in LEVELS}
    # Warm-up: the first calls allocate buffers and pick kernels.
    per_call = {}
    for key, sess in sessions.items():
        t0 = time.perf_counter()
        n = 0
        while n < 3 or time.perf_counter() - t0 < warmup_s:
            sess.run(None, feed)
            n += 1
        per_call[key] = (time.perf_counter() - t0) / n
    slowest = max(per_call.values())
    calls = max(1, round(block_s / slowest))  # the same for every session
    rounds = repeats * max(1, round(budget_s / (calls * slowest)))
    results = {key: Latency() for key in sessions}
    keys = list(sessions)
    gc.collect()
    gc.disable()  # a collection inside a block would be charged to one session only
    try:
        for r in range(rounds):
            for key in keys[r % len(keys):] + keys[:r % len(keys)]:
                sess, res = sessions[key], results[key]
                block = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    sess.run(None, feed)
                    block.append(time.perf_counter() - t0)
                res.calls += block
                res.blocks.append(statistics.median(block))
            if (r + 1) % max(1, rounds // 5) == 0 or r + 1 == rounds:
                log(f"latency {m.name}: round {r + 1}/{rounds}, {calls} calls per block")
    finally:
        gc.enable()
    return results


def latency_rows(m: ZooModel, results: dict[tuple[str, str], Latency]) -> list[Row]:
    rows: list[Row] = []
    for f in FILES:
        if m.files[f] is None:
            rows.append((m.name, f, m.notes[f], "", "", "", "", ""))
            continue
        cells = [m.name, f]
        for level in LEVELS:
            res, base = results[(f, level)], results[("before", level)]
            # The ratio pairs the blocks of one round: slow spells cancel out.
            ratio = statistics.median(a / b for a, b in zip(res.blocks, base.blocks,
                                                            strict=True))
            cells += [fmt_s(statistics.median(res.calls)), fmt_s(min(res.calls)),
                      "1.00" if f == "before" else f"{ratio:.2f}"]
        rows.append(cells)
    return rows


# ----- 5: coverage --------------------------------------------------------------------------


def _builder(name: str) -> graphc.GraphBuilder:
    return graphc.GraphBuilder(name, seed=0)


def case_convtranspose_bn() -> Graph:
    b = _builder("convtranspose_bn")
    x = b.input("x", (2, 4, 8, 8))
    h = nn.conv_transpose2d(x, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                            name="deconv")
    b.output(nn.batch_norm(h, name="bn"), "y")
    return randomize(b.build())


def case_gemm_bn() -> Graph:
    b = _builder("gemm_bn")
    x = b.input("x", (4, 16))
    b.output(nn.batch_norm(nn.linear(x, 8, name="fc"), name="bn"), "y")  # Gemm, transB=1
    return randomize(b.build())


def case_matmul_add_bn() -> Graph:
    b = _builder("matmul_add_bn")
    x = b.input("x", (4, 16))
    w = b.param("w", (16, 8))
    c = b.param("c", (8,), init=np.random.default_rng(1).normal(0, 0.1, 8))
    b.output(nn.batch_norm(x @ w + c, name="bn"), "y")
    return randomize(b.build())


def case_matmul_bn() -> Graph:
    b = _builder("matmul_bn")
    x = b.input("x", (4, 16))
    w = b.param("w", (16, 8))
    b.output(nn.batch_norm(x @ w, name="bn"), "y")
    return randomize(b.build())


def case_conv_bn() -> Graph:
    b = _builder("conv_bn")
    x = b.input("x", (2, 3, 8, 8))
    h = nn.conv2d(x, 8, 3, padding="same", name="conv")
    b.output(nn.batch_norm(h, name="bn"), "y")
    return randomize(b.build())


def case_dropout() -> Graph:
    b = _builder("dropout")
    x = b.input("x", (4, 16))
    h = nn.dropout(nn.linear(x, 8, name="fc"), 0.5, name="drop")
    b.output(nn.relu(h, name="relu"), "y")
    return b.build()


def dropout_opset13() -> onnx.ModelProto:
    """Return Gemm -> Dropout(ratio 0.5 as an input) -> Relu at opset 13, written by hand."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 16)).astype(np.float32), "fc.weight"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "fc.bias"),
             numpy_helper.from_array(np.array(0.5, np.float32), "drop.ratio")]
    nodes = [helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["fc"], "fc", transB=1),
             helper.make_node("Dropout", ["fc", "drop.ratio"], ["drop"], "drop"),
             helper.make_node("Relu", ["drop"], ["y"], "relu")]
    graph = helper.make_graph(nodes, "dropout13",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    onnx.checker.check_model(model, full_check=True)
    return model


COVERAGE: list[tuple[str, str, Callable[[], Graph]]] = [
    ("ConvTranspose+BN (groups 2)", "BatchNormalization", case_convtranspose_bn),
    ("Gemm+BN (transB=1)", "BatchNormalization", case_gemm_bn),
    ("MatMul+Add+BN", "BatchNormalization", case_matmul_add_bn),
    ("MatMul+BN", "BatchNormalization", case_matmul_bn),
    ("Conv+BN", "BatchNormalization", case_conv_bn),
    ("Dropout ratio 0.5", "Dropout", case_dropout),
]


def import_onnx() -> Callable[[onnx.ModelProto], Graph] | None:
    """Return ``graphc.onnxio.importer.from_onnx`` when that module exists, else None."""
    if importlib.util.find_spec("graphc.onnxio.importer") is None:
        return None
    module = importlib.import_module("graphc.onnxio.importer")
    return getattr(module, "from_onnx", None)


def _cell(data: bytes | None, note: str, op: str) -> str:
    if data is None:
        return note
    c = op_counts(data)
    return f"{c[op]} / {sum(c.values())}"


def coverage_row(label: str, op: str, opset: int, before: bytes, graphc_file: bytes | None,
                 graphc_note: str, tools: Tools, feeds: list[dict[str, np.ndarray]]
                 ) -> tuple[Row, bool | None]:
    cells = [label, str(opset), str(sum(op_counts(before).values()))]
    cells.append(_cell(graphc_file, graphc_note, op))
    for tool in ("onnxoptimizer", "onnxsim"):
        data, note = transform(tool, tools, before)
        cells.append(_cell(data, note, op))
    if graphc_file is None:
        return (*cells, "-", f"not run ({graphc_note})"), None
    _, reld = difference(before, graphc_file, feeds)
    left = op_counts(graphc_file)[op]
    ok = left == 0 and reld <= REL_TOL
    what = "folded" if op == "BatchNormalization" else "removed"
    why = "" if left == 0 else f": {left} {op} left"
    why += "" if reld <= REL_TOL else f": relative diff {reld:.1e}"
    return (*cells, fmt_e(reld), f"{verdict(ok)} ({what}{why})"), ok


def coverage(tools: Tools) -> tuple[list[Row], dict[str, list[tuple[int, bool | None]]]]:
    """Return the coverage rows and, per case label, (opset, graphc verdict) pairs."""
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    results: dict[str, list[tuple[int, bool | None]]] = {}
    opsets = sorted({17, max_opset()})
    for label, op, build in COVERAGE:
        g = build()
        feeds = [{name: rng.standard_normal(g.types(name)[0].shape).astype(np.float32)
                  for name in g.inputs} for _ in range(2)]
        for opset in opsets:
            before = graphc.to_bytes(g, opset)
            row, ok = coverage_row(label, op, opset, before, run_graphc(g, opset), "", tools,
                                   feeds)
            rows.append(row)
            results.setdefault(label, []).append((opset, ok))
            log(f"coverage: {label} at opset {opset}")
    model = dropout_opset13()
    before = model.SerializeToString()
    feeds = [{"x": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(2)]
    from_onnx = import_onnx()
    graphc_file, note = None, "graphc.onnxio.importer absent"
    if from_onnx is not None:
        try:
            # graphc exports opset 17 at the lowest: the file it writes is opset 17.
            graphc_file = run_graphc(from_onnx(model))
            note = ""
        except Exception as err:  # noqa: BLE001 - an import failure is a result to report
            note = f"error: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
    row, ok = coverage_row("Dropout ratio 0.5 (onnx.helper)", "Dropout", 13, before,
                           graphc_file, note, tools, feeds)
    rows.append(row)
    results.setdefault("Dropout ratio 0.5", []).append((13, ok))
    log("coverage: Dropout at opset 13")
    return rows, results


# ----- the report ---------------------------------------------------------------------------


def machine(core: int | None, tools: Tools) -> list[str]:
    versions: list[ModuleType | str] = [networkx, onnx, ort, graphc]
    for tool in ("onnxoptimizer", "onnxsim"):
        versions.append(tools.module(tool) or f"{tool} not installed")
    return harness.machine_lines(core, versions,
                                 threads="; onnxruntime intra_op 1, inter_op 1, sequential")


def main(argv: list[str] | None = None) -> int:
    parser = harness.arg_parser(__doc__, "smoke run: 1 round, no warm-up, short latency loops")
    args = harness.parse_args(parser, argv)
    repeats, warmup = harness.repeats_and_warmup(args)
    # Latency: warm-up per session, calls per session and repeat, length of one block.
    warmup_s, budget_s, block_s = (0.02, 0.02, 0.005) if args.quick else (0.3, 0.25, 0.005)

    core = harness.pin_to_one_core()
    tools = Tools(harness.import_optional("onnxoptimizer"), harness.import_optional("onnxsim"))
    out: list[str] = []
    summary: list[Row] = []

    # 1. node counts and exactness
    zoo = {}
    node_table: list[Row] = []
    facts = {}
    for name in ZOO:
        log(f"files: {name}")
        zoo[name] = zoo_model(name, tools)
        rows, facts[name] = node_rows(zoo[name])
        node_table += rows
    out += [harness.heading("Node counts and exactness", args.quick, level=3), "",
            f"Max abs difference of each file's outputs from the before-file's on onnxruntime "
            f"(ORT_DISABLE_ALL), over example_inputs(seed) for seeds {list(SEEDS)}; relative = "
            "that / max |before output|. Verdicts (graphc rows): node count <= onnxsim's, "
            f"relative difference <= {REL_TOL:.0e}.", "",
            md_table(("model", "file", "nodes", "BN", "Dropout", "size", "max abs diff",
                      "relative", "verdict"), node_table, "llrrrrrr"), ""]

    # 2. exactness with random statistics
    exact_table: list[Row] = []
    rels: dict[str, float | None] = {}
    for name in ZOO:
        log(f"files with random BN statistics: {name}")
        m = zoo_model(name, tools, random_stats=True)
        row, rels[name] = exact_rows(m)
        exact_table.append(row)
        del m
    out += ["### Exactness with random BatchNorm statistics", "",
            "Every BN given random gamma, beta, mean, var and every Conv/Gemm bias random values "
            "(the zoo initializes BN to the identity). Cells: max abs diff (relative).", "",
            md_table(("model", *TOOLS, f"graphc <= {REL_TOL:.0e} rel."), exact_table), ""]

    # 3. pipeline time
    cases = []
    for name in ZOO:
        m = zoo[name]
        cases.append(Case(f"{name}: graphc", graphc_timer(m.graph)))
        before = m.files["before"]
        assert before is not None
        for tool in ("onnxoptimizer", "onnxsim"):
            mod = tools.module(tool)
            if mod is not None and m.files[tool] is not None:
                cases.append(Case(f"{name}: {tool}", tool_timer(tool, mod, before)))
    harness.run_rounds(cases, repeats, warmup, fmt=fmt_s,
                       show=lambda stage: not stage.startswith("pass "))
    by_name = {c.name: c for c in cases}
    time_rows: list[Row] = []
    for name in ZOO:
        c = by_name[f"{name}: graphc"]
        for stage in ("pipeline", "pipeline + to_bytes"):
            target = stage == "pipeline" and name == "resnet18"
            time_rows.append(timing_row(f"{name}: graphc inference {stage}", c, stage,
                                        PIPELINE_TARGET_S if target else None, fmt_s))
        for tool, call in (("onnxoptimizer", "optimize"), ("onnxsim", "simplify")):
            key = f"{name}: {tool}"
            if key in by_name:
                time_rows.append(timing_row(f"{name}: {tool}.{call} (reference)", by_name[key],
                                            tool, fmt=fmt_s))
            else:
                time_rows.append((f"{name}: {tool}.{call} (reference)",
                                  zoo[name].notes[tool] or "not measured", "", "", ""))
    res = by_name["resnet18: graphc"]
    per_pass = ", ".join(f"{k[5:]} {fmt_s(res.median(k))}" for k in res.samples
                         if k.startswith("pass "))
    res_med = res.median("pipeline")
    out += [f"### Pass pipeline time (median and min over {harness.plural(repeats, 'round')}, "
            "interleaved)", "", timing_table(time_rows), "",
            f"- resnet18, inference pipeline by pass (medians): {per_pass}",
            "- graphc's rows start from the Graph; the references start from a parsed "
            "ModelProto of the before-file and end with a ModelProto (no serialization)", ""]
    if res_med > PIPELINE_TARGET_S:
        out += ["resnet18's pipeline missed its target; cProfile of one run:", "", "```",
                profile_pipeline(zoo["resnet18"].graph).strip(), "```", ""]

    # 4. latency
    lat_rows: list[Row] = []
    for name in ZOO:
        results = latency(zoo[name], repeats, warmup_s, budget_s, block_s)
        lat_rows += latency_rows(zoo[name], results)
    head = ["model", "file"]
    for level in LEVELS:
        head += [f"{level} median", f"{level} min", f"{level} / before"]
    out += ["### onnxruntime latency, one thread", "",
            "Per-call time of session.run on example_inputs(0): median and min over all calls. "
            "The sessions of a model run round-robin in blocks of ~5 ms (the same number of "
            "calls each, order rotated every round); ratio = median over rounds of (this "
            "file's block median / before's block median in the same round, same level).", "",
            md_table(head, lat_rows, "llrrrrrr"), ""]

    # 5. coverage
    cov_rows, cov = coverage(tools)
    out += [f"### Coverage on small synthetic models (random BN statistics; max_opset() = "
            f"{max_opset()})", "",
            "Cells: BatchNormalization (or Dropout) nodes left / total nodes. graphc's relative "
            "difference is from the before-file on onnxruntime (ORT_DISABLE_ALL).", "",
            md_table(("case", "opset", "nodes before", "graphc", "onnxoptimizer", "onnxsim",
                      "graphc rel. diff", "verdict"), cov_rows, "lrrlllr"), ""]

    # summary
    node_ok = [facts[n]["nodes"].get("graphc", 10**9) <= facts[n]["nodes"].get("onnxsim", 10**9)
               for n in ZOO]
    summary.append(("node counts <= onnxsim's (cnn, residual, resnet18)",
                    ", ".join(f"{n} {facts[n]['nodes']['graphc']} vs "
                              f"{facts[n]['nodes'].get('onnxsim', '-')}" for n in ZOO),
                    verdict(all(node_ok)) if tools.onnxsim else "not measured (no onnxsim)"))
    for label in ("ConvTranspose+BN (groups 2)", "Gemm+BN (transB=1)", "MatMul+BN",
                  "MatMul+Add+BN", "Conv+BN", "Dropout ratio 0.5"):
        pairs = cov[label]
        measured = ", ".join(f"opset {o}: {'-' if ok is None else ('yes' if ok else 'NO')}"
                             for o, ok in pairs)
        run = [ok for _, ok in pairs if ok is not None]
        skipped = len(run) < len(pairs)
        summary.append((f"{label} {'removed' if 'Dropout' in label else 'folded'}", measured,
                        verdict(all(run)) + (" (opset 13 not run)" if skipped else "")))
    summary.append(("inference pipeline on resnet18 <= 1 s (median)", fmt_s(res_med),
                    verdict(res_med <= PIPELINE_TARGET_S)))
    worst = [facts[n]["rel"].get("graphc") for n in ZOO] + list(rels.values())
    worst_rel = max((w for w in worst if w is not None), default=float("nan"))
    summary.append((f"exactness: relative max abs diff <= {REL_TOL:.0e}",
                    f"worst {fmt_e(worst_rel)} (zoo as built and with random BN stats)",
                    verdict(all(w is not None and w <= REL_TOL for w in worst))))
    lines = ["### Summary against the issue's targets", "",
             md_table(("target", "measured", "verdict"), summary), "", *out,
             *machine(core, tools)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
