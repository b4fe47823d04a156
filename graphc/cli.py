"""The ``graphc`` command line: compile, train, show, grad, passes, models and ops.

Errors print one line, ``graphc: error: ...``, and exit 1 (2 for usage errors); ``--debug``
shows the traceback instead.

``graphc train`` writes a checkpoint (``graphc.train.save_checkpoint``) after every epoch. Besides
the arrays and metadata ``graphc.train`` stores, the CLI adds one array, ``graphc.data``: a JSON
string naming the data set and the ``--classes`` subset (and the ``--init`` checkpoint), so that
``--resume`` and ``compile --weights ... --accuracy`` use the same data. The training code
ignores it (it is no graph constant and no state of the step).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from graphc.errors import GraphcError, UsageError


def _load_module(spec: str, verb: str = "compile") -> ModuleType:
    from graphc.models import MODELS, load, load_file

    if spec in MODELS:
        return load(spec)
    if spec.endswith(".py") or "/" in spec or Path(spec).suffix or Path(spec).exists():
        if Path(spec).suffix not in ("", ".py"):
            allowed = "a .py file with build()" + (" or an .onnx file" if verb == "compile"
                                                   else "")
            raise UsageError(f"cannot {verb} {spec!r}", expected=f"a zoo model name, {allowed}",
                             got=f"a {Path(spec).suffix} file")
        return load_file(spec)
    return load(spec)


def _build(module: ModuleType, seed: int) -> Any:
    from graphc.ir import Graph

    try:
        graph = module.build(seed=seed)
    except TypeError as err:
        if "seed" not in str(err):
            raise
        graph = module.build()
    if not isinstance(graph, Graph):
        origin = getattr(module, "__file__", None) or module.__name__
        raise GraphcError(f"build() of {origin} returned {type(graph).__name__}",
                          expected="a graphc Graph (return b.build())",
                          got=type(graph).__name__)
    graph.verify()
    return graph


def example_feeds(module: ModuleType | None, graph: Any, seed: int = 0
                  ) -> dict[str, np.ndarray]:
    """Return the module's ``example_inputs()``, or seeded random inputs of the right shapes."""
    from graphc.testing import random_feeds

    if module is not None and callable(getattr(module, "example_inputs", None)):
        return module.example_inputs()
    return random_feeds(graph, seed)


@dataclass
class Loaded:
    """A model given on the command line: its graph, example inputs, and the original file."""

    graph: Any
    feeds: dict[str, np.ndarray]
    onnx_file: Path | None = None


def load_model(spec: str, seed: int = 0) -> Loaded:
    """Load MODEL: a zoo name, a .py file with build(), or an .onnx file."""
    if spec.endswith(".onnx"):
        from graphc.onnx_import import from_onnx

        graph = from_onnx(spec)
        graph.verify()
        return Loaded(graph, example_feeds(None, graph, seed), Path(spec))
    module = _load_module(spec)
    graph = _build(module, seed)
    return Loaded(graph, example_feeds(module, graph, seed))


def _size(nbytes: int) -> str:
    return f"{nbytes / 1024:,.1f} KiB" if nbytes < 1024**2 else f"{nbytes / 1024**2:,.1f} MiB"


def cmd_compile(args: argparse.Namespace) -> int:
    from graphc.interpret import run
    from graphc.onnx_export import (
        check,
        default_opset,
        max_abs_diff,
        run_onnxruntime,
        to_onnx,
        write_atomic,
    )
    from graphc.pipeline import format_reports, resolve, run_pipeline

    names = resolve(args.passes, args.pipeline)
    if args.accuracy is not None and args.accuracy not in DATA_SETS:
        raise _unknown_data(args.accuracy, "--accuracy")
    loaded = load_model(args.model, args.seed)
    weights = None
    if args.weights:
        weights = _load_weights(args.weights, args.model, loaded, args.seed)
        loaded = Loaded(weights.graph, loaded.feeds, loaded.onnx_file)
    original = loaded.graph
    classes = weights.record.get("classes") if weights is not None else None
    test_set = None
    if args.accuracy is not None:
        # Checked before anything is written: the data must fit the model.
        _, test_set = load_data(args.accuracy, _layout(original), classes)
        _check_fits(original, test_set, args.accuracy)
    graph, reports = run_pipeline(original, names)
    opset = args.opset or default_opset(graph)
    model = to_onnx(graph, opset, dynamic_batch=args.dynamic_batch)
    check(model)
    data = model.SerializeToString(deterministic=True)
    write_atomic(args.output, data)
    print(f"compiled {graph.name} -> {args.output} (opset {opset})")
    if weights is not None:
        print(f"  weights      {args.weights} ({weights.summary})")
    if reports:
        print("  passes")
        print(format_reports(reports, verbose=args.verbose, explain=args.explain))
        print(f"  nodes        {len(original.op_nodes())} -> {len(graph.op_nodes())} ops, "
              f"{len(model.graph.node)} ONNX nodes")
        print(f"  parameters   {original.num_params():,} -> {graph.num_params():,}")
    else:
        print(f"  nodes        {len(graph.op_nodes())} ops, {len(model.graph.node)} ONNX nodes")
        print(f"  parameters   {graph.num_params():,}")
    print(f"  file size    {_size(len(data))}")
    print("  checker      ok (onnx.checker, full_check)")
    if args.verify:
        expected = run(original, loaded.feeds)
        got = run_onnxruntime(data, loaded.feeds)
        scale = max(float(np.max(np.abs(v))) for v in expected.values())
        what = "compiled on onnxruntime vs original on the interpreter" if reports else \
            "interpreter vs onnxruntime"
        print(f"  verify       max abs diff {max_abs_diff(expected, got):.3g} ({what}, output "
              f"scale {scale:.3g})")
        if loaded.onnx_file is not None:
            before = run_onnxruntime(loaded.onnx_file.read_bytes(), loaded.feeds)
            print(f"               max abs diff {max_abs_diff(before, got):.3g} (compiled vs "
                  "original file, both on onnxruntime)")
    if test_set is not None:
        accuracy = onnx_accuracy(data, test_set)
        line = (f"  accuracy     {100 * accuracy:.2f}% on the {args.accuracy} test split"
                f"{_classes_text(classes)} ({len(test_set)} images, the written file on "
                "onnxruntime)")
        print(line)
        if weights is not None and weights.checkpoint.history:
            last = weights.checkpoint.history[-1]
            right = round(accuracy * len(test_set))
            recorded = round(last.test_accuracy * len(test_set))
            same = "the same" if right == recorded else f"the file gets " \
                f"{abs(right - recorded)} {'more' if right > recorded else 'fewer'} images right"
            print(f"               {100 * last.test_accuracy:.2f}% recorded in the checkpoint "
                  f"after epoch {last.epoch} ({same})")
    return 0


# ----- training -----------------------------------------------------------------------------

DATA_SETS = ("digits",)
DATA_KEY = "graphc.data"
PLOT_FORMATS = (".png", ".svg", ".pdf")


def _unknown_data(name: str, option: str) -> GraphcError:
    from graphc.errors import unknown

    return unknown("data set", name, DATA_SETS, cls=UsageError, where=option)


def parse_classes(text: str) -> list[int]:
    """Parse ``--classes``: ``0-4``, ``5,6,7`` or ``0-2,7`` into digit classes, in order.

    >>> parse_classes("5-7,0")
    [5, 6, 7, 0]
    """
    classes: list[int] = []
    try:
        for item in (part.strip() for part in text.split(",")):
            low, dash, high = item.partition("-")
            first, last = int(low), int(high) if dash else int(low)
            if not 0 <= first <= last <= 9:
                raise ValueError(item)
            classes += range(first, last + 1)
    except ValueError:
        raise UsageError(f"cannot read --classes {text!r}", expected="digit classes 0..9 as "
                         "a range or a list, e.g. 0-4 or 5,6,7", got=repr(text)) from None
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise UsageError(f"bad --classes {text!r}", expected="at least 2 different classes",
                         got=classes)
    return classes


def load_data(name: str, layout: str, classes: Sequence[int] | None = None) -> tuple[Any, Any]:
    """Return ``(train, test)`` of data set ``name`` in ``layout``; with ``classes``, only those
    classes, relabeled ``0..M-1`` in the given order."""
    from graphc.data import Dataset, load_digits

    if name not in DATA_SETS:
        raise _unknown_data(name, "--data")
    splits = load_digits(layout=layout)
    if not classes:
        return splits
    relabel = np.full(10, -1, np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    subsets = []
    for split in splits:
        keep = relabel[split.y] >= 0
        subsets.append(Dataset(split.x[keep], relabel[split.y[keep]], len(classes),
                               f"{split.name}[{_classes_label(classes)}]"))
    return subsets[0], subsets[1]


def _classes_label(classes: Sequence[int]) -> str:
    return ",".join(str(c) for c in classes)


def _classes_text(classes: Sequence[int] | None) -> str:
    return f", classes {_classes_label(classes)}" if classes else ""


def _layout(graph: Any) -> str:
    """The digits layout a model takes: ``flat`` for a rank-2 input, else ``image``."""
    from graphc.ir import Value

    return "flat" if len(graph.type_of(Value(graph.inputs[0])).shape) == 2 else "image"


def _check_fits(graph: Any, data: Any, name: str) -> None:
    """Refuse a model whose input or number of outputs does not fit data set ``name``."""
    from graphc.ir import Value
    from graphc.train import fit_data

    fit_data(data, graph.type_of(Value(graph.inputs[0])).shape, f"--accuracy {name}")
    out = graph.type_of(graph.outputs[0]).shape
    if len(out) != 2 or out[1] != data.classes:
        raise UsageError(f"the model's output does not fit the {name} test split",
                         where=f"--accuracy {name}", expected=f"(batch, {data.classes}) "
                         "(one score per class)", got=out)


def onnx_accuracy(model: bytes, data: Any) -> float:
    """Return the accuracy of an ONNX classifier (first input, first output) on ``data``,
    run on onnxruntime in chunks of the file's batch size (all at once for a dynamic batch)."""
    from graphc.onnx_export import session
    from graphc.train import fit_data

    sess = session(model)
    first = sess.get_inputs()[0]
    batch = first.shape[0] if isinstance(first.shape[0], int) else len(data)
    x = fit_data(data, [batch, *first.shape[1:]], "accuracy")
    output = sess.get_outputs()[0].name
    predictions = []
    for start in range(0, len(x), batch):
        chunk = np.zeros((batch, *x.shape[1:]), np.float32)
        chunk[:len(x[start:start + batch])] = x[start:start + batch]
        predictions.append(sess.run([output], {first.name: chunk})[0][:len(x) - start])
    return float(np.mean(np.argmax(np.concatenate(predictions), axis=1) == data.y))


def model_name(spec: str) -> str:
    """The name a checkpoint records for MODEL: the zoo name, or a model file's stem."""
    from graphc.models import MODELS

    return spec if spec in MODELS else Path(spec).stem


@dataclass
class Weights:
    """A checkpoint applied to a model: the graph with its weights, the checkpoint, the CLI's
    data record and a one-line summary."""

    graph: Any
    checkpoint: Any
    record: dict[str, Any]
    summary: str


def read_checkpoint(path: str, spec: str, option: str) -> tuple[Any, dict[str, Any]]:
    """Load checkpoint ``path`` for MODEL ``spec``; return it (without the CLI's data record)
    and the record. A checkpoint of another model is a usage error."""
    import json

    from graphc.train import load_checkpoint

    ck = load_checkpoint(path)
    want = model_name(spec)
    if ck.model != want:
        raise UsageError(f"{option} {path} is a checkpoint of model {ck.model!r}",
                         expected=f"a checkpoint of {want!r}", got=repr(ck.model),
                         hint=f"Give MODEL {ck.model}, or a checkpoint of {want}.")
    record = ck.state.pop(DATA_KEY, None)
    return ck, (json.loads(str(record)) if record is not None else {})


def _head_classes(graph: Any, state: Any = None) -> int | None:
    """The class count of ``graph``'s head (in ``state`` if given), or None without a head."""
    from graphc.transfer import head_classes

    try:
        return head_classes(graph, state)
    except GraphcError:
        return None


def _fit_head(graph: Any, state: Any, seed: int) -> tuple[Any, str]:
    """Rebuild ``graph`` with the head of ``state`` when their class counts differ."""
    from graphc.transfer import head_params, replace_head

    theirs, ours = _head_classes(graph, state), _head_classes(graph)
    if theirs is None or theirs == ours:
        return graph, ""
    return replace_head(graph, theirs, seed), f"head {', '.join(head_params(graph))} with " \
        f"{theirs} classes"


def _weight_names(graph: Any) -> list[str]:
    """The parameters and BatchNorm running statistics of ``graph``: what a model's weights
    are, without optimizer state."""
    from graphc.ir import CONST

    names = list(graph.params())
    for node in graph.op_nodes():
        if graph.op(node) == "BatchNormalization":
            for v in graph.in_values(node)[3:5]:
                if v is not None and graph.op(v.node) == CONST and v.node not in names:
                    names.append(v.node)
    return names


def _load_weights(path: str, spec: str, loaded: Loaded, seed: int) -> Weights:
    from graphc.step import apply_state

    if loaded.onnx_file is not None:
        raise UsageError("--weights needs a zoo model or a .py file",
                         expected="a model graphc trains", got=f"the ONNX file {spec}",
                         hint="An .onnx file carries its own weights.")
    ck, record = read_checkpoint(path, spec, "--weights")
    graph, head = _fit_head(loaded.graph, ck.state, seed)
    missing = [n for n in graph.params() if n not in ck.state]
    if missing:
        raise GraphcError(f"checkpoint {path} has no values for {len(missing)} parameters",
                          expected=f"all of {model_name(spec)}'s parameters",
                          got=f"none for {', '.join(missing[:3])}"
                              f"{', ...' if len(missing) > 3 else ''}")
    graph = apply_state(graph, ck.state)
    parts = [f"epoch {ck.epoch}", *([head] if head else [])]
    if ck.history:
        parts.append(f"test accuracy {100 * ck.history[-1].test_accuracy:.2f}%")
    return Weights(graph, ck, record, ", ".join(parts))


def _writable(path: str, option: str) -> None:
    """Refuse an output path whose folder is missing, before any work is done."""
    target = Path(path)
    if target.is_dir():
        raise GraphcError(f"cannot write {path!r}: it is a folder", where=option,
                          hint="Give a file name.")
    if not target.parent.is_dir():
        raise GraphcError(f"cannot write {path!r}: the folder {str(target.parent)!r} does not "
                          "exist", where=option, hint="Create it first.")


# The options of a fresh run, by argparse dest: what --resume refuses (the checkpoint has them).
TRAIN_OPTIONS = {
    "lr": "--lr", "batch": "--batch", "optimizer": "--optimizer", "momentum": "--momentum",
    "weight_decay": "--weight-decay", "schedule": "--schedule", "augment": "--augment",
    "feature_augment": "--feature-augment", "seed": "--seed", "threads": "--threads",
    "backend": "--backend", "init": "--init", "new_head": "--new-head", "freeze": "--freeze",
    "unfreeze_at": "--unfreeze-at", "classes": "--classes",
}


def _build_at(module: ModuleType, seed: int, batch: int) -> Any:
    """Build MODEL's graph at a training batch size: ``build(seed=..., batch=...)``."""
    from graphc.ir import Graph, Value

    origin = getattr(module, "__file__", None) or module.__name__
    try:
        graph = module.build(seed=seed, batch=batch)
    except TypeError as err:
        if "batch" not in str(err) and "seed" not in str(err):
            raise
        raise GraphcError(f"cannot train {Path(origin).stem}: its build() takes no seed and "
                          "batch arguments", where=origin,
                          expected="def build(seed=0, batch=1) -> Graph",
                          got=str(err)) from None
    if not isinstance(graph, Graph):
        raise GraphcError(f"build() of {origin} returned {type(graph).__name__}",
                          expected="a graphc Graph (return b.build())", got=type(graph).__name__)
    shape = graph.type_of(Value(graph.inputs[0])).shape if graph.inputs else ()
    if not shape or shape[0] != batch:
        raise GraphcError(f"build(batch={batch}) of {origin} made an input of another batch size",
                          where=f"input {graph.inputs[0]!r}" if graph.inputs else None,
                          expected=f"shape ({batch}, ...)", got=shape,
                          hint="Use the batch argument for the first dimension of the input.")
    return graph


@dataclass
class _Plan:
    """A training run as the CLI set it up."""

    name: str
    build: Any
    train_set: Any
    test_set: Any
    config: Any
    record: dict[str, Any]
    state: dict[str, np.ndarray]
    notes: list[str]
    details: list[str]
    checkpoint: Any = None


def _plan_fresh(args: argparse.Namespace) -> _Plan:
    from graphc.augment import DIGITS_AUGMENT, Augment
    from graphc.ir import Value
    from graphc.optim import schedule_from_spec
    from graphc.step import FeatureAugment
    from graphc.train import TrainConfig, frozen_params
    from graphc.transfer import head_params, replace_head

    if args.data is None:
        raise UsageError("train needs --data", expected="--data digits", got="no --data")
    if args.data not in DATA_SETS:
        raise _unknown_data(args.data, "--data")
    if args.new_head and not args.init:
        raise UsageError("--new-head needs --init", expected="--init CHECKPOINT --new-head",
                         got="--new-head alone", hint="A model trained from scratch has a new "
                         "head anyway.")
    if args.unfreeze_at is not None and not args.freeze:
        raise UsageError("--unfreeze-at needs --freeze", expected="--freeze GLOB",
                         got=f"--unfreeze-at {args.unfreeze_at} alone")
    classes = parse_classes(args.classes) if args.classes is not None else None
    augment = args.augment or ""
    if augment.strip() == "digits":
        augment = DIGITS_AUGMENT
    values = {"epochs": args.epochs, "batch": args.batch, "lr": args.lr,
              "optimizer": args.optimizer, "momentum": args.momentum,
              "weight_decay": args.weight_decay, "schedule": args.schedule, "seed": args.seed,
              "augment": augment, "feature_augment": tuple(args.feature_augment or ()),
              "freeze": tuple(args.freeze or ()), "unfreeze_at": args.unfreeze_at,
              "backend": args.backend, "threads": args.threads}
    config = TrainConfig(**{k: v for k, v in values.items() if v is not None})
    if config.unfreeze_at is not None and not 1 <= config.unfreeze_at < config.epochs:
        raise UsageError("--unfreeze-at is out of range",
                         expected=f"an epoch in 1..{config.epochs - 1} (the frozen parameters "
                         "are trained after that many epochs)", got=config.unfreeze_at)
    schedule_from_spec(config.schedule, config.learning_rate, total=config.epochs)
    for spec in config.feature_augment:
        FeatureAugment.parse(spec)

    module = _load_module(args.model, "train")
    name = model_name(args.model)
    probe = _build_at(module, config.seed, config.batch)
    train_set, test_set = load_data(args.data, _layout(probe), classes)
    wanted = train_set.classes
    try:
        Augment.parse(config.augment, classes=wanted)(train_set.x[:2], train_set.y[:2],
                                                        np.random.default_rng(0))
    except GraphcError as err:
        raise UsageError(f"cannot use --augment {args.augment!r}: {err.what}",
                         expected=err.expected, got=err.got, hint=err.hint) from None

    notes: list[str] = []
    details: list[str] = []
    init_state: dict[str, np.ndarray] = {}
    new_head = False
    ours = _head_classes(probe)
    if args.init:
        ck, _ = read_checkpoint(args.init, args.model, "--init")
        theirs = _head_classes(probe, ck.state)
        names = set(_weight_names(probe))
        init_state = {k: v for k, v in ck.state.items() if k in names}
        if args.new_head or (theirs is not None and theirs != wanted):
            new_head = True
            if not args.new_head:
                notes.append(f"the head of {args.init} has {theirs} classes and the data "
                             f"{wanted}: training a new head")
    elif ours is not None and ours != wanted:
        new_head = True
        notes.append(f"the head of {name} has {ours} classes and the data {wanted}: "
                     "training a new head")

    def build(batch: int) -> Any:
        graph = probe if batch == config.batch else _build_at(module, config.seed, batch)
        if new_head or (ours is not None and ours != wanted):
            graph = replace_head(graph, wanted, config.seed)
        return graph

    graph = build(config.batch)
    head = head_params(graph) if new_head else []
    init_state = {k: v for k, v in init_state.items() if k not in head}
    # Every parameter and BatchNorm running statistic is handed to train(), so that each
    # checkpoint holds the whole model: the statistics of a frozen BatchNorm are no state of
    # the step, and train() keeps only the state it is given or carries.
    state = {n: graph.const_value(Value(n)) for n in _weight_names(graph)}
    state.update(init_state)
    if args.init:
        taken = sum(n in init_state for n in graph.params())
        details.append(f"  init           {args.init} ({taken} parameters, "
                       f"{len(init_state) - taken} running statistics"
                       + (f"; new head {', '.join(head)} with {wanted} classes" if head else "")
                       + ")")
    elif head:
        details.append(f"  head           {', '.join(head)} with {wanted} classes (new)")
    if config.freeze:
        frozen = frozen_params(graph, config.freeze)
        until = f"; trained from epoch {config.unfreeze_at + 1}" if config.unfreeze_at else ""
        details.append(f"  frozen         {' '.join(config.freeze)} ({len(frozen)} parameters"
                       f"{until})")
    record = {"data": args.data, "classes": classes, "init": args.init, "new_head": new_head}
    return _Plan(name, build, train_set, test_set, config, record, state, notes, details)


def _plan_resume(args: argparse.Namespace) -> _Plan:
    from dataclasses import replace

    # Compared by identity: --seed 0 or --momentum 0 are given too (0 == False).
    given = [flag for dest, flag in TRAIN_OPTIONS.items()
             if not any(getattr(args, dest) is unset for unset in (None, False))
             and getattr(args, dest) != []]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be given with --resume",
                         expected="only --epochs (to train longer), -o and --plot",
                         got=" ".join(given), hint="A resumed run keeps its checkpoint's "
                         "configuration.")
    ck, record = read_checkpoint(args.resume, args.model, "--resume")
    data = record.get("data", "digits")
    if args.data is not None and args.data != data:
        raise UsageError(f"--data {args.data} differs from the checkpoint's", where="--resume",
                         expected=repr(data), got=repr(args.data))
    epochs = ck.config.epochs if args.epochs is None else args.epochs
    if epochs < ck.epoch:
        raise UsageError(f"{args.resume} has already trained {ck.epoch} epochs",
                         where="--epochs", expected=f">= {ck.epoch}", got=epochs)
    module = _load_module(args.model, "train")
    config = replace(ck.config, epochs=epochs)
    probe = _build_at(module, config.seed, config.batch)
    fitted, _ = _fit_head(probe, ck.state, config.seed)
    refit = fitted is not probe
    train_set, test_set = load_data(data, _layout(probe), record.get("classes"))

    def build(batch: int) -> Any:
        graph = probe if batch == config.batch else _build_at(module, config.seed, batch)
        return _fit_head(graph, ck.state, config.seed)[0] if refit else graph

    details = [f"  resumed        {args.resume} after epoch {ck.epoch}"]
    return _Plan(model_name(args.model), build, train_set, test_set, config, record, ck.state,
                 [], details, ck)


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from graphc import train as training

    if args.output is None and args.resume is None:
        raise UsageError("train needs -o/--output", expected="-o FILE.ckpt",
                         got="no -o")
    output = args.output or args.resume
    _writable(output, "-o")
    if args.plot:
        _writable(args.plot, "--plot")
        if Path(args.plot).suffix.lower() not in PLOT_FORMATS:
            raise UsageError(f"cannot draw {args.plot!r}", where="--plot",
                             expected=f"a {', '.join(PLOT_FORMATS)} file",
                             got=repr(Path(args.plot).suffix or "no suffix"))
    if args.epochs is not None and args.epochs < 1:
        raise UsageError("--epochs must be a positive integer", expected="an int >= 1",
                         got=args.epochs)
    plan = _plan_resume(args) if args.resume else _plan_fresh(args)
    record = np.array(json.dumps(plan.record, sort_keys=True))
    last = [plan.checkpoint.epoch if plan.checkpoint else 0]

    def save(result: Any) -> None:
        state = {**result.state, DATA_KEY: record}
        training.save_checkpoint(output, plan.name, training.TrainResult(
            state, result.history, result.steps), plan.config)
        last[0] = len(result.history)

    for note in plan.notes:
        print(f"graphc: {note}", file=sys.stderr, flush=True)
    try:
        if plan.checkpoint is not None:
            result = training.resume(plan.checkpoint, plan.build, plan.train_set, plan.test_set,
                                     epochs=plan.config.epochs, on_epoch=save)
        else:
            result = training.train(plan.build, plan.train_set, plan.test_set, plan.config,
                                     state=plan.state, on_epoch=save)
    except KeyboardInterrupt:
        if last[0]:
            print(f"graphc: interrupted; {output} holds epoch {last[0]}: continue with "
                  f"`graphc train {args.model} --resume {output}`", file=sys.stderr)
        raise
    if plan.checkpoint is not None and last[0] == plan.checkpoint.epoch:
        save(result)  # nothing left to train: still write -o
    if args.plot:
        classes = plan.record.get("classes")
        training.plot_history(result.history, args.plot, title=f"{plan.name} on "
                              f"{plan.record.get('data', 'digits')}{_classes_text(classes)}")
    classes = plan.record.get("classes")
    epochs = len(result.history)
    print(f"trained {plan.name} for {epochs} epoch{'s' if epochs != 1 else ''} on "
          f"{plan.record.get('data', 'digits')}{_classes_text(classes)} "
          f"({len(plan.train_set)} training, {len(plan.test_set)} test images, "
          f"{plan.train_set.classes} classes)")
    for line in plan.details:
        print(line)
    print(f"  test accuracy  {100 * result.test_accuracy:.2f}%")
    print(f"  checkpoint     {output}")
    if args.plot:
        print(f"  curves         {args.plot}")
    return 0


def parse_point(text: str | None) -> dict[str, Any]:
    """Parse ``x=-2,y=5,w=[0.5,-0.3]`` into a dict of names to numbers or nested lists."""
    import ast

    point: dict[str, Any] = {}
    if not text:
        return point
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(text[start:k])
            start = k + 1
    parts.append(text[start:])
    for part in parts:
        name, eq, value = part.partition("=")
        try:
            if not eq or not name.strip():
                raise ValueError(part)
            number = ast.literal_eval(value.strip())
            np.asarray(number, dtype=np.float64)
            if not isinstance(number, (int, float, list, tuple)) or isinstance(number, bool):
                raise ValueError(part)
            point[name.strip()] = number
        except (ValueError, SyntaxError, TypeError):
            raise UsageError(f"cannot read --at item {part!r}", expected="name=number or "
                             "name=[numbers]", got=part, hint="e.g. --at x=-2,y=5,z=-4") from None
    return point


def cmd_grad(args: argparse.Namespace) -> int:
    from graphc.onnx_export import check, run_onnxruntime, write_atomic
    from graphc.symbolic import backprop
    from graphc.symbolic_code import gradient_onnx

    loaded = load_model(args.model, args.seed)
    point: dict[str, Any] = {k: v for k, v in loaded.feeds.items()}
    point.update(parse_point(args.at))
    wrt = [w.strip() for w in args.wrt.split(",") if w.strip()] if args.wrt else None
    from graphc.symbolic import DEFAULT_LIMIT

    result = backprop(loaded.graph, point, wrt, output=args.output,
                      limit=args.limit or DEFAULT_LIMIT, straight_through=args.straight_through)
    shown = ", ".join(f"{k}={_short(v)}" for k, v in parse_point(args.at).items()) or \
        "the model's example inputs"
    obj = result.objective.name
    print(f"backprop of {loaded.graph.name} at {shown}: {obj} = "
          f"{result.nodes[result.objective].value:.6g}")
    print(f"  {len(result.nodes)} scalar values, {len(result.steps_list)} chain-rule steps")
    if len(result.nodes) <= args.table_limit:
        print()
        print(result.table())
    listed = result.wrt[:args.show]
    fd = result.finite_differences(wrt=listed)
    print()
    print("gradients:")
    for s in listed:
        print(f"  d{obj}/d{s.name} = {result.gradient_values[s]:.6g}")
    if len(result.wrt) > len(listed):
        print(f"  ... {len(result.wrt) - len(listed)} more (choose with --wrt, or --show N)")
    worst = max((abs(fd[s] - result.gradient_values[s]) for s in listed), default=0.0)
    if result.straight_through and any(n.op == "Heaviside" for n in result.nodes.values()):
        print("  (straight-through estimator: these are not the true derivatives, which are 0 "
              "almost everywhere; finite differences differ by up to "
              f"{worst:.2g})")
    else:
        print(f"  checked against central finite differences: max abs diff {worst:.2g}")
    if args.steps:
        print()
        print("steps (the chain rule, node by node from the output):")
        print(result.steps())
    if args.latex or args.formulas:
        print()
        print(result.formulas(latex=args.latex))
    if args.draw:
        backend = result.draw(args.draw)
        print(f"\ndrew {args.draw} ({backend})")
    if args.onnx:
        model = gradient_onnx(result)
        check(model)
        data = model.SerializeToString(deterministic=True)
        write_atomic(args.onnx, data)
        feeds = {s.name: np.array(result.nodes[s].value) for s in result.leaves()}
        got = run_onnxruntime(data, feeds)
        want = [result.nodes[result.objective].value] + [result.gradient_values[s]
                                                         for s in result.wrt]
        diff = max(abs(float(a) - b) for a, b in zip(got.values(), want, strict=True))
        print(f"\nwrote {args.onnx}: {len(model.graph.node)} nodes computing {obj} and "
              f"{len(result.wrt)} gradients; onnxruntime vs sympy max abs diff {diff:.2g}")
    return 0


def _short(v: Any) -> str:
    text = str(v).replace(" ", "")
    return text if len(text) <= 40 else text[:37] + "..."


def cmd_passes(args: argparse.Namespace) -> int:
    from graphc.pipeline import doc_line, pipelines, registry

    known = registry()
    width = max(len(n) for n in known)
    for name, fn in known.items():
        print(f"{name.ljust(width)}  {doc_line(fn)}")
    print()
    for name, passes in pipelines().items():
        print(f"pipeline {name}: {', '.join(passes)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from graphc.shapes import format_table, layer_table

    graph = load_model(args.model, args.seed).graph
    if not args.table:
        print(graph.format())
        print()
    print(format_table(layer_table(graph)))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from graphc.models import MODELS, load

    width = max(len(n) for n in MODELS)
    for name in MODELS:
        doc = (load(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name.ljust(width)}  {doc}")
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    from graphc.ops import REGISTRY

    width = max(len(n) for n in REGISTRY)
    for name, op in REGISTRY.items():
        print(f"{name.ljust(width)}  ({', '.join(op.inputs)}) -> ({', '.join(op.outputs)})")
        print(f"{''.ljust(width)}  {op.doc}")
        if op.attrs and args.verbose:
            attrs = ", ".join(f"{k}={v.default!r}" for k, v in op.attrs.items())
            print(f"{''.ljust(width)}  attributes: {attrs}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"graphc: error: {message}\n")


def make_parser() -> argparse.ArgumentParser:
    from graphc import __version__

    # --debug is accepted before and after the subcommand; SUPPRESS keeps the subcommand's
    # default from overwriting a --debug given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
    parser = _Parser(prog="graphc", parents=[common],
                     description="Compile neural networks from graphc's DSL to checked ONNX.")
    parser.add_argument("--version", action="version", version=f"graphc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("compile", parents=[common], help="compile a model to an ONNX file")
    p.add_argument("model", help="a zoo model name (see `graphc models`), a .py file with "
                                 "build(), or an .onnx file")
    p.add_argument("-o", "--output", required=True, help="the ONNX file to write")
    p.add_argument("--opset", type=int,
                   help="ONNX opset (default 17, or an imported file's own opset)")
    p.add_argument("--verify", action="store_true",
                   help="run the file on onnxruntime and compare with the interpreter")
    p.add_argument("--seed", type=int, default=0, help="parameter initialization seed")
    p.add_argument("--dynamic-batch", action="store_true", default=None,
                   help="name the first dimension of inputs and outputs N")
    p.add_argument("--passes", help="comma-separated passes to run (see `graphc passes`)")
    p.add_argument("--pipeline", help="a named pipeline of passes, e.g. inference")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the rewrites each pass refused, with reasons")
    p.add_argument("--explain", action="store_true",
                   help="show each rewrite: the nodes before and after and the formula")
    p.add_argument("--weights", metavar="CKPT",
                   help="a checkpoint of `graphc train` to take the weights from (its head "
                        "may have another number of classes)")
    p.add_argument("--accuracy", metavar="DATA",
                   help="print the written file's test accuracy on onnxruntime: digits (the "
                        "checkpoint's --classes subset, if any)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("train", parents=[common], help="train a model, writing a checkpoint "
                                                       "after every epoch")
    p.add_argument("model", help="a zoo model name or a .py file with build(seed, batch)")
    p.add_argument("--data", metavar="NAME", help="the data set: digits")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="epochs in all (default 30; with --resume, the checkpoint's)")
    p.add_argument("-o", "--output", metavar="CKPT",
                   help="the checkpoint to write after every epoch (default with --resume: "
                        "the resumed checkpoint)")
    p.add_argument("--plot", metavar="FILE",
                   help="draw loss and accuracy per epoch (.png, .svg or .pdf)")
    p.add_argument("--lr", type=float, metavar="LR",
                   help="learning rate (default 0.05 for sgd, 0.001 for adam)")
    p.add_argument("--batch", type=int, metavar="N", help="batch size (default 64)")
    p.add_argument("--optimizer", metavar="NAME", help="sgd (default) or adam")
    p.add_argument("--momentum", type=float, metavar="M", help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, metavar="WD",
                   help="weight decay (default 5e-4)")
    p.add_argument("--schedule", metavar="SPEC",
                   help="cosine (default), constant or step:SIZE,GAMMA")
    p.add_argument("--augment", metavar="SPEC",
                   help="input augmentation, e.g. shift=1,rotate=10,noise=0.05 or digits "
                        "(that pipeline)")
    p.add_argument("--feature-augment", action="append", metavar="LAYER:KIND=VALUE",
                   help="feature-space augmentation after a layer: LAYER:noise=STD or "
                        "LAYER:mixup=ALPHA (repeatable)")
    p.add_argument("--seed", type=int, metavar="N",
                   help="seed of the initial weights, the batch order, dropout and "
                        "augmentation (default 0)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="onnxruntime threads (default: all cores)")
    p.add_argument("--backend", metavar="NAME", help="onnxruntime (default) or interpreter")
    p.add_argument("--resume", metavar="CKPT",
                   help="continue an interrupted run with the checkpoint's own configuration")
    p.add_argument("--init", metavar="CKPT",
                   help="start from a checkpoint's parameters and BatchNorm statistics (not "
                        "its optimizer state)")
    p.add_argument("--new-head", action="store_true", default=None,
                   help="with --init: train a new head (automatic when the class counts "
                        "differ)")
    p.add_argument("--freeze", action="append", metavar="GLOB",
                   help="parameters not to train, e.g. 'block*' (repeatable)")
    p.add_argument("--unfreeze-at", type=int, metavar="EPOCH",
                   help="train the frozen parameters too after this many epochs")
    p.add_argument("--classes", metavar="LIST",
                   help="only these digit classes, relabeled 0..M-1 in this order: 0-4 or "
                        "5,6,7")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("passes", parents=[common], help="list the passes and pipelines")
    p.set_defaults(func=cmd_passes)

    p = sub.add_parser("show", parents=[common],
                       help="print a model's graph and per-layer table")
    p.add_argument("model", help="a zoo model name or a .py file with build()")
    p.add_argument("--table", action="store_true", help="print only the per-layer table")
    p.add_argument("--seed", type=int, default=0, help="parameter initialization seed")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("grad", parents=[common],
                       help="backprop symbolically: values, gradients, steps, formulas, figure")
    p.add_argument("model", help="a zoo model name, a .py file with build(), or an .onnx file")
    p.add_argument("--at", help="the point, e.g. x=-2,y=5,z=-4 or x=[[0.5,-0.3]]; parameters "
                                "keep their initial values unless given (default: the model's "
                                "example inputs)")
    p.add_argument("--wrt", help="comma-separated inputs or parameters (default: all)")
    p.add_argument("--output", help="the graph output to differentiate (default: the first; "
                                    "a tensor output is summed)")
    p.add_argument("--steps", action="store_true", help="print every chain-rule step")
    p.add_argument("--formulas", action="store_true", help="print the formulas as text")
    p.add_argument("--latex", action="store_true", help="print the formulas as LaTeX")
    p.add_argument("--draw", metavar="FILE", help="draw the graph with values and gradients "
                                                 "(.png or .svg)")
    p.add_argument("--onnx", metavar="FILE", help="write an ONNX model computing the output "
                                                 "and the gradients")
    p.add_argument("--straight-through", action="store_true",
                   help="use the straight-through estimator for Heaviside (derivative 1)")
    p.add_argument("--limit", type=int, default=None,
                   help="the size limit in scalar edges (default: graphc.symbolic.DEFAULT_LIMIT)")
    p.add_argument("--seed", type=int, default=0, help="parameter initialization seed")
    p.add_argument("--show", type=int, default=20, help="gradients to list (default 20)")
    p.add_argument("--table-limit", type=int, default=60,
                   help="print the value table up to this many scalar values (default 60)")
    p.set_defaults(func=cmd_grad)

    p = sub.add_parser("models", parents=[common], help="list the zoo models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("ops", parents=[common], help="list the op set")
    p.add_argument("-v", "--verbose", action="store_true", help="also list attributes")
    p.set_defaults(func=cmd_ops)
    return parser


def _user_frame(err: BaseException) -> str:
    """Return ``file:line`` of the innermost frame outside graphc, for errors in user code."""
    import graphc
    import graphc.models

    ours = tuple(str(Path(m.__file__).parent.resolve()) + os.sep
                 for m in (graphc, graphc.models) if m.__file__)
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if not str(Path(frame.filename).resolve()).startswith(ours):
            return f"{frame.filename}:{frame.lineno}: "
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``graphc`` command; return the exit status."""
    from graphc.models import MODELS

    parser = make_parser()
    parser.epilog = "zoo models: " + ", ".join(MODELS)
    args = parser.parse_args(argv)
    args.debug = getattr(args, "debug", False)
    try:
        return args.func(args)
    except GraphcError as err:
        if args.debug:
            raise
        print(f"graphc: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `graphc ops | head`): stop quietly.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except Exception as err:  # noqa: BLE001 - errors from user model files, shown in one line
        if args.debug:
            raise
        print(f"graphc: error: {_user_frame(err)}{type(err).__name__}: {err} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
