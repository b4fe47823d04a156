"""Training speed and accuracy on digits: graphc's compiled step on onnxruntime, the same step on
graphc's interpreter, and PyTorch eager CPU on the same architecture (when torch is installed).

Everything runs in one process on one thread (and one core when the OS allows). For the zoo
models ``mlp`` and ``cnn`` at batch 64 (SGD, lr 0.05, momentum 0.9, weight decay 5e-4; the
digits train split, 1347 images, 21 full batches per epoch, the last partial batch dropped):

1. Time per epoch. ``graphc``: one epoch of ``OrtRunner.run`` calls, including what a user's
   loop does on the host per step (dropout masks drawn with numpy, one-hot targets); the step
   is compiled once, outside the timing. ``interpreter``: the same step graph on
   ``graphc.interpret`` (one epoch per round). ``torch``: one epoch of
   ``bench/torch_reference.train_epoch`` from the same initial weights and batches. The rounds
   run the cases interleaved; the ratio is the median over rounds of graphc / torch within
   the round (this machine is noisy). Target: graphc / torch <= 1.0.
2. Accuracy (skipped with ``--quick``): 30 epochs with ``graphc.train.train`` (the defaults of
   ``graphc train``: cosine schedule), and torch with the same optimizer, schedule, batch order
   and initial weights. Targets: mlp >= 97.5%, cnn >= 99.0% test accuracy on the fixed split.

Run it from the repository root::

    python bench/train_speed.py             # 7 timed rounds after a warm-up, ~3 minutes
    python bench/train_speed.py --quick     # smoke run: 1 round, no accuracy runs

The tables go to stdout, progress to stderr. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import harness
import numpy as np
from harness import fmt_s, log, md_table, verdict

import graphc
from graphc.models import load
from graphc.train.data import Dataset, load_digits, one_hot
from graphc.train.loop import TrainConfig, train
from graphc.train.runner import InterpreterRunner, OrtRunner, Runner
from graphc.train.step import compile_step

torch_reference = harness.import_optional("torch_reference")

MODELS = ("mlp", "cnn")
BATCH, LR, MOMENTUM, WEIGHT_DECAY, EPOCHS = 64, 0.05, 0.9, 5e-4, 30
TARGETS = {"mlp": 0.975, "cnn": 0.990}


def digits(model: str) -> tuple[Dataset, Dataset]:
    return load_digits(layout="flat" if model == "mlp" else "image")


def batches(data: Dataset, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(data.batches(BATCH, seed=np.random.default_rng([0, epoch]), drop_last=True))


class GraphcEpoch(harness.Stages):
    """One epoch of the compiled step, on onnxruntime or on the interpreter."""

    def __init__(self, model: str, backend: str) -> None:
        super().__init__()
        self.name = f"{model} {backend}"
        self.model = model
        train_set, _ = digits(model)
        self.batches = batches(train_set, 0)
        optimizer = graphc.train.optim.SGD(lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.spec = compile_step(load(model).build(batch=BATCH), optimizer)
        self.runner: Runner = (OrtRunner(self.spec, threads=1) if backend == "onnxruntime"
                               else InterpreterRunner(self.spec))
        self.rng = np.random.default_rng(0)

    def run(self) -> tuple[dict[str, float], dict[str, Any]]:
        start = time.perf_counter()
        for x, y in self.batches:
            masks = self.spec.dropout_masks(self.rng)
            out = self.runner.run({"x": x, "target": one_hot(y, 10), **masks}, LR)
        return {"epoch": time.perf_counter() - start}, {"loss": out.loss}


class TorchEpoch(harness.Stages):
    """One epoch of PyTorch eager from the same weights and batches."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.name = f"{model} torch"
        g = load(model).build(batch=BATCH)
        params = {n: np.array(g.nx.nodes[n]["value"]) for n in torch_reference.param_names(model)}
        self.module = torch_reference.build(model, params)
        self.optimizer = torch_reference.make_optimizer(self.module, "sgd", LR, MOMENTUM,
                                                        WEIGHT_DECAY)
        import torch

        train_set, _ = digits(model)
        self.batches = [(torch.from_numpy(x), torch.from_numpy(y))
                        for x, y in batches(train_set, 0)]

    def run(self) -> tuple[dict[str, float], dict[str, Any]]:
        start = time.perf_counter()
        loss = torch_reference.train_epoch(self.module, self.optimizer, self.batches)
        return {"epoch": time.perf_counter() - start}, {"loss": loss}


def ratios(a: harness.Stages, b: harness.Stages) -> list[float]:
    return [x / y for x, y in zip(a.samples["epoch"], b.samples["epoch"], strict=True)]


def graphc_accuracy(model: str) -> tuple[float, float]:
    train_set, test_set = digits(model)
    config = TrainConfig(epochs=EPOCHS, batch=BATCH, lr=LR, momentum=MOMENTUM,
                         weight_decay=WEIGHT_DECAY, threads=1)
    start = time.perf_counter()
    result = train(lambda b: load(model).build(batch=b), train_set, test_set, config,
                   progress=False)
    return result.test_accuracy, time.perf_counter() - start


def torch_accuracy(model: str) -> tuple[float, float]:
    import torch

    train_set, test_set = digits(model)
    g = load(model).build(batch=BATCH)
    module = torch_reference.build(model, {n: np.array(g.nx.nodes[n]["value"])
                                           for n in torch_reference.param_names(model)})
    opt = torch_reference.make_optimizer(module, "sgd", LR, MOMENTUM, WEIGHT_DECAY)
    schedule = graphc.train.optim.schedule_from_spec("cosine", LR, total=EPOCHS)
    start = time.perf_counter()
    for epoch in range(EPOCHS):
        for group in opt.param_groups:
            group["lr"] = schedule(epoch)
        torch_reference.train_epoch(module, opt, [(torch.from_numpy(x), torch.from_numpy(y))
                                                  for x, y in batches(train_set, epoch)])
    return torch_reference.accuracy(module, test_set.x, test_set.y), time.perf_counter() - start


def report(cases: dict[str, harness.Stages], accuracy: dict[str, Any], repeats: int,
           core: int | None, quick: bool) -> str:
    out = [harness.heading("Training speed and accuracy (digits, batch 64, one thread)", quick)]
    rows = []
    for model in MODELS:
        ort, interp = cases[f"{model} onnxruntime"], cases[f"{model} interpreter"]
        torch_case = cases.get(f"{model} torch")
        r = ratios(ort, torch_case) if torch_case else []
        ratio = statistics.median(r) if r else None
        rows.append((
            model, fmt_s(ort.median("epoch")), fmt_s(interp.median("epoch")),
            fmt_s(torch_case.median("epoch")) if torch_case else "not installed",
            f"{ort.median('epoch') / interp.median('epoch'):.3f}",
            f"{ratio:.2f} (min {min(r):.2f}, max {max(r):.2f})" if r else "-",
            verdict(ratio <= 1.0) if ratio is not None else "-"))
    out.append(md_table(("model", "graphc (onnxruntime)", "interpreter", "PyTorch eager",
                         "graphc / interpreter", "graphc / PyTorch (per round)",
                         "target <= 1.0"), rows, "lrrrrrl"))
    slow = len(cases["mlp interpreter"].samples["epoch"])
    out.append(f"\nMedians over {harness.plural(repeats, 'round')} of one epoch (the "
               f"interpreter: {harness.plural(slow, 'round')}, after the others). The ratio is "
               "a median: single rounds range as shown.")
    if accuracy:
        rows = []
        for model in MODELS:
            ours, ours_s = accuracy[model]["graphc"]
            theirs = accuracy[model].get("torch")
            rows.append((model, f"{100 * ours:.2f}%", f"{ours_s:.1f} s",
                         f"{100 * theirs[0]:.2f}%" if theirs else "not installed",
                         f"{theirs[1]:.1f} s" if theirs else "-",
                         f">= {100 * TARGETS[model]:.1f}%", verdict(ours >= TARGETS[model])))
        out.append("\n" + md_table(("model", "graphc test accuracy", "graphc 30 epochs",
                                    "PyTorch test accuracy", "PyTorch 30 epochs", "target",
                                    "verdict"), rows, "lrrrrrl"))
        out.append("\n30 epochs, SGD momentum 0.9, lr 0.05 with cosine annealing, weight decay "
                   "5e-4, same initial weights and batch order; graphc's time includes the "
                   "per-epoch test evaluation.")
    import onnxruntime

    versions: list[Any] = [graphc, onnxruntime]
    if torch_reference is not None:
        import torch

        versions.append(torch)
    out.append("\n" + "\n".join(harness.machine_lines(core, versions)))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = harness.arg_parser(__doc__, "smoke run: 1 round, no warm-up, no accuracy runs")
    args = harness.parse_args(parser, argv)
    core = harness.pin_to_one_core()
    if torch_reference is not None:
        torch_reference.one_thread()
    else:
        log("torch is not installed: no PyTorch reference")
    repeats, warmup = harness.repeats_and_warmup(args)
    cases: dict[str, harness.Stages] = {}
    for model in MODELS:
        cases[f"{model} onnxruntime"] = GraphcEpoch(model, "onnxruntime")
        if torch_reference is not None:
            cases[f"{model} torch"] = TorchEpoch(model)
    harness.run_rounds(list(cases.values()), repeats, warmup)  # type: ignore[arg-type]
    slow = [GraphcEpoch(model, "interpreter") for model in MODELS]
    harness.run_rounds(slow, 1 if args.quick else 3, 0)  # type: ignore[arg-type]
    cases.update({c.name: c for c in slow})
    accuracy: dict[str, Any] = {}
    if not args.quick:
        for model in MODELS:
            log(f"accuracy: {model} graphc, {EPOCHS} epochs")
            accuracy[model] = {"graphc": graphc_accuracy(model)}
            if torch_reference is not None:
                log(f"accuracy: {model} torch, {EPOCHS} epochs")
                accuracy[model]["torch"] = torch_accuracy(model)
    print(report(cases, accuracy, repeats, core, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
