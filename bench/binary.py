"""Measure binary networks on digits: accuracy, file size and latency against fp32 and int8.

The digits ``cnn`` is trained in fp32 (``--epochs 30 --seed 0``), then fine-tuned from that
checkpoint into four binary forms with ``graphc train cnn --init CKPT --binary ...`` (the recipes
of docs/binary.md): binary weights with the first and last layer fp32, binary weights and
activations with them fp32, and both with every layer binary (``--keep-fp32 none``). Each is
compiled with ``graphc compile cnn --weights CKPT --pipeline inference --passes binarize
--dynamic-batch``; the fp32 file (``--pipeline inference``) and the int8 file (``--passes
quantize-int8 --calibrate digits --prefer size``) of the fp32 checkpoint are the references.

Columns: test accuracy (450 digits test images, onnxruntime), file size and its ratio to fp32,
and latency ratios at batch 1 and 256 (the first test images): to the fp32 file (one interleaved
run with fp32 first) and to the int8 file (a second run with int8 first), one onnxruntime thread,
``graphc.compress.latency.measure`` (median of the per-round ratios, p25-p75 in parentheses).
The CPU line comes first: int8 kernels, which the binary integer forms use, are fast only with
AVX-512 VNNI / AVX-VNNI / AMX.

The digits images are 8x8: at batch 1 the cnn's time is mostly per-call overhead, not its
convolutions. The binary conv latency is measured on its own, at the layer shape of the
issue's figures (64 -> 64 channels, 3x3, 32x32, the 144 KiB fp32 weight): a stack of
``CONV_BLOCKS`` blocks Conv -> BatchNormalization -> BinarySign after a first BinarySign, with
seeded binary weights (``alpha * sign(W)``) and batch statistics, at batch 1 and 8. Three files
of it: fp32 (``--pipeline inference``), int8 (quantize-int8 of every conv, ``--prefer size``
with the error limit lifted: a speed reference, its signs differ) and binary (``binarize
--prefer integer``: QLinearConv with the BatchNormalization and sign in its threshold, bit-exact
against the interpreter, checked here).

Run it from the repository root::

    python bench/binary.py            # about 5 minutes
    python bench/binary.py --quick    # smoke run: 5 rounds, a few epochs

The tables go to stdout, progress to stderr. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys

# harness sets the thread-pool variables when imported: it must come before numpy (and
# onnxruntime), which read them once. The split keeps isort from moving it below numpy.
import harness
from harness import fmt_bytes, log, md_table, run_graphc, train_digits, verdict

# isort: split

import numpy as np
import onnx
import onnxruntime as ort

import graphc
from graphc import nn
from graphc.cli.checkpoints import load_data, onnx_accuracy
from graphc.compress.latency import Timing, cpu_info, measure
from graphc.dsl import GraphBuilder
from graphc.interpret import run
from graphc.ir import Graph
from graphc.models import load
from graphc.nn_spatial import conv2d
from graphc.onnxio.export import to_bytes
from graphc.onnxio.runtime import run_onnxruntime
from graphc.passes.binarize import binarize
from graphc.passes.quantize_int8 import quantize_int8
from graphc.pipeline import resolve, run_pipeline
from graphc.train.loop import fit_data

EPOCHS = 30
ADAM = ["--optimizer", "adam", "--lr", "0.003"]
# name: (graphc train options, epochs)
FORMS = {
    "binary weights, first/last fp32": (["--binary", "weights"], 30),
    "binary weights + activations, first/last fp32": (["--binary", "all", *ADAM], 60),
    "binary weights, every layer": (["--binary", "weights", "--keep-fp32", "none", *ADAM], 60),
    "binary weights + activations, every layer": (
        ["--binary", "all", "--keep-fp32", "none", *ADAM], 60),
}
BATCHES = (1, 256)
# The targets.
WEIGHTS_ACCURACY = 98.0
ALL_ACCURACY = 96.5
SIZE = 0.05
LATENCY = 0.4
# The conv layers timed on their own: blocks, channels, spatial size, batches.
CONV_BLOCKS, CONV_CHANNELS, CONV_SIZE, CONV_BATCHES = 4, 64, 32, (1, 8)


def ratio(t: Timing) -> str:
    return f"{t.ratio:.2f}x ({t.ratio_low:.2f}-{t.ratio_high:.2f})"


def conv_stack(batch: int) -> Graph:
    """The binary conv blocks, after the inference pipeline: seeded BatchNormalization
    statistics (folded into the conv biases) and binary weights ``alpha * sign(W)`` with alpha
    a power of two per channel, so that the float32 sums are exact and the integer file must
    equal the interpreter bit for bit."""
    b = GraphBuilder("binary_convs", seed=0)
    h = nn.binary_sign(b.input("x", (batch, CONV_CHANNELS, CONV_SIZE, CONV_SIZE)))
    for k in range(CONV_BLOCKS):
        h = conv2d(h, CONV_CHANNELS, 3, padding=1, bias=False, name=f"conv{k}")
        h = nn.binary_sign(nn.batch_norm(h, name=f"bn{k}"))
    b.output(h, "y")
    g = b.build()
    rng = np.random.default_rng(0)
    for k in range(CONV_BLOCKS):
        for param, (low, high) in (("weight", (0.5, 2)), ("bias", (-2, 2)),
                                   ("running_mean", (-4, 4)), ("running_var", (0.5, 4))):
            g.nx.nodes[f"bn{k}.{param}"]["value"] = rng.uniform(
                low, high, CONV_CHANNELS).astype(np.float32)
    g, _ = run_pipeline(g, resolve(pipeline="inference"))
    for node in g.op_nodes():
        if g.op(node) == "Conv":
            w = g.in_values(node)[1]
            alpha = np.exp2(np.round(np.log2(np.abs(g.const_value(w)).mean(axis=(1, 2, 3)))))
            g.nx.nodes[w.node]["value"] = np.where(
                g.const_value(w) >= 0, 1, -1).astype(np.float32) * alpha[:, None, None, None]
    return g


def conv_layers(rounds: int) -> dict[int, dict[str, dict[str, Timing]]]:
    """Time the conv stack's fp32, int8 and binary files at each of ``CONV_BATCHES``: per
    batch, the timings against fp32 and against int8."""
    result = {}
    for batch in CONV_BATCHES:
        g = conv_stack(batch)
        rng = np.random.default_rng(batch)
        shape = (batch, CONV_CHANNELS, CONV_SIZE, CONV_SIZE)
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        calibration = {"x": rng.standard_normal((8, *shape[1:])).astype(np.float32)}
        files = {"fp32": to_bytes(g),
                 "int8": to_bytes(quantize_int8(g, calibration=calibration, prefer="size",
                                                max_error=float("inf"))),
                 "binary": to_bytes(binarize(g, prefer="integer"))}
        got = run_onnxruntime(files["binary"], feeds)["y"]
        if not np.array_equal(got, run(g, feeds)["y"]):
            raise SystemExit("the binary conv file differs from the interpreter")
        log(f"timing the conv stack at batch {batch}, {rounds} rounds, fp32 first, int8 first")
        result[batch] = {
            "fp32": {t.name: t for t in measure(list(files.values()), feeds, names=list(files),
                                                rounds=rounds)},
            "int8": {t.name: t for t in measure([files["int8"], files["binary"]], feeds,
                                                names=["int8", "binary"], rounds=rounds)}}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, metavar="N",
                        help="interleaved timing rounds (default 21; 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 rounds, few epochs")
    parser.add_argument("--workdir", metavar="DIR",
                        help="keep the files (and reuse the checkpoints) in DIR")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick and args.rounds == 21 else args.rounds
    cpu = cpu_info()
    with harness.workdir(args.workdir, "binary") as work:
        fp32_ckpt = train_digits("cnn", 3 if args.quick else EPOCHS, work)
        base = ["compile", "cnn", "--pipeline", "inference", "--dynamic-batch"]
        files: dict[str, bytes] = {}
        for form, more in (("fp32", []), ("int8", ["--passes", "quantize-int8", "--calibrate",
                                                   "digits", "--prefer", "size"])):
            out = work / f"cnn-{form}.onnx"
            run_graphc([*base, "--weights", str(fp32_ckpt), *more, "-o", str(out)],
                       out.with_suffix(".compile.log"))
            files[form] = out.read_bytes()
        for k, (form, (options, epochs)) in enumerate(FORMS.items()):
            epochs = 2 if args.quick else epochs
            ckpt = work / f"cnn-binary-{k}-e{epochs}.ckpt"
            if not ckpt.exists():
                log(f"graphc train cnn --init ... {' '.join(options)} --epochs {epochs}")
                run_graphc(["train", "cnn", "--data", "digits", "--init", str(fp32_ckpt),
                            *options, "--epochs", str(epochs), "-o", str(ckpt)],
                           ckpt.with_suffix(".log"))
            out = ckpt.with_suffix(".onnx")
            run_graphc([*base, "--weights", str(ckpt), "--passes", "binarize", "-o", str(out)],
                       ckpt.with_suffix(".compile.log"))
            files[form] = out.read_bytes()
        core = harness.pin_to_one_core()
        _, test_set = load_data("digits")
        accuracy = {form: onnx_accuracy(model, test_set) for form, model in files.items()}
        graph = load("cnn").build()
        x = fit_data(test_set, graph.types(graph.inputs[0])[0].shape, "test split")
        name = onnx.load_model_from_string(files["fp32"]).graph.input[0].name
        vs_fp32, vs_int8 = {}, {}
        for batch in BATCHES:
            log(f"timing {len(files)} files at batch {batch}, {rounds} rounds, fp32 first")
            vs_fp32[batch] = {t.name: t for t in measure(list(files.values()),
                                                         {name: x[:batch]}, names=list(files),
                                                         rounds=rounds)}
            order = ["int8", *[f for f in files if f != "int8"]]
            log(f"timing {len(files)} files at batch {batch}, {rounds} rounds, int8 first")
            vs_int8[batch] = {t.name: t for t in measure([files[f] for f in order],
                                                         {name: x[:batch]}, names=order,
                                                         rounds=rounds)}
        convs = conv_layers(rounds)

    title = (f"binary networks ({datetime.date.today().isoformat()}"
             f"{', QUICK smoke run: not a measurement' if args.quick else ''})")
    rows = [[form, f"{100 * accuracy[form]:.2f}%", fmt_bytes(len(model)),
             f"{len(model) / len(files['fp32']):.3f}x",
             *[ratio(vs_fp32[b][form]) for b in BATCHES],
             *[ratio(vs_int8[b][form]) for b in BATCHES]] for form, model in files.items()]
    forms = list(FORMS)
    smallest = min(len(files[f]) for f in forms) / len(files["fp32"])
    targets = [
        [f"binary weights (first/last fp32) accuracy >= {WEIGHTS_ACCURACY}%",
         f"{100 * accuracy[forms[0]]:.2f}%", verdict(100 * accuracy[forms[0]] >= WEIGHTS_ACCURACY)],
        [f"binary weights + activations accuracy >= {ALL_ACCURACY}%",
         f"{100 * accuracy[forms[1]]:.2f}%", verdict(100 * accuracy[forms[1]] >= ALL_ACCURACY)],
        [f"file <= {SIZE} of fp32 (smallest binary form)", f"{smallest:.3f}x",
         verdict(smallest <= SIZE)],
        [f"binary conv latency <= {LATENCY}x fp32 on an AVX-512 VNNI CPU (conv layers)",
         ", ".join(f"{convs[b]['fp32']['binary'].ratio:.2f}x at batch {b}"
                   for b in CONV_BATCHES),
         verdict(max(convs[b]["fp32"]["binary"].ratio for b in CONV_BATCHES) <= LATENCY)
         if cpu.vnni else "not testable here (no VNNI on this CPU)"],
        ["binary conv layers never slower than their int8 form",
         ", ".join(f"{convs[b]['int8']['binary'].ratio:.2f}x at batch {b}"
                   for b in CONV_BATCHES),
         verdict(max(convs[b]["int8"]["binary"].ratio for b in CONV_BATCHES) <= 1.0)],
        ["never slower than the int8 form (binary weights + activations, first/last fp32)",
         f"{vs_int8[1][forms[1]].ratio:.2f}x at batch 1, {vs_int8[256][forms[1]].ratio:.2f}x "
         "at batch 256", verdict(max(vs_int8[b][forms[1]].ratio for b in BATCHES) <= 1.0)],
    ]
    out = [f"### {title}", "", f"- cpu: {cpu.describe()}",
           f"- onnxruntime {ort.__version__} CPU, 1 intra-op thread, all graph optimizations; "
           f"{rounds} interleaved rounds per table; lower is faster", "",
           md_table(["file", "test acc.", "size", "size / fp32", "time / fp32, batch 1",
                     "time / fp32, batch 256", "time / int8, batch 1",
                     "time / int8, batch 256"], rows, "lrrrrrrr"), "",
           f"#### binary conv layers ({CONV_BLOCKS} blocks Conv {CONV_CHANNELS} -> "
           f"{CONV_CHANNELS} 3x3 + BatchNormalization + BinarySign, {CONV_SIZE}x{CONV_SIZE})",
           "",
           md_table(["file", *[f"time / fp32, batch {b}" for b in CONV_BATCHES],
                     *[f"time / int8, batch {b}" for b in CONV_BATCHES]],
                    [[form, *[ratio(convs[b]["fp32"][form]) for b in CONV_BATCHES],
                      *[ratio(convs[b]["int8"][form]) if form in convs[b]["int8"] else "-"
                        for b in CONV_BATCHES]] for form in ("fp32", "int8", "binary")],
                    "lrrrr"), "",
           "#### The issue's targets", "",
           md_table(["target", "measured", "verdict"], targets), ""]
    out += harness.machine_lines(core, [onnx, ort, graphc],
                                 threads="; onnxruntime intra_op 1, inter_op 1, sequential")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
