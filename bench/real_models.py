"""Run graphc's inference pipeline on real architectures from torchvision and time the result.

For each architecture of ``ARCHITECTURES`` (random weights; every BatchNorm given random
statistics, so that a wrong fold cannot hide behind an identity BN), the script exports the
model with ``torch.onnx.export(..., opset_version=17, dynamo=False)`` at 224x224 with a
symbolic batch, imports it with ``graphc.from_onnx``, runs ``--pipeline inference`` and writes
the result with ``graphc.onnxio.export.to_bytes``. Per model it reports: whether graphc
imports it (and why not), ONNX nodes of the given file, graphc's file and onnxsim's file (when
onnxsim is installed), BatchNormalization nodes left, file sizes, the largest output difference
from the given file relative to the output's scale (onnxruntime, batch 1), and onnxruntime
latency as a paired ratio compiled / given (``graphc.compress.latency.measure``:
ORT_ENABLE_ALL, one thread, interleaved rounds, median of the per-round ratios) at batch 1 and
32. The given file is timed twice in the same rounds; as in ``graphc.compress.speed_check``,
its A/A ratio gives the noise band, and the script lists the ratios above 1.0 beyond it.

torch and torchvision are not graphc dependencies: without them the script says so and exits 0
(the module imports without them). ``--bn-forms`` needs neither: it times a
BatchNormalization against the Mul + Add that would replace it (what fold-batchnorm decides).

Run it from the repository root, on one core::

    python bench/real_models.py                        # every architecture, batch 1 and 32
    python bench/real_models.py --models resnet18,densenet121 --batches 1
    python bench/real_models.py --bn-forms             # BatchNormalization vs Mul + Add only

The tables go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import time
import warnings

import harness  # noqa: F401 - first: it limits the thread pools before numpy loads
import numpy as np
import onnx
from harness import log, md_table, pin_to_one_core

from graphc.compress.latency import cpu_info, measure
from graphc.compress.speed_check import MIN_NOISE, feeds_for, speed_verdict
from graphc.errors import GraphcError
from graphc.ir import Graph
from graphc.onnxio.export import to_bytes
from graphc.onnxio.importer import from_onnx
from graphc.onnxio.runtime import session
from graphc.pipeline import resolve, run_pipeline

ARCHITECTURES = ("resnet18", "mobilenet_v2", "squeezenet1_1", "mnasnet0_5", "efficientnet_b0",
                 "densenet121", "googlenet", "alexnet", "vgg11_bn", "regnet_y_400mf",
                 "mobilenet_v3_small", "shufflenet_v2_x0_5", "convnext_tiny")
BN_SHAPES = ((64, 56, 56), (256, 14, 14))


def have(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# ----- BatchNormalization vs Mul + Add ----------------------------------------------------------


def bn_graph(form: str, shape: tuple[int, ...], producer: str) -> Graph:
    """x (or Concat(x, z)) -> BatchNormalization or Mul + Add -> Relu."""
    rng = np.random.default_rng(0)
    g = Graph(form)
    h = g.add_input("x", shape)
    channels = shape[1]
    if producer == "concat":
        h = g.add_node("Concat", [h, g.add_input("z", shape)], {"axis": 1}, name="cat")
        channels *= 2
    gamma, beta = rng.uniform(0.5, 1.5, channels), rng.standard_normal(channels)
    mean, var = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)
    if form == "BatchNormalization":
        stats = [g.add_const(n, a.astype(np.float32))
                 for n, a in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))]
        h = g.add_node("BatchNormalization", [h, *stats], name="bn")
    else:
        s = gamma / np.sqrt(var + 1e-5)
        cshape = (channels, 1, 1)
        h = g.add_node("Mul", [h, g.add_const("s", s.reshape(cshape).astype(np.float32))])
        h = g.add_node("Add", [h, g.add_const("t", (beta - mean * s).reshape(cshape)
                                              .astype(np.float32))])
    g.outputs.append(g.add_node("Relu", [h], name="y"))
    g.verify()
    return g


def bn_forms(rounds: int) -> str:
    rows = []
    for producer in ("input", "concat"):
        for batch in (1, 32):
            for chw in BN_SHAPES:
                shape = (batch, *chw)
                rng = np.random.default_rng(1)
                feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
                if producer == "concat":
                    feeds["z"] = rng.standard_normal(shape).astype(np.float32)
                models = [to_bytes(bn_graph(f, shape, producer))
                          for f in ("BatchNormalization", "MulAdd")]
                bn, muladd = measure(models, feeds, names=["bn", "mul+add"], rounds=rounds)
                log(f"bn forms: {producer} {shape}: {muladd.ratio:.3f}")
                rows.append((producer, "x".join(map(str, shape)), f"{bn.median * 1e6:,.0f}",
                             f"{muladd.median * 1e6:,.0f}",
                             f"{muladd.ratio:.2f} ({muladd.ratio_low:.2f}-"
                             f"{muladd.ratio_high:.2f})"))
    return md_table(("BN after", "activation", "BatchNormalization us", "Mul + Add us",
                     "Mul + Add / BN (rounds 25-75%)"), rows, "llrrr")


# ----- the architectures ------------------------------------------------------------------------


def export(arch: str) -> bytes:
    """Return torchvision's ``arch`` with random weights and BN statistics as ONNX bytes."""
    import torch
    import torchvision

    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if arch == "googlenet" else {}
    model = getattr(torchvision.models, arch)(weights=None, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    buffer = io.BytesIO()
    # dynamo=False is the exporter the issue measured with; torch warns that it is legacy.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch")
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), buffer, opset_version=17,
                      dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return buffer.getvalue()


def nodes(model: bytes) -> tuple[int, int]:
    """Return the number of ONNX nodes and of BatchNormalization nodes."""
    graph = onnx.load_model_from_string(model).graph
    return len(graph.node), sum(n.op_type == "BatchNormalization" for n in graph.node)


def rel_diff(given: bytes, other: bytes, feeds: dict) -> float:
    want = session(given, threads=1).run(None, feeds)
    got = session(other, threads=1).run(None, feeds)
    return max(float(np.max(np.abs(g.astype(np.float64) - w))) / float(np.max(np.abs(w)))
               for w, g in zip(want, got, strict=True))


def one_model(arch: str, batches: list[int], rounds: dict[int, int], onnxsim) -> dict:
    row: dict = {"arch": arch}
    start = time.perf_counter()
    given = export(arch)
    row["given_nodes"], row["given_bn"] = nodes(given)
    row["given_size"] = len(given)
    try:
        g = from_onnx(given, batch=1)
        compiled_graph, _ = run_pipeline(g, resolve(pipeline="inference"))
        compiled = to_bytes(compiled_graph)
    except GraphcError as err:
        # The first clause names the node and the op; the list of supported ops is long.
        row["refused"] = str(err).splitlines()[0].split("; expected")[0]
        return row
    row["nodes"], row["bn"] = nodes(compiled)
    row["size"] = len(compiled)
    files = {"graphc": compiled}
    if onnxsim is not None:
        simplified, ok = onnxsim.simplify(onnx.load_model_from_string(given))
        if ok:
            files["onnxsim"] = simplified.SerializeToString()
            row["sim_nodes"], _ = nodes(files["onnxsim"])
            row["sim_size"] = len(files["onnxsim"])
    feeds = feeds_for(given, batch=1, seed=0)
    row["diff"] = {k: rel_diff(given, v, feeds) for k, v in files.items()}
    for batch in batches:
        feeds = feeds_for(given, batch=batch, seed=1)
        names = ["given", "graphc", "given again", *(["onnxsim"] if "onnxsim" in files else [])]
        models = [given, compiled, given, *([files["onnxsim"]] if "onnxsim" in files else [])]
        timings = measure(models, feeds, names=names, rounds=rounds[batch],
                          warmup=1 if batch > 1 else 3)
        by = {t.name: t for t in timings}
        again = by["given again"]
        noise = max(MIN_NOISE, abs(again.ratio - 1.0), (again.ratio_high - again.ratio_low) / 2)
        row[batch] = {"given_ms": by["given"].median * 1e3, "ratio": by["graphc"].ratio,
                      "noise": noise, "verdict": speed_verdict(by["graphc"].ratio, noise),
                      "sim": by["onnxsim"].ratio if "onnxsim" in by else None}
    row["seconds"] = time.perf_counter() - start
    return row


def fmt_row(row: dict, batches: list[int]) -> tuple[str, ...]:
    if "refused" in row:
        return (row["arch"], "refused: " + row["refused"].replace("|", "/"), "", "", "", "",
                *("" for _ in batches))
    sim_nodes = f" ({row['sim_nodes']})" if "sim_nodes" in row else ""
    sim_size = f" ({row['sim_size'] / 2**20:.1f})" if "sim_size" in row else ""
    diffs = row["diff"]
    diff = f"{diffs['graphc']:.1e}" + (f" ({diffs['onnxsim']:.1e})" if "onnxsim" in diffs
                                        else "")
    cells = []
    for batch in batches:
        b = row[batch]
        sim = f"; onnxsim {b['sim']:.3f}" if b.get("sim") is not None else ""
        cells.append(f"{b['ratio']:.3f} +-{b['noise'] * 100:.1f}% ({b['given_ms']:,.1f} ms)"
                     f"{sim}")
    return (row["arch"], "ok", f"{row['given_nodes']} -> {row['nodes']}{sim_nodes}",
            f"{row['given_bn']} -> {row['bn']}",
            f"{row['given_size'] / 2**20:.1f} -> {row['size'] / 2**20:.1f}{sim_size}", diff,
            *cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ARCHITECTURES),
                        help="comma-separated torchvision architectures")
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=21, help="timed rounds at batch 1")
    parser.add_argument("--rounds-large", type=int, default=5,
                        help="timed rounds at batches above 1")
    parser.add_argument("--bn-forms", action="store_true",
                        help="only time BatchNormalization against Mul + Add")
    args = parser.parse_args(argv)
    core = pin_to_one_core()
    print(f"CPU: {cpu_info().describe()}; core {core}, one onnxruntime thread\n")
    if args.bn_forms:
        print("## BatchNormalization vs Mul + Add (onnxruntime, ORT_ENABLE_ALL)\n")
        print(bn_forms(args.rounds))
        return 0
    if not (have("torch") and have("torchvision")):
        print("torch and torchvision are not installed (they are not graphc dependencies): "
              "no architectures to export. `pip install torch torchvision` to run this.")
        return 0
    import torch

    torch.set_num_threads(1)
    onnxsim = importlib.import_module("onnxsim") if have("onnxsim") else None
    batches = [int(b) for b in args.batches.split(",")]
    rounds = {b: args.rounds if b == 1 else args.rounds_large for b in batches}
    rows = []
    for arch in args.models.split(","):
        log(f"{arch} ...")
        row = one_model(arch, batches, rounds, onnxsim)
        log(f"{arch}: {fmt_row(row, batches)}")
        rows.append(row)
    print("## Real architectures: graphc --pipeline inference vs the given file\n")
    print(f"onnxsim: {'installed' if onnxsim else 'not installed'}; values in parentheses are "
          "onnxsim's. Ratio = compiled / given time per call on onnxruntime (ORT_ENABLE_ALL, "
          f"1 thread), median of {args.rounds} paired rounds at batch 1 and "
          f"{args.rounds_large} above; noise band from the given file timed twice.\n")
    head = ("model", "import", "ONNX nodes given -> graphc", "BN nodes", "MiB",
            "max diff / output scale", *(f"batch {b}: ratio (given time)" for b in batches))
    print(md_table(head, [fmt_row(r, batches) for r in rows], "llllll"))
    slower = [f"{r['arch']} batch {b}: {r[b]['ratio']:.3f} (noise +-{r[b]['noise'] * 100:.1f}%)"
              for r in rows if "refused" not in r for b in batches
              if r[b]["verdict"] == "slower"]
    print("\nAbove 1.0 beyond the noise band: " + ("; ".join(slower) if slower else "none"))
    refused = [r["arch"] for r in rows if "refused" in r]
    print("Refused by graphc's importer: " + (", ".join(refused) if refused else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
