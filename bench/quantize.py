"""Measure graphc's quantize-int8 pass against fp32 and onnxruntime's quantize_static, as ratios.

Everything is measured in one run, on this machine, as a ratio to the fp32 file: the CPU and its
int8 flags are printed first (``graphc.compress.latency.cpu_info``), because int8 speed depends
on them (AVX-512 VNNI / AVX-VNNI / AMX pay for int8 convolutions; AVX2 alone mostly does not).
Latency comes from ``graphc.compress.latency.measure``: one onnxruntime thread, all graph
optimizations, the files of one table interleaved in rounds (order rotated each round), the
ratio = median over rounds of (file time / fp32 time in the same round), with the 25th-75th
percentile of the per-round ratios in parentheses.

For each model, five files (all with a free batch dimension, ``--dynamic-batch``):

- ``fp32``: ``graphc compile MODEL --pipeline inference --dynamic-batch``;
- ``graphc size``: the same plus ``--passes quantize-int8 --prefer size`` (every layer whose
  int8 form keeps the output error under the pass's limit goes int8);
- ``graphc speed``: the same with ``--prefer speed`` (the default: a layer stays int8 only if
  it is also faster on this CPU, measured by the pass at the model's own batch, 1);
- ``ORT S8S8`` / ``ORT U8S8``: ``onnxruntime.quantization.quantize_static`` of the fp32 file,
  QDQ format, per-channel weights, MinMax calibration, with its default int8 activations (S8S8)
  and with uint8 activations (U8S8, activation QUInt8 / weight QInt8), calibrated on the same
  inputs as graphc.

The graphc files are made by calling ``graphc.cli.main`` with the same argv as the command
line, in this process (its output is kept in the work folder's ``*.log``).

1. digits ``cnn`` and ``mlp``: trained first with ``graphc train MODEL --data digits --epochs 15
   --seed 0`` (in this process, checkpoint in a temporary folder; nothing is downloaded), then
   compiled with ``--weights CKPT --calibrate digits`` (the first 256 training images; the same
   256 feed quantize_static). Columns: layers in int8 (Conv/Gemm/MatMul whose weight comes from
   a DequantizeLinear), test accuracy on the 450 digits test images (onnxruntime), file size
   and its ratio to fp32, latency ratio at batch 1 (the first test image) and batch 256 (the
   first 256 test images), and the weight DequantizeLinear nodes onnxruntime runs at run time
   (read from its profile; 0 is the good answer: any other runs the layer in fp32 and
   dequantizes its weight on every call).
2. ``resnet18`` (224x224, random weights with seed 0, batch 1): calibrated on 8 synthetic
   inputs, seeded standard-normal images (not real photographs: the pass and quantize_static see
   the same 8); the output difference is max|y - y_fp32| / max|y_fp32| over 4 other seeded
   inputs, on onnxruntime. Also: graphc's speed file against the best quantize_static file,
   measured directly (the best ORT file first in a second interleaved run).

A last table states the issue's targets with what this run measured.

Run it from the repository root::

    python bench/quantize.py              # 21 rounds per table, about 4 minutes
    python bench/quantize.py --rounds 41  # steadier ratios
    python bench/quantize.py --quick      # smoke run: 5 rounds, 3 epochs, no resnet18

The tables go to stdout, progress to stderr. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
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
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

import graphc
from graphc.cli.bench import NOISE
from graphc.cli.checkpoints import load_data, onnx_accuracy
from graphc.cli.compile import CALIBRATION_SAMPLES, calibration_data
from graphc.compress.latency import Timing, cpu_info, measure, runtime_weight_dequantize
from graphc.models import load
from graphc.train.loop import fit_data

DIGITS_MODELS = ("cnn", "mlp")
FORMS = ("fp32", "graphc size", "graphc speed", "ORT S8S8", "ORT U8S8")
ORT_FORMS = {"ORT S8S8": QuantType.QInt8, "ORT U8S8": QuantType.QUInt8}
BATCHES = (1, 256)
EPOCHS = 15
RESNET_CALIBRATION = 8  # synthetic images, seed CALIBRATION_SEED
RESNET_CHECK = 4  # other synthetic images, seed CHECK_SEED
CALIBRATION_SEED, CHECK_SEED = 0, 1
# The targets.
SPEEDUP_OVER_ORT = 0.90  # graphc's resnet18 file <= 0.90x the time of the best quantize_static
VNNI_GOAL = 0.33  # resnet18 int8 / fp32 time on a VNNI CPU
SIZE_GOAL = 0.26  # resnet18 --prefer size file / fp32 file
ACCURACY_DROP = 0.3  # digits cnn, points


@dataclass
class Model:
    """The five files of one model, what the pass said, and the measurements."""

    name: str
    files: dict[str, bytes] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    dynamic: dict[str, bool] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    diff: dict[str, float] = field(default_factory=dict)
    timings: dict[int, dict[str, Timing]] = field(default_factory=dict)
    slow_dq: dict[str, int] = field(default_factory=dict)


# ----- making the files ---------------------------------------------------------------------


def pass_notes(log_text: str) -> list[str]:
    """The quantize-int8 notes of a compile log that say why a layer stayed fp32, and the count."""
    return [line.strip() for line in log_text.splitlines()
            if " fp32: " in line or "all layers fp32" in line
            or line.strip().startswith("quantized ")]


def compile_forms(m: Model, weights: list[str], calibrate: str, work: Path) -> None:
    """Write fp32, graphc size and graphc speed files of ``m`` with ``graphc compile``."""
    base = ["compile", m.name, "--pipeline", "inference", "--dynamic-batch", *weights]
    quant = ["--passes", "quantize-int8", "--calibrate", calibrate]
    for form, more in (("fp32", []), ("graphc size", [*quant, "--prefer", "size"]),
                       ("graphc speed", [*quant, "--prefer", "speed"])):
        path = work / f"{m.name}-{form.replace(' ', '-')}.onnx"
        log(f"{m.name}: graphc {' '.join([*base, *more])}")
        text = run_graphc([*base, *more, "-o", str(path)], path.with_suffix(".log"))
        m.files[form] = path.read_bytes()
        if form != "fp32":
            m.notes[form] = pass_notes(text)


class Reader(CalibrationDataReader):
    """Feed calibration samples to quantize_static one at a time, as graphc's pass takes them
    (a batch of the model's own size, 1)."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.feeds = iter([{name: x[k:k + 1]} for k in range(len(x))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def ort_forms(m: Model, calibration: np.ndarray, work: Path) -> None:
    """Add quantize_static's QDQ per-channel files (S8S8 and U8S8) of ``m``'s fp32 file."""
    src = work / f"{m.name}-fp32.onnx"
    name = onnx.load_model_from_string(m.files["fp32"]).graph.input[0].name
    for form, activation in ORT_FORMS.items():
        dst = work / f"{m.name}-{form.replace(' ', '-')}.onnx"
        log(f"{m.name}: quantize_static QDQ per-channel, activations {activation.name}")
        quantize_static(str(src), str(dst), Reader(name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=activation, weight_type=QuantType.QInt8)
        m.files[form] = dst.read_bytes()


def has_dynamic_batch(model: bytes) -> bool:
    """Whether every graph input and output has a named (free) first dimension."""
    graph = onnx.load_model_from_string(model).graph
    dims = [v.type.tensor_type.shape.dim[0] for v in [*graph.input, *graph.output]]
    return all(d.dim_param and not d.HasField("dim_value") for d in dims)


def int8_layers(model: bytes) -> tuple[int, int]:
    """Return (layers whose weight comes from a DequantizeLinear, Conv/Gemm/MatMul layers)."""
    graph = onnx.load_model_from_string(model).graph
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    return sum(1 for n in layers if n.input[1] in dequantized), len(layers)


# ----- measuring ----------------------------------------------------------------------------


def inputs_of(m: Model, x: np.ndarray) -> dict[str, np.ndarray]:
    return {onnx.load_model_from_string(m.files["fp32"]).graph.input[0].name: x}


def time_forms(m: Model, feeds: dict[str, np.ndarray], batch: int, rounds: int) -> None:
    log(f"{m.name}: timing {len(FORMS)} files at batch {batch}, {rounds} interleaved rounds")
    timings = measure([m.files[f] for f in FORMS], feeds, names=list(FORMS), rounds=rounds)
    m.timings[batch] = dict(zip(FORMS, timings, strict=True))


def check_files(m: Model, feeds: dict[str, np.ndarray]) -> None:
    for form in FORMS:
        m.dynamic[form] = has_dynamic_batch(m.files[form])
        m.slow_dq[form] = len(runtime_weight_dequantize(m.files[form], feeds))


def relative_diff(m: Model, feeds: Sequence[dict[str, np.ndarray]]) -> None:
    """max |y - y_fp32| / max |y_fp32| over ``feeds``, every file on onnxruntime (1 thread)."""
    from graphc.onnxio.runtime import session

    sessions = {f: session(m.files[f], threads=1) for f in FORMS}
    want = [sessions["fp32"].run(None, f)[0] for f in feeds]
    scale = max(float(np.max(np.abs(y))) for y in want)
    for form in FORMS:
        got = [sessions[form].run(None, f)[0] for f in feeds]
        m.diff[form] = max(float(np.max(np.abs(a - b))) for a, b in zip(got, want, strict=True))
        m.diff[form] /= scale


def slower(t: Timing) -> bool:
    """graphc bench's "slower": the middle half of the per-round ratios above 1 and the ratio at
    least NOISE (5%) above it."""
    return t.ratio_low > 1.0 and t.ratio >= 1.0 + NOISE


def ratio_cell(t: Timing) -> str:
    if t.name == "fp32":
        return "1.00"
    return f"{t.ratio:.2f} ({t.ratio_low:.2f}-{t.ratio_high:.2f})"


def layers_cell(m: Model, form: str) -> str:
    q, n = int8_layers(m.files[form])
    return f"{q} / {n}"


def size_cells(m: Model, form: str) -> list[str]:
    size, ref = len(m.files[form]), len(m.files["fp32"])
    return [fmt_bytes(size), f"{size / ref:.2f}"]


def digits_rows(m: Model) -> list[list[str]]:
    rows = []
    for form in FORMS:
        acc = m.accuracy[form]
        drop = 100 * (m.accuracy["fp32"] - acc)
        rows.append([m.name, form, layers_cell(m, form), f"{100 * acc:.2f}%",
                     "-" if form == "fp32" else f"{drop:.2f}", *size_cells(m, form),
                     *[ratio_cell(m.timings[b][form]) for b in BATCHES],
                     str(m.slow_dq[form]), "yes" if m.dynamic[form] else "**no**"])
    return rows


def resnet_rows(m: Model) -> list[list[str]]:
    t = m.timings[1]
    return [[form, layers_cell(m, form), *size_cells(m, form), ratio_cell(t[form]),
             f"{1e3 * t[form].median:.1f} ms", "-" if form == "fp32" else f"{m.diff[form]:.4f}",
             str(m.slow_dq[form]), "yes" if m.dynamic[form] else "**no**"] for form in FORMS]


# ----- the parts ----------------------------------------------------------------------------


def digits_part(name: str, epochs: int, rounds: int, work: Path) -> Model:
    m = Model(name)
    ckpt = train_digits(name, epochs, work)
    compile_forms(m, ["--weights", str(ckpt)], "digits", work)
    graph = load(name).build()
    # The images of `--calibrate digits`: graphc compile's own function, so the same 256.
    calib = calibration_data("digits", graph, None)
    assert len(calib) == CALIBRATION_SAMPLES
    ort_forms(m, calib, work)
    _, test_set = load_data("digits")
    for form in FORMS:
        m.accuracy[form] = onnx_accuracy(m.files[form], test_set)
    x = fit_data(test_set, graph.types(graph.inputs[0])[0].shape, "test split")
    check_files(m, inputs_of(m, x[:1]))
    for batch in BATCHES:
        time_forms(m, inputs_of(m, x[:batch]), batch, rounds)
    return m


def resnet_part(rounds: int, work: Path) -> tuple[Model, Timing, str]:
    m = Model("resnet18")
    shape = load("resnet18").build().types("x")[0].shape
    rng = np.random.default_rng(CALIBRATION_SEED)
    calib = rng.standard_normal((RESNET_CALIBRATION, *shape[1:])).astype(np.float32)
    npz = work / "resnet18-calibration.npz"
    np.savez(npz, x=calib)
    compile_forms(m, [], str(npz), work)
    ort_forms(m, calib, work)
    rng = np.random.default_rng(CHECK_SEED)
    check = [inputs_of(m, rng.standard_normal((1, *shape[1:])).astype(np.float32))
             for _ in range(RESNET_CHECK)]
    relative_diff(m, check)
    check_files(m, check[0])
    time_forms(m, check[0], 1, rounds)
    best = min(ORT_FORMS, key=lambda f: m.timings[1][f].ratio)
    log(f"resnet18: timing graphc speed against {best}, {rounds} interleaved rounds")
    head = measure([m.files[best], m.files["graphc speed"]], check[0],
                   names=[best, "graphc speed"], rounds=rounds)[1]
    return m, head, best


# ----- the report ---------------------------------------------------------------------------


def notes_block(models: Sequence[Model]) -> list[str]:
    lines = ["quantize-int8's notes on the layers it left in fp32 (from each compile's report):",
             "", "```"]
    for m in models:
        for form in ("graphc size", "graphc speed"):
            for note in m.notes.get(form, []):
                lines.append(f"{m.name:<9} {form:<13} {note}")
    return [*lines, "```", ""]


def targets(digits: dict[str, Model], resnet: tuple[Model, Timing, str] | None,
            vnni: bool) -> list[list[str]]:
    rows = []
    if resnet is not None:
        r, head, best = resnet
        rows.append([f"resnet18: graphc speed <= {SPEEDUP_OVER_ORT:.2f}x the time of the best "
                     "quantize_static form", f"{head.ratio:.2f}x {best} ({head.ratio_low:.2f}-"
                     f"{head.ratio_high:.2f})", verdict(head.ratio <= SPEEDUP_OVER_ORT)])
        t = r.timings[1]["graphc speed"]
        rows.append([f"resnet18: graphc int8 <= {VNNI_GOAL:.2f}x fp32 time (goal on a VNNI CPU)",
                     f"speed {t.ratio:.2f}x, size {r.timings[1]['graphc size'].ratio:.2f}x",
                     verdict(t.ratio <= VNNI_GOAL) if vnni else
                     "not testable here (no VNNI on this CPU)"])
        size = len(r.files["graphc size"]) / len(r.files["fp32"])
        rows.append([f"resnet18: --prefer size file <= {SIZE_GOAL:.2f}x fp32 size", f"{size:.3f}",
                     verdict(size <= SIZE_GOAL)])
    cells, ok = [], True
    for m in [*digits.values(), *([resnet[0]] if resnet else [])]:
        for batch, t in sorted(m.timings.items()):
            s = t["graphc speed"]
            cells.append(f"{m.name} b{batch} {s.ratio:.2f}")
            ok = ok and not slower(s)
    rows.append(["no zoo model slower than fp32 at batch 1 or 256 (graphc speed, the default)",
                 ", ".join(cells), verdict(ok)])
    if "cnn" in digits:
        c = digits["cnn"]
        drops = {f: 100 * (c.accuracy["fp32"] - c.accuracy[f]) for f in ("graphc size",
                                                                            "graphc speed")}
        q, n = int8_layers(c.files["graphc size"])
        rows.append([f"digits cnn: accuracy drop <= {ACCURACY_DROP} points after PTQ",
                     f"size ({q}/{n} layers int8) {drops['graphc size']:.2f}, speed "
                     f"{drops['graphc speed']:.2f}",
                     verdict(max(drops.values()) <= ACCURACY_DROP)])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, metavar="N",
                        help="interleaved timing rounds per table (default 21; 5 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5 rounds, 3 training epochs, no resnet18")
    parser.add_argument("--workdir", metavar="DIR",
                        help="keep the files (and reuse the checkpoints) in DIR instead of a "
                             "temporary folder deleted at the end")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick and args.rounds == 21 else args.rounds
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    epochs = 3 if args.quick else EPOCHS
    cpu = cpu_info()

    with harness.workdir(args.workdir, "quantize") as work:
        # Training uses onnxruntime's threads; everything after it runs on one core.
        for name in DIGITS_MODELS:
            train_digits(name, epochs, work)
        core = harness.pin_to_one_core()
        digits = {name: digits_part(name, epochs, rounds, work) for name in DIGITS_MODELS}
        resnet = None if args.quick else resnet_part(rounds, work)

    title = (f"int8 quantization ({datetime.date.today().isoformat()}"
             f"{', QUICK smoke run: not a measurement' if args.quick else ''})")
    out = [f"### {title}", "",
           f"- cpu: {cpu.describe()}",
           f"- onnxruntime {ort.__version__} CPU, 1 intra-op thread, all graph optimizations; "
           f"{rounds} interleaved rounds per table; ratio = median of per-round ratios to fp32 "
           "(p25-p75 in parentheses), lower is faster", ""]
    head = ["model", "form", "int8 layers", "test acc.", "drop (pts)", "size", "size / fp32",
            "time / fp32, batch 1", "time / fp32, batch 256", "weight DQ at run time",
            "dynamic batch"]
    rows = [row for m in digits.values() for row in digits_rows(m)]
    out += [f"#### digits (trained {epochs} epochs, seed 0; calibration: the first "
            f"{CALIBRATION_SAMPLES} training images; accuracy on the 450 test images)", "",
            md_table(head, rows, "lllrrrrrrrl"), ""]
    if resnet is not None:
        r, vs_best, best = resnet
        out += [f"#### resnet18 (224x224, random weights seed 0, batch 1; calibration: "
                f"{RESNET_CALIBRATION} synthetic N(0, 1) images, seed {CALIBRATION_SEED}; output "
                f"difference on {RESNET_CHECK} other N(0, 1) images, seed {CHECK_SEED})", "",
                md_table(["form", "int8 layers", "size", "size / fp32", "time / fp32, batch 1",
                          "median time", "max abs diff / max abs fp32", "weight DQ at run time",
                          "dynamic batch"], resnet_rows(r), "llrrrrrrl"), "",
                f"graphc speed / {best} (the faster quantize_static form), measured directly in "
                f"a second interleaved run: {vs_best.ratio:.2f}x ({vs_best.ratio_low:.2f}-"
                f"{vs_best.ratio_high:.2f}).", ""]
    models = [*digits.values(), *([resnet[0]] if resnet else [])]
    out += notes_block(models)
    out += ["#### The issue's targets", "",
            md_table(["target", "measured", "verdict"], targets(digits, resnet, cpu.vnni)), ""]
    out += harness.machine_lines(core, [onnx, ort, graphc], threads="; onnxruntime intra_op 1, "
                                 "inter_op 1, sequential")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
