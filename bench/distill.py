"""Measure distillation on digits: teacher, student trained plainly, student distilled, 5 seeds.

The teacher (zoo ``teacher``, about 100k parameters) is trained once; then for each seed the
student (zoo ``student``, about 2k parameters) is trained twice with the same recipe, once on the
labels alone and once distilled from the teacher (``graphc train student --teacher
teacher:T.ckpt``), all through ``graphc.cli.main`` in this process. The tables give each model's
test accuracy (450 digits test images, on onnxruntime) as mean +- standard deviation over the
seeds with every seed's value, its parameters and file size, and its onnxruntime latency relative
to the teacher (one thread, batch 1 and 256, interleaved rounds; ``graphc.compress.latency``).
Then the student is substituted for the teacher by the ``substitute-student`` pass behind its
accuracy gate (``graphc compile teacher --weights T.ckpt --passes substitute-student --student
student:S.ckpt --gate 1.0 --accuracy digits``) and the written file is checked.

Run it from the repository root::

    python bench/distill.py            # 5 seeds, the recipe of docs/distillation.md
    python bench/distill.py --quick    # smoke run: 2 seeds, a few epochs

The tables go to stdout, progress to stderr. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

# harness sets the thread-pool variables when imported: it must come before numpy (and
# onnxruntime), which read them once. The split keeps isort from moving it below numpy.
import harness
from harness import fmt_bytes, log, md_table, run_graphc, verdict

# isort: split

import onnx
import onnxruntime as ort

import graphc
from graphc.cli.checkpoints import load_data, onnx_accuracy
from graphc.compress.latency import cpu_info, measure
from graphc.models import load
from graphc.train.loop import fit_data

SEEDS = 5
TEACHER_EPOCHS = 30
# The recipe (docs/distillation.md): the same for the plain and the distilled student.
EPOCHS = 100
RECIPE: list[str] = []  # digits augmentation lowered both students here
DISTILL = ["--T", "8", "--alpha", "0.5", "--beta", "0.5", "--tau-squared"]
GAIN = 0.5  # the target: distilled >= plain + 0.5 points, averaged over the seeds
BATCHES = (1, 256)


def train(argv: list[str], out: Path) -> Path:
    if not out.exists():
        log(f"graphc train {' '.join(argv)}")
        run_graphc(["train", *argv, "-o", str(out)], out.with_suffix(".log"))
    return out


def compile_file(model: str, ckpt: Path, out: Path, extra: list[str] = ()) -> bytes:
    run_graphc(["compile", model, "--weights", str(ckpt), "--pipeline", "inference",
                "--dynamic-batch", *extra, "-o", str(out)], out.with_suffix(".compile.log"))
    return out.read_bytes()


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    each = ", ".join(f"{100 * v:.2f}" for v in values)
    return f"{100 * mean:.2f} +- {100 * std:.2f} ({each})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, metavar="N",
                        help="interleaved timing rounds (default 21; 5 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 seeds, 3 epochs")
    parser.add_argument("--workdir", metavar="DIR",
                        help="keep the files (and reuse the checkpoints) in DIR")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick and args.rounds == 21 else args.rounds
    seeds, epochs, teacher_epochs = (2, 3, 3) if args.quick else (SEEDS, EPOCHS, TEACHER_EPOCHS)
    cpu = cpu_info()
    with harness.workdir(args.workdir, "distill") as work:
        teacher = train(["teacher", "--data", "digits", "--epochs", str(teacher_epochs),
                         "--seed", "0"], work / f"teacher-e{teacher_epochs}.ckpt")
        runs: dict[str, list[Path]] = {"plain": [], "distilled": []}
        for seed in range(seeds):
            common = ["student", "--data", "digits", "--epochs", str(epochs), "--seed",
                      str(seed), *RECIPE]
            runs["plain"].append(train(common, work / f"plain-s{seed}-e{epochs}.ckpt"))
            runs["distilled"].append(train(
                [*common, "--teacher", f"teacher:{teacher}", *DISTILL],
                work / f"distilled-T{DISTILL[1]}-s{seed}-e{epochs}.ckpt"))
        core = harness.pin_to_one_core()
        _, test_set = load_data("digits")
        files = {"teacher": compile_file("teacher", teacher, work / "teacher.onnx")}
        accuracy = {"teacher": [onnx_accuracy(files["teacher"], test_set)]}
        for kind, paths in runs.items():
            accuracy[kind] = []
            for k, path in enumerate(paths):
                model = compile_file("student", path, path.with_suffix(".onnx"))
                accuracy[kind].append(onnx_accuracy(model, test_set))
                if k == 0:
                    files[f"student ({kind}, seed 0)"] = model
        best = max(range(seeds), key=lambda k: accuracy["distilled"][k])
        substituted = work / "substituted.onnx"
        log("graphc compile teacher --passes substitute-student")
        try:
            text = run_graphc(["compile", "teacher", "--weights", str(teacher), "--pipeline",
                               "inference", "--passes", "substitute-student", "--student",
                               f"student:{runs['distilled'][best]}", "--gate", "1.0",
                               "--accuracy", "digits", "-o", str(substituted)],
                              substituted.with_suffix(".log"))
        except RuntimeError as err:  # the gate refused the student: that is a result too
            text = "refused: " + str(err).splitlines()[-1].split("failed: ")[-1]
        graph = load("teacher").build()
        x = fit_data(test_set, graph.types(graph.inputs[0])[0].shape, "test split")
        name = onnx.load_model_from_string(files["teacher"]).graph.input[0].name
        timings = {}
        for batch in BATCHES:
            log(f"timing {len(files)} files at batch {batch}, {rounds} rounds")
            timings[batch] = {t.name: t for t in measure(list(files.values()),
                                                         {name: x[:batch]},
                                                         names=list(files), rounds=rounds)}

    title = (f"distillation ({datetime.date.today().isoformat()}"
             f"{', QUICK smoke run: not a measurement' if args.quick else ''})")
    rows = []
    for label, model in files.items():
        kind = label.split()[0] if label == "teacher" else label.split("(")[1].split(",")[0]
        g = graphc.from_onnx(model)
        rows.append([label, spread(accuracy[kind]), f"{g.num_params():,}",
                     fmt_bytes(len(model)),
                     *[f"{timings[b][label].ratio:.2f}x" for b in BATCHES]])
    plain = statistics.mean(accuracy["plain"])
    distilled = statistics.mean(accuracy["distilled"])
    gain = 100 * (distilled - plain)
    gate_line = text if text.startswith("refused") else next(
        (line.strip() for line in text.splitlines() if line.strip().startswith("accuracy")), "")
    out = [f"### {title}", "", f"- cpu: {cpu.describe()}",
           f"- teacher trained {teacher_epochs} epochs (seed 0); each student {epochs} epochs "
           f"with {'`' + ' '.join(RECIPE) + '`' if RECIPE else 'the default settings'}; "
           f"distilled with `{' '.join(DISTILL)}`; seeds "
           f"0-{seeds - 1}",
           f"- onnxruntime {ort.__version__} CPU, 1 intra-op thread, all graph optimizations; "
           f"{rounds} interleaved rounds; time relative to the teacher", "",
           md_table(["model", "test accuracy % (mean +- std over seeds)", "parameters",
                     "file", *[f"time / teacher, batch {b}" for b in BATCHES]], rows,
                    "lrrrrr"), "",
           f"`substitute-student` (teacher -> the distilled student of seed {best}, gate 1.0 "
           f"point): `{gate_line}`", "",
           md_table(["target", "measured", "verdict"],
                    [[f"distilled >= plain + {GAIN} points (mean of {seeds} seeds)",
                      f"{gain:+.2f} points", verdict(gain >= GAIN)]]), ""]
    out += harness.machine_lines(core, [onnx, ort, graphc],
                                 threads="; onnxruntime intra_op 1, inter_op 1, sequential")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
