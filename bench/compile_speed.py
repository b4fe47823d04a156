"""Measure graphc's compile speed: building graphs with the DSL and exporting them to ONNX bytes.

Cases, run in one process pinned to one thread (and one core when the OS allows), interleaved
round-robin so that a slow spell of the machine hits every case alike; the table reports the
median and the minimum over the repeats:

- ``resnet18``: ``graphc.models.resnet18.build()`` and ``graphc.to_bytes`` of its graph, apart
  and together, with the parameter count and the file size. Target: build + export <= 1 s.
- ``chain N``: a chain of N elementwise op nodes (Add of a constant, Relu, Mul by a constant,
  Tanh, repeated) on a (1, 16) input, written with ``graphc.GraphBuilder``; its build (including
  the verification done by ``build()``) and its ``to_bytes``. Target: time(10,000 nodes) /
  time(1,000 nodes) <= 12, i.e. linear growth.
- ``torch``: only when torch happens to be installed (it is not a dependency):
  ``torch.onnx.export`` of a hand-written ResNet-18 to memory, the reference for the first
  target. Otherwise the table says so, and the issue's figure for it is only quoted.

Run it from the repository root::

    python bench/compile_speed.py               # 7 repeats after a warm-up round, ~1 minute
    python bench/compile_speed.py --repeats 15  # steadier medians
    python bench/compile_speed.py --quick       # smoke run: 1 repeat, chains of 100 and 1,000

It prints a markdown table (case, median, min, target, verdict), the sizes measured and the
machine; progress goes to stderr. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import os

# The thread pools of OpenMP and the BLAS libraries read these once, when numpy (or onnxruntime,
# or torch) is first imported: they must be set before the imports below.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")
for _var in THREAD_VARS:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import networkx  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime  # noqa: E402

import graphc  # noqa: E402
from graphc import models, nn  # noqa: E402

# ``graphc.models`` maps to the top-level models/ folder, which ruff's isort would file as a
# third-party import; loading it through the zoo keeps the imports grouped as they really are.
resnet18 = models.load("resnet18")

RESNET_TARGET_S = 1.0
GROWTH_TARGET = 12.0
TORCH_QUOTED = "0.6-0.9 s"  # the figure for PyTorch's exporter on this machine

Timings = dict[str, float]
Info = dict[str, Any]


@dataclass
class Case:
    """One benchmark case: ``run()`` times its stages and returns them with facts to report."""

    name: str
    run: Callable[[], tuple[Timings, Info]]
    samples: dict[str, list[float]] = field(default_factory=dict)
    info: Info = field(default_factory=dict)

    def record(self, timings: Timings, info: Info) -> None:
        for stage, seconds in timings.items():
            self.samples.setdefault(stage, []).append(seconds)
        self.info = info

    def median(self, stage: str) -> float:
        return statistics.median(self.samples[stage])

    def min(self, stage: str) -> float:
        return min(self.samples[stage])


# ----- pinning ------------------------------------------------------------------------------


def pin_to_one_core() -> int | None:
    """Restrict this process to the first core it may run on; return that core (or None)."""
    if not hasattr(os, "sched_setaffinity"):
        return None  # macOS and Windows: only the thread pools are limited
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


# ----- cases --------------------------------------------------------------------------------


def time_resnet18() -> tuple[Timings, Info]:
    """Time ``resnet18.build()`` then ``graphc.to_bytes`` of the graph."""
    t0 = time.perf_counter()
    g = resnet18.build()
    t1 = time.perf_counter()
    data = graphc.to_bytes(g)
    t2 = time.perf_counter()
    info = {"params": g.num_params(), "nodes": len(g), "op_nodes": len(g.op_nodes()),
            "bytes": len(data)}
    return {"build": t1 - t0, "export": t2 - t1, "total": t2 - t0}, info


def build_chain(n: int) -> graphc.Graph:
    """Return a chain of ``n`` elementwise op nodes on a (1, 16) input, built with the DSL."""
    b = graphc.GraphBuilder(f"chain{n}")
    h = b.input("x", (1, 16))
    for k in range(n):
        step = k % 4
        if step == 0:
            h = h + 0.5
        elif step == 1:
            h = nn.relu(h)
        elif step == 2:
            h = h * 0.9
        else:
            h = nn.tanh(h)
    b.output(h, "y")  # renames the last node: no extra op node
    return b.build()


def chain_case(n: int) -> Callable[[], tuple[Timings, Info]]:
    def run() -> tuple[Timings, Info]:
        t0 = time.perf_counter()
        g = build_chain(n)
        t1 = time.perf_counter()
        data = graphc.to_bytes(g)
        t2 = time.perf_counter()
        op_nodes = len(g.op_nodes())
        if op_nodes != n:
            raise AssertionError(f"chain of {n} has {op_nodes} op nodes")
        info = {"nodes": len(g), "op_nodes": op_nodes, "bytes": len(data)}
        return {"build": t1 - t0, "export": t2 - t1, "total": t2 - t0}, info

    return run


def torch_resnet18(torch: Any) -> Any:
    """Return a hand-written ResNet-18 (torchvision's layout, no torchvision) in eval mode."""
    tnn = torch.nn

    class BasicBlock(tnn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.relu = tnn.ReLU(inplace=True)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                                 tnn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            shortcut = x if self.downsample is None else self.downsample(x)
            return self.relu(out + shortcut)

    layers: list[Any] = [tnn.Conv2d(3, 64, 7, 2, 3, bias=False), tnn.BatchNorm2d(64),
                         tnn.ReLU(inplace=True), tnn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(512, 1000)]
    return tnn.Sequential(*layers).eval()


def torch_case(torch: Any) -> Callable[[], tuple[Timings, Info]]:
    def run() -> tuple[Timings, Info]:
        t0 = time.perf_counter()
        model = torch_resnet18(torch)
        t1 = time.perf_counter()
        buf = io.BytesIO()
        x = torch.zeros(1, 3, 224, 224)
        with torch.no_grad():
            try:
                # The TorchScript exporter, which the figure is about; newer torch
                # defaults to the dynamo exporter.
                torch.onnx.export(model, (x,), buf, opset_version=17, dynamo=False)
            except TypeError:  # torch before 2.5 has no ``dynamo`` argument
                buf = io.BytesIO()
                torch.onnx.export(model, (x,), buf, opset_version=17)
        t2 = time.perf_counter()
        info = {"params": sum(p.numel() for p in model.parameters()),
                "bytes": len(buf.getvalue())}
        return {"construct": t1 - t0, "export": t2 - t1}, info

    return run


def import_torch() -> Any | None:
    """Return the torch module pinned to one thread, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


# ----- running and reporting ----------------------------------------------------------------


def run_rounds(cases: list[Case], repeats: int, warmup: int) -> None:
    """Run every case once per round, round-robin; record all but the warm-up rounds."""
    for r in range(-warmup, repeats):
        label = "warm-up" if r < 0 else f"round {r + 1}/{repeats}"
        for case in cases:
            gc.collect()  # the previous case's garbage is not this case's cost
            timings, info = case.run()
            if r >= 0:
                case.record(timings, info)
            print(f"{label}: {case.name}: "
                  + ", ".join(f"{k} {fmt_s(v)}" for k, v in timings.items()),
                  file=sys.stderr, flush=True)


def fmt_s(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_n(n: int) -> str:
    return f"{n:,}"


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "**MISSED**"


def table(rows: list[tuple[str, str, str, str, str]]) -> str:
    head = ("case", "median", "min", "target", "verdict")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * 2
                                                            + ["---"] * 2) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def stage_rows(case: Case, labels: dict[str, str], targets: dict[str, float] | None = None
               ) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for stage, label in labels.items():
        med, low = case.median(stage), case.min(stage)
        target = (targets or {}).get(stage)
        rows.append((f"{case.name}: {label}", fmt_s(med), fmt_s(low),
                     "" if target is None else f"<= {fmt_s(target)}",
                     "" if target is None else verdict(med, target)))
    return rows


def cpu_name() -> str:
    name = platform.processor()
    if not name or name in ("x86_64", "aarch64", "arm", "i386"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
    return name or platform.machine()


def machine(core: int | None, torch: Any | None) -> list[str]:
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}",
                f"networkx {networkx.__version__}", f"onnx {onnx.__version__}",
                f"onnxruntime {onnxruntime.__version__}", f"graphc {graphc.__version__}"]
    if torch is not None:
        versions.append(f"torch {torch.__version__}")
    pinned = "not pinned (no sched_setaffinity)" if core is None else f"pinned to core {core}"
    return [f"- machine: {cpu_name()}, os.cpu_count() = {os.cpu_count()}, "
            f"{platform.system()} {platform.release()}",
            f"- versions: {', '.join(versions)}",
            f"- one thread ({THREAD_VARS[0]}=1 etc.), {pinned}"]


def report(cases: dict[str, Case], sizes: tuple[int, int], repeats: int, core: int | None,
           torch: Any | None, quick: bool) -> str:
    small, large = (cases[f"chain {fmt_n(n)}"] for n in sizes)
    res = cases["resnet18"]
    rows = stage_rows(res, {"build": "build()", "export": "to_bytes", "total": "build + to_bytes"},
                      {"total": RESNET_TARGET_S})
    for case in (small, large):
        rows += stage_rows(case, {"build": "build + verify", "export": "to_bytes",
                                  "total": "build + to_bytes"})
    growth = large.median("total") / small.median("total")
    growth_min = large.min("total") / small.min("total")
    growth_verdict = verdict(growth, GROWTH_TARGET)
    if growth <= GROWTH_TARGET < growth_min:
        growth_verdict += f" (by the median; the ratio of the mins is over {GROWTH_TARGET:.0f}x)"
    rows.append((f"growth: chain {fmt_n(sizes[1])} / chain {fmt_n(sizes[0])} (build + to_bytes)",
                 f"{growth:.1f}x", f"{growth_min:.1f}x", f"<= {GROWTH_TARGET:.0f}x",
                 growth_verdict))
    if torch is not None:
        ref = cases["torch"]
        rows += stage_rows(ref, {"construct": "ResNet-18 nn.Module", "export": "onnx.export"})
        ratio = res.median("total") / ref.median("export")
        ratio_min = res.min("total") / ref.min("export")
        rows.append(("ratio: graphc build + to_bytes / torch.onnx.export", f"{ratio:.2f}x",
                     f"{ratio_min:.2f}x", "reference",
                     "graphc faster" if ratio < 1 else "graphc slower"))
    else:
        rows.append(("torch.onnx.export of ResNet-18 (reference)", "not measured", "",
                     "reference", f"torch not installed; the issue quotes {TORCH_QUOTED}"))

    info = res.info
    lines = [f"## Compile speed ({datetime.date.today().isoformat()}"
             f"{', QUICK smoke run: not a measurement' if quick else ''})", "",
             f"Median and min over {repeats} repeat{'s' if repeats != 1 else ''}"
             " (cases interleaved round-robin), one thread; verdicts compare the median with"
             " the target.", "", table(rows), "",
             f"- resnet18: {fmt_n(info['params'])} parameters, {fmt_n(info['nodes'])} nodes "
             f"({info['op_nodes']} ops), ONNX file {fmt_n(info['bytes'])} bytes "
             f"({info['bytes'] / 2**20:.1f} MiB)"]
    for case in (small, large):
        lines.append(f"- {case.name}: {fmt_n(case.info['op_nodes'])} op nodes, "
                     f"{fmt_n(case.info['nodes'])} nodes with input and constants, "
                     f"ONNX file {fmt_n(case.info['bytes'])} bytes")
    build_growth = large.median("build") / small.median("build")
    export_growth = large.median("export") / small.median("export")
    lines.append(f"- growth by stage (medians): build + verify {build_growth:.1f}x, "
                 f"to_bytes {export_growth:.1f}x")
    if torch is None:
        lines.append("- reference not measured: torch is not installed (it is not a graphc "
                     f"dependency); PyTorch's exporter figure ({TORCH_QUOTED}) is only quoted "
                     "from the issue")
    else:
        rinfo = cases["torch"].info
        lines.append(f"- torch reference: {fmt_n(rinfo['params'])} parameters, ONNX file "
                     f"{fmt_n(rinfo['bytes'])} bytes")
    lines += machine(core, torch)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, metavar="N",
                        help="timed rounds after one warm-up round (default 7)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 round, no warm-up, chains of 100 and 1,000 nodes")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    core = pin_to_one_core()
    torch = import_torch()
    repeats, warmup = (1, 0) if args.quick else (args.repeats, 1)
    sizes = (100, 1_000) if args.quick else (1_000, 10_000)
    cases = [Case("resnet18", time_resnet18)]
    cases += [Case(f"chain {fmt_n(n)}", chain_case(n)) for n in sizes]
    if torch is not None:
        cases.append(Case("torch", torch_case(torch)))
    run_rounds(cases, repeats, warmup)
    print(report({c.name: c for c in cases}, sizes, repeats, core, torch, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
