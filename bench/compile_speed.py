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

import io
import sys
import time
from collections.abc import Callable
from typing import Any

# harness sets the thread-pool variables when imported: it must come before numpy (and
# onnxruntime, torch), which read them once. The split keeps isort from moving it below numpy.
import harness
from harness import Case, Info, Timings, fmt_n, timing_row, timing_table, verdict

# isort: split

import networkx
import onnx
import onnxruntime

import graphc
from graphc import models, nn

# ``graphc.models`` maps to the top-level models/ folder, which ruff's isort would file as a
# third-party import; loading it through the zoo keeps the imports grouped as they really are.
resnet18 = models.load("resnet18")

RESNET_TARGET_S = 1.0
GROWTH_TARGET = 12.0
TORCH_QUOTED = "0.6-0.9 s"  # the figure for PyTorch's exporter on this machine

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
    torch = harness.import_optional("torch")
    if torch is not None:
        torch.set_num_threads(1)
    return torch


# ----- running and reporting ----------------------------------------------------------------


def stage_rows(case: Case, labels: dict[str, str], targets: dict[str, float] | None = None
               ) -> list[tuple[str, str, str, str, str]]:
    return [timing_row(f"{case.name}: {label}", case, stage, (targets or {}).get(stage))
            for stage, label in labels.items()]


def machine(core: int | None, torch: Any | None) -> list[str]:
    versions: list[Any] = [networkx, onnx, onnxruntime, graphc]
    if torch is not None:
        versions.append(torch)
    return harness.machine_lines(core, versions)


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
    growth_verdict = verdict(growth <= GROWTH_TARGET)
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
    lines = [harness.heading("Compile speed", quick), "",
             f"Median and min over {harness.plural(repeats, 'repeat')}"
             " (cases interleaved round-robin), one thread; verdicts compare the median with"
             " the target.", "", timing_table(rows), "",
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
    parser = harness.arg_parser(
        __doc__, "smoke run: 1 round, no warm-up, chains of 100 and 1,000 nodes")
    args = harness.parse_args(parser, argv)

    core = harness.pin_to_one_core()
    torch = import_torch()
    repeats, warmup = harness.repeats_and_warmup(args)
    sizes = (100, 1_000) if args.quick else (1_000, 10_000)
    cases = [Case("resnet18", time_resnet18)]
    cases += [Case(f"chain {fmt_n(n)}", chain_case(n)) for n in sizes]
    if torch is not None:
        cases.append(Case("torch", torch_case(torch)))
    harness.run_rounds(cases, repeats, warmup)
    print(report({c.name: c for c in cases}, sizes, repeats, core, torch, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
