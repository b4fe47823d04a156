"""Measure graphc's pruning: file size, FLOPs, latency and accuracy against the dense model.

Everything is measured in one run, on this machine, as a ratio to the dense file: the CPU and its
flags are printed first. Latency comes from ``graphc.compress.latency.measure``: one onnxruntime
thread, all graph optimizations, the files of one table interleaved in rounds (order rotated each
round), ratio = median over rounds of (file time / dense time in the same round), with the 25th
to 75th percentile of the per-round ratios in parentheses.

1. digits ``cnn`` (trained ``--epochs 30 --seed 0``), pruned by ``graphc prune`` (4 steps, 5
   fine-tuning epochs each, the defaults) in four ways: ``--target-flops 0.5`` (the issue's
   command), 50% of the channels removed (``--sparsity 0.5 --method l1``, default
   ``--round-to 8``), the same with ``--round-to 16`` and with ``--round-to 1`` (exact shares,
   odd channel counts); each compiled with ``graphc compile cnn --weights PRUNED --pipeline
   inference --dynamic-batch``. Columns: nonzero weights and FLOPs of what onnxruntime runs (its
   model after constant folding), file size, test accuracy (450 digits test images,
   onnxruntime), latency ratio at batch 1 and 256 (the first test images).
2. digits ``mlp`` (trained the same way), ``graphc prune mlp --method magnitude --sparsity 0.9
   --finetune-epochs 10`` (docs/pruning.md's recipe), compiled with ``--passes prune-magnitude``
   (bitmask + fp32 values) and with ``--passes quantize-int8,prune-magnitude --calibrate digits
   --prefer size --per-tensor`` (bitmask + int8 values), next to the dense file and the dense
   file with 90% zeros left in it (what masks give).
3. ``resnet18`` (224x224, random weights seed 0, batch 1): ``--passes prune-channels
   --prune-amount 0.5`` (one shot, every residual group pruned together) and the same with
   ``--round-to 16``; the difference to the dense output is not a quality measure here (random
   weights, no fine-tuning), so only shapes, size, FLOPs and latency are reported.
4. With torch installed: ``torch.nn.utils.prune`` (l1_unstructured 90%, masks made permanent) on
   a PyTorch copy of the mlp, exported with ``torch.onnx.export``: same size and speed as dense.

Run it from the repository root::

    python bench/prune.py              # 21 rounds per table, about 4 minutes
    python bench/prune.py --quick      # smoke run: 5 rounds, short training, no resnet18

The tables go to stdout, progress to stderr. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# harness sets the thread-pool variables when imported: it must come before numpy (and
# onnxruntime), which read them once. The split keeps isort from moving it below numpy.
import harness
from harness import fmt_bytes, log, md_table, run_graphc, train_digits, verdict

# isort: split

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

import graphc
from graphc.cli.checkpoints import load_data, onnx_accuracy
from graphc.compress.latency import Timing, cpu_info, measure
from graphc.models import load
from graphc.onnxio.importer import from_onnx
from graphc.shapes import layer_table
from graphc.train.loop import fit_data

EPOCHS = 30
BATCHES = (1, 256)
# The targets.
CNN_LATENCY = 0.70  # 50% of channels removed: batch 256 time / dense
CNN_DROP = 0.5  # accuracy points after fine-tuning
MLP_SIZE_INT8 = 0.15  # 90% magnitude sparsity, bitmask + int8 values / dense fp32 file
MLP_SIZE_FP32 = 0.27  # bitmask + fp32 values
MLP_DROP = 1.0


@dataclass
class Table:
    """The files of one model and their measurements."""

    name: str
    files: dict[str, bytes] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    timings: dict[int, dict[str, Timing]] = field(default_factory=dict)


def compile_file(model: str, extra: list[str], out: Path) -> bytes:
    run_graphc(["compile", model, "--pipeline", "inference", "--dynamic-batch", *extra,
                "-o", str(out)], out.with_suffix(".log"))
    return out.read_bytes()


def counts(model: bytes) -> tuple[int, int]:
    """Nonzero weights and FLOPs (at batch 1) of what onnxruntime runs: its model after
    constant folding (basic optimizations), where a bitmask-encoded weight is dense again, read
    back by graphc."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    weights = sum(int(np.count_nonzero(numpy_helper.to_array(t)))
                  for t in optimized.graph.initializer
                  if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT8)
                  and len(t.dims) >= 1 and np.prod(t.dims) > 1)
    g = from_onnx(optimized.SerializeToString())
    return weights, sum(r.flops for r in layer_table(g))


def time_files(t: Table, x: np.ndarray, rounds: int) -> None:
    name = onnx.load_model_from_string(next(iter(t.files.values()))).graph.input[0].name
    for batch in BATCHES:
        log(f"{t.name}: timing {len(t.files)} files at batch {batch}, {rounds} rounds")
        timings = measure(list(t.files.values()), {name: x[:batch]}, names=list(t.files),
                          rounds=rounds)
        t.timings[batch] = {tm.name: tm for tm in timings}


def ratio(tm: Timing) -> str:
    return f"{tm.ratio:.2f}x ({tm.ratio_low:.2f}-{tm.ratio_high:.2f})"


def digits_rows(t: Table) -> list[list[str]]:
    dense = t.files["dense"]
    rows = []
    for form, model in t.files.items():
        params, flops = counts(model)
        base_params, base_flops = counts(dense)
        rows.append([form, f"{params:,} ({params / base_params:.2f}x)",
                     f"{flops:,} ({flops / base_flops:.2f}x)",
                     f"{fmt_bytes(len(model))} ({len(model) / len(dense):.3f}x)",
                     f"{100 * t.accuracy[form]:.2f}%",
                     *[ratio(t.timings[b][form]) for b in BATCHES]])
    return rows


def cnn_part(ckpt: Path, work: Path, steps: int, epochs: int) -> Table:
    t = Table("cnn")
    t.files["dense"] = compile_file("cnn", ["--weights", str(ckpt)], work / "cnn-dense.onnx")
    for form, options in (("flops 0.5", ["--target-flops", "0.5"]),
                          ("channels 50%", ["--sparsity", "0.5"]),
                          ("channels 50%, round 16", ["--sparsity", "0.5", "--round-to", "16"]),
                          ("channels 50%, round 1", ["--sparsity", "0.5", "--round-to", "1"])):
        pruned = work / f"cnn-{len(t.files)}.ckpt"
        log(f"cnn: graphc prune cnn {' '.join(options)}")
        run_graphc(["prune", "cnn", "--weights", str(ckpt), "--data", "digits", *options,
                    "--steps", str(steps), "--finetune-epochs", str(epochs),
                    "--latency-batch", "0", "-o", str(pruned)], pruned.with_suffix(".log"))
        t.files[form] = compile_file("cnn", ["--weights", str(pruned)],
                                     pruned.with_suffix(".onnx"))
    return t


def mlp_part(ckpt: Path, work: Path, steps: int, epochs: int) -> Table:
    """``epochs`` per step: the recipe of docs/pruning.md (10), 1 for --quick."""
    t = Table("mlp")
    pruned = work / "mlp-magnitude.ckpt"
    log("mlp: graphc prune mlp --method magnitude --sparsity 0.9")
    run_graphc(["prune", "mlp", "--weights", str(ckpt), "--data", "digits", "--method",
                "magnitude", "--sparsity", "0.9", "--steps", str(steps), "--finetune-epochs",
                str(epochs), "--latency-batch", "0", "-o", str(pruned)],
               pruned.with_suffix(".log"))
    t.files["dense"] = compile_file("mlp", ["--weights", str(ckpt)], work / "mlp-dense.onnx")
    t.files["90% zeros, dense tensors"] = compile_file(
        "mlp", ["--weights", str(pruned)], work / "mlp-masked.onnx")
    t.files["bitmask + fp32"] = compile_file(
        "mlp", ["--weights", str(pruned), "--passes", "prune-magnitude"],
        work / "mlp-bitmask-fp32.onnx")
    t.files["bitmask + int8"] = compile_file(
        "mlp", ["--weights", str(pruned), "--passes", "quantize-int8,prune-magnitude",
                "--calibrate", "digits", "--prefer", "size", "--per-tensor"],
        work / "mlp-bitmask-int8.onnx")
    return t


def resnet_part(work: Path, rounds: int) -> list[list[str]]:
    files = {"dense": compile_file("resnet18", [], work / "resnet18.onnx")}
    for form, options in (("channels 50%", []), ("channels 50%, round 16",
                                                 ["--round-to", "16"])):
        out = work / f"resnet18-{len(files)}.onnx"
        files[form] = compile_file("resnet18", ["--passes", "prune-channels", "--prune-amount",
                                                "0.5", *options], out)
    x = load("resnet18").example_inputs(seed=0)
    name = onnx.load_model_from_string(files["dense"]).graph.input[0].name
    log(f"resnet18: timing {len(files)} files at batch 1, {rounds} rounds")
    timings = {tm.name: tm for tm in measure(list(files.values()), {name: x["x"]},
                                             names=list(files), rounds=rounds)}
    rows = []
    base_params, base_flops = counts(files["dense"])
    for form, model in files.items():
        params, flops = counts(model)
        rows.append([form, f"{params:,} ({params / base_params:.2f}x)",
                     f"{flops:,} ({flops / base_flops:.2f}x)",
                     f"{fmt_bytes(len(model))} ({len(model) / len(files['dense']):.3f}x)",
                     ratio(timings[form])])
    return rows


def torch_rows(work: Path, rounds: int) -> list[str]:
    torch = harness.import_optional("torch")
    if torch is None:
        return ["torch is not installed: torch.nn.utils.prune was not measured in this run.", ""]
    from torch.nn.utils import prune

    # graphc's mlp, layer for layer (64 -> 128 -> 64 -> 10), with a free batch dimension.
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    dense, masked = work / "torch-dense.onnx", work / "torch-pruned.onnx"
    x = torch.zeros(1, 64)
    axes = {"x": {0: "batch"}, "y": {0: "batch"}}
    torch.onnx.export(net, x, str(dense), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes=axes)
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            prune.l1_unstructured(layer, "weight", amount=0.9)
            prune.remove(layer, "weight")
    torch.onnx.export(net, x, str(masked), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes=axes)
    rng = np.random.default_rng(0)
    times = {batch: measure([dense.read_bytes(), masked.read_bytes()],
                            {"x": rng.standard_normal((batch, 64)).astype(np.float32)},
                            names=["dense", "masked"], rounds=rounds)[1] for batch in BATCHES}
    return [f"PyTorch's `torch.nn.utils.prune` on the same mlp (l1_unstructured 90% of each "
            f"Linear's weight, masks made permanent, `torch.onnx.export`; torch "
            f"{torch.__version__}): file {masked.stat().st_size / dense.stat().st_size:.3f}x "
            "of its dense export, time " + ", ".join(f"{ratio(t)} at batch {b}"
                                                     for b, t in times.items()) + ".", ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, metavar="N",
                        help="interleaved timing rounds per table (default 21; 5 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5 rounds, short training, no resnet18")
    parser.add_argument("--workdir", metavar="DIR",
                        help="keep the files (and reuse the checkpoints) in DIR")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick and args.rounds == 21 else args.rounds
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    epochs, steps, tune, mlp_tune = (3, 2, 1, 1) if args.quick else (EPOCHS, 4, 5, 10)
    cpu = cpu_info()
    with harness.workdir(args.workdir, "prune") as work:
        tables = [cnn_part(train_digits("cnn", epochs, work), work, steps, tune),
                  mlp_part(train_digits("mlp", epochs, work), work, steps, mlp_tune)]
        core = harness.pin_to_one_core()
        _, test_set = load_data("digits")
        for t in tables:
            graph = load(t.name).build()
            x = fit_data(test_set, graph.types(graph.inputs[0])[0].shape, "test split")
            t.accuracy = {form: onnx_accuracy(model, test_set) for form, model in t.files.items()}
            time_files(t, x, rounds)
        resnet = None if args.quick else resnet_part(work, rounds)
        torch_lines = torch_rows(work, rounds)

    cnn, mlp = tables
    title = (f"pruning ({datetime.date.today().isoformat()}"
             f"{', QUICK smoke run: not a measurement' if args.quick else ''})")
    head = ["file", "nonzero weights", "FLOPs (onnxruntime runs)", "size", "test acc.",
            "time / dense, batch 1", "time / dense, batch 256"]
    out = [f"### {title}", "", f"- cpu: {cpu.describe()}",
           f"- onnxruntime {ort.__version__} CPU, 1 intra-op thread, all graph optimizations; "
           f"{rounds} interleaved rounds per table; ratio = median of per-round ratios to the "
           "dense file (p25-p75 in parentheses), lower is faster", "",
           f"#### digits cnn: channels (trained {epochs} epochs; `graphc prune`, {steps} steps, "
           f"{tune} fine-tuning epochs each)", "", md_table(head, digits_rows(cnn), "lrrrrrr"), "",
           f"#### digits mlp: magnitude, 90% of the weights (same training; {steps} steps, "
           f"{mlp_tune} fine-tuning epochs each)", "",
           md_table(head, digits_rows(mlp), "lrrrrrr"), ""]
    if resnet is not None:
        out += ["#### resnet18 (224x224, random weights, batch 1; `--passes prune-channels`, "
                "one shot)", "", md_table(["file", "nonzero weights", "FLOPs", "size",
                                           "time / dense, batch 1"], resnet, "lrrrr"), ""]
    out += torch_lines
    drop = 100 * (cnn.accuracy["dense"] - cnn.accuracy["channels 50%"])
    t256 = cnn.timings[256]["channels 50%"]
    mlp_drop = 100 * (mlp.accuracy["dense"] - mlp.accuracy["bitmask + int8"])
    size_fp32 = len(mlp.files["bitmask + fp32"]) / len(mlp.files["dense"])
    size_int8 = len(mlp.files["bitmask + int8"]) / len(mlp.files["dense"])
    rows = [[f"cnn, 50% of channels: batch 256 time <= {CNN_LATENCY:.2f}x dense", ratio(t256),
             verdict(t256.ratio <= CNN_LATENCY)],
            [f"cnn, 50% of channels: accuracy drop <= {CNN_DROP} points", f"{drop:.2f}",
             verdict(drop <= CNN_DROP)],
            [f"mlp, 90% sparsity: bitmask + int8 file <= {MLP_SIZE_INT8}x dense",
             f"{size_int8:.3f}x", verdict(size_int8 <= MLP_SIZE_INT8)],
            [f"mlp, 90% sparsity: bitmask + fp32 file <= {MLP_SIZE_FP32}x dense",
             f"{size_fp32:.3f}x", verdict(size_fp32 <= MLP_SIZE_FP32)],
            [f"mlp, 90% sparsity: accuracy drop <= {MLP_DROP} point (int8 file)",
             f"{mlp_drop:.2f}", verdict(mlp_drop <= MLP_DROP)]]
    out += ["#### The issue's targets", "", md_table(["target", "measured", "verdict"], rows), ""]
    out += harness.machine_lines(core, [onnx, ort, graphc], threads="; onnxruntime intra_op 1, "
                                 "inter_op 1, sequential")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
