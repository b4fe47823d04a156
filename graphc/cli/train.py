"""``graphc train``: train MODEL on a data set, fresh, resumed, or from another checkpoint
(transfer learning, fine-tuning a pruned model), writing a checkpoint after every epoch.

A checkpoint whose record lists pruned weights (``pruned.sparse``, as ``graphc prune`` writes)
trains with masks ``w != 0`` on them, from ``--init`` or ``--resume``, so its zeros stay zeros;
one with pruned channels (``pruned.channels``) trains its pruned architecture. The new
checkpoint carries the same ``pruned`` record.

``--teacher TEACHER:CKPT`` distills: the student (MODEL) learns from the labels and from the
frozen teacher's softened outputs with the course's loss (``--T``, ``--alpha``, ``--beta``,
``--tau-squared``); ``--teacher-labels N`` adds N samples labeled by the teacher (augmented
training images, or the array ``x`` of ``--unlabeled FILE.npz``). The checkpoint's record
(``distill``) names the teacher, so ``--resume`` continues with it.

``--binary weights|all`` trains a binary network (XNOR-Net, graphc.compress.binary_train): the
layers but ``--keep-fp32``'s (default the first and the last) compute with ``alpha * sign(W)``
on latent fp32 weights W, trained through the straight-through estimator, and with ``all`` the
activations around them are signs too; best fine-tuned from an fp32 checkpoint (``--init``).
The record (``binary``) rebuilds that form for ``--resume`` and ``compile --weights``, whose
``--pipeline inference --passes binarize`` then stores it 1 bit per weight.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphc.cli.checkpoints import (
    DATA_HELP,
    binary_model,
    binary_text,
    check_data,
    classes_text,
    fit_head,
    folded,
    head_classes,
    load_data,
    model_name,
    need_all,
    parse_classes,
    pruned_model,
    qat_model,
    read_checkpoint,
    samples_word,
    trained_form,
)
from graphc.cli.common import (
    bound_threads,
    build_at,
    check_threads,
    check_writable,
    load_module,
    refuse_overwriting,
)
from graphc.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

PLOT_FORMATS = (".png", ".svg", ".pdf")


# The options of a fresh run, by argparse dest: what --resume refuses (the checkpoint has them).
TRAIN_OPTIONS = {
    "lr": "--lr", "batch": "--batch", "optimizer": "--optimizer", "momentum": "--momentum",
    "weight_decay": "--weight-decay", "schedule": "--schedule", "augment": "--augment",
    "feature_augment": "--feature-augment", "extend": "--extend", "seed": "--seed",
    "dropout_scaling": "--dropout-scaling",
    "threads": "--threads",
    "backend": "--backend", "init": "--init", "new_head": "--new-head", "freeze": "--freeze",
    "unfreeze_at": "--unfreeze-at", "classes": "--classes", "qat": "--qat",
    "penalty": "--penalty", "teacher": "--teacher", "T": "--T", "alpha": "--alpha",
    "beta": "--beta", "tau_squared": "--tau-squared", "teacher_labels": "--teacher-labels",
    "unlabeled": "--unlabeled", "teacher_mode": "--teacher-mode", "binary": "--binary",
    "keep_fp32": "--keep-fp32",
}
DISTILL_OPTIONS = ("T", "alpha", "beta", "tau_squared", "teacher_labels", "unlabeled",
                   "teacher_mode")


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
    masks: dict[str, np.ndarray] | None = None
    teacher: Any = None


def _plan_fresh(args: argparse.Namespace) -> _Plan:
    from graphc.ir import Value
    from graphc.train.augment import DIGITS_AUGMENT, Augment
    from graphc.train.loop import TrainConfig, fit_data, frozen_params, model_state
    from graphc.train.optim import schedule_from_spec
    from graphc.train.step import FeatureAugment
    from graphc.train.transfer import head_params, replace_head

    if args.data is None:
        raise UsageError("train needs --data", expected="--data digits (or another data set "
                         "name, an .npz or .csv file, an image folder)", got="no --data")
    check_data(args.data, "--data")
    if args.new_head and not args.init:
        raise UsageError("--new-head needs --init", expected="--init CHECKPOINT --new-head",
                         got="--new-head alone", hint="A model trained from scratch has a new "
                         "head anyway.")
    if args.unfreeze_at is not None and not args.freeze:
        raise UsageError("--unfreeze-at needs --freeze", expected="--freeze GLOB",
                         got=f"--unfreeze-at {args.unfreeze_at} alone")
    classes = parse_classes(args.classes) if args.classes is not None else None
    keep = _binary_options(args)
    settings = _settings(args)
    augment = args.augment or ""
    if augment.strip() == "digits":
        augment = DIGITS_AUGMENT
    values = {"epochs": args.epochs, "batch": args.batch, "lr": args.lr,
              "optimizer": args.optimizer, "momentum": args.momentum,
              "weight_decay": args.weight_decay, "schedule": args.schedule, "seed": args.seed,
              "augment": augment, "feature_augment": tuple(args.feature_augment or ()),
              "extend": args.extend, "dropout_scaling": args.dropout_scaling,
              "freeze": tuple(args.freeze or ()), "unfreeze_at": args.unfreeze_at,
              "backend": args.backend, "threads": args.threads,
              "penalty": tuple(args.penalty or ())}
    config = TrainConfig(**{k: v for k, v in values.items() if v is not None})
    if config.optimizer == "adam" and args.momentum is not None:
        raise UsageError("--momentum is an SGD setting", expected="--optimizer sgd with "
                         "--momentum", got="--optimizer adam --momentum",
                         hint="Adam has its own moment estimates; drop --momentum.")
    if config.unfreeze_at is not None and not 1 <= config.unfreeze_at < config.epochs:
        raise UsageError("--unfreeze-at is out of range",
                         expected=f"an epoch in 1..{config.epochs - 1} (the frozen parameters "
                         "are trained after that many epochs)", got=config.unfreeze_at)
    schedule_from_spec(config.schedule, config.learning_rate, total=config.epochs)
    for spec in config.feature_augment:
        FeatureAugment.parse(spec)

    module = load_module(args.model, "train")
    name = model_name(args.model)
    probe = build_at(module, config.seed, config.batch)
    train_set, test_set = load_data(args.data, classes)
    fit_data(train_set, probe.type_of(Value(probe.inputs[0])).shape, f"--data {args.data}")
    wanted = train_set.classes
    Augment.parse(config.augment, classes=wanted)

    notes: list[str] = []
    details: list[str] = []
    init_state: dict[str, np.ndarray] = {}
    new_head = False
    ours = head_classes(probe)
    pruned: dict[str, Any] = {}
    if args.init:
        ck = read_checkpoint(args.init, args.model, "--init")
        pruned = dict(ck.data.get("pruned") or {})
        theirs = head_classes(probe, ck.state)
        names = set(model_state(probe))
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
        graph = probe if batch == config.batch else build_at(module, config.seed, batch)
        # The pruned architecture first: its channel record names the original head.
        graph = pruned_model(graph, {"pruned": pruned})[0]
        if new_head or (ours is not None and ours != wanted):
            graph = replace_head(graph, wanted, config.seed)
        return graph

    graph = build(config.batch)
    head = head_params(graph) if new_head else []
    init_state = {k: v for k, v in init_state.items() if k not in head}
    masks = _sparse_masks(ck, pruned, head) if args.init else {}
    if args.init:
        need_all(args.init, [n for n in model_state(graph) if n not in head], init_state,
                  args.model)
    # Every parameter and BatchNorm running statistic is handed to train(), so that each
    # checkpoint holds the whole model: the statistics of a frozen BatchNorm are no state of
    # the step, and train() keeps only the state it is given or carries.
    state = model_state(graph)
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
    if pruned:
        record["pruned"] = pruned
        details.append(_pruned_line(pruned, masks, graph))
    if args.binary is not None:
        build = _with_binary(build, config.batch, args.binary, keep, record, details)
    if args.qat:
        build, state = _with_fake_quant(build, state, train_set, config, record)
        details.append(f"  qat            {len(record['qat']['zero_points'])} activation grids "
                       f"(minmax on 256 training images), weights int8 [-{record['qat']['qmax']}, "
                       f"{record['qat']['qmax']}] per channel, BatchNorm folded")
    teacher = None
    if settings is not None:
        where, path = _teacher_spec(args.teacher)
        record["distill"] = {"teacher": where, "teacher_weights": path, **settings.record(),
                             "unlabeled": args.unlabeled}
        teacher = _teacher(record, classes, details)
    return _Plan(name, build, train_set, test_set, config, record, state, notes, details,
                 masks=masks, teacher=teacher)


def _binary_options(args: argparse.Namespace) -> tuple[str, ...]:
    """Check ``--binary`` and ``--keep-fp32`` before anything is loaded; return the layers to
    keep in fp32 as given (``first``, ``last`` or names)."""
    from graphc.compress.binary_train import DEFAULT_KEEP, MODES, parse_keep
    from graphc.errors import unknown

    if args.binary is None:
        if args.keep_fp32 is not None:
            raise UsageError("--keep-fp32 needs --binary", expected="--binary weights|all "
                             "--keep-fp32 LAYERS", got=f"--keep-fp32 {args.keep_fp32} alone")
        return DEFAULT_KEEP
    if args.binary not in MODES:
        raise unknown("binary mode", args.binary, MODES, cls=UsageError, where="--binary")
    if args.qat:
        raise UsageError("--binary and --qat exclude each other", where="--binary",
                         expected="one training form: binary (1-bit) or quantization-aware "
                         "(int8)", got="both", hint="Drop --qat: binary weights replace int8.")
    return DEFAULT_KEEP if args.keep_fp32 is None else parse_keep(args.keep_fp32)


def _with_binary(build: Any, batch: int, mode: str, keep: tuple[str, ...],
                 record: dict[str, Any], details: list[str]) -> Any:
    """``--binary``: train the training form of graphc.compress.binary_train; the checkpoint's
    record names its layers so that ``--resume`` and ``compile --weights`` rebuild it."""
    from graphc.compress.binary_train import binary_layers, binary_record

    plain = build
    record["binary"] = binary_record(plain(batch), mode, keep)

    def build_binary(size: int) -> Any:
        return binary_model(plain(size), record["binary"])

    details.append(_binary_line(record["binary"], build_binary(batch), binary_layers))
    return build_binary


def _binary_line(record: dict[str, Any], graph: Any, binary_layers: Any) -> str:
    signs = sum(graph.op(n) == "BinarySign" for n in graph.op_nodes()) - \
        len(binary_layers(graph))
    acts = f", {signs} sign activation{'s' if signs != 1 else ''}" if signs else ""
    return (f"  binary         {binary_text(record)}: alpha * sign(W) per output channel on "
            f"latent fp32 weights, straight-through gradient where |W| <= 1{acts}")


def _teacher_spec(text: str) -> tuple[str, str]:
    """Split ``--teacher TEACHER:CKPT``."""
    model, colon, path = text.partition(":")
    if not colon or not model or not path:
        raise UsageError(f"cannot read --teacher {text!r}", where="--teacher",
                         expected="TEACHER:CKPT, e.g. teacher:teacher.ckpt", got=repr(text))
    return model, path


def _settings(args: argparse.Namespace) -> Any:
    """The distillation settings of the command line (refused without --teacher)."""
    from graphc.train.distill import Distillation

    given = {k: getattr(args, k) for k in DISTILL_OPTIONS if getattr(args, k) is not None}
    if not args.teacher:
        if given:
            flags = " ".join(TRAIN_OPTIONS[k] for k in given)
            raise UsageError(f"{flags} needs --teacher", expected="--teacher TEACHER:CKPT",
                             got=f"{flags} without a teacher")
        return None
    if args.unlabeled and not args.teacher_labels:
        raise UsageError("--unlabeled needs --teacher-labels", expected="--teacher-labels N "
                         "--unlabeled FILE.npz", got="--unlabeled alone")
    names = {"teacher_mode": "mode", "tau_squared": "tau_squared"}
    return Distillation(**{names.get(k, k): v for k, v in given.items() if k != "unlabeled"})


def _teacher(record: dict[str, Any], classes: Any, details: list[str]) -> Any:
    """The frozen teacher of a distilled run's ``record``: its model with the weights of its
    checkpoint (checked as ``compile --weights`` checks them), and the lines that describe it."""
    from graphc.train.distill import Distillation, Teacher, read_unlabeled
    from graphc.train.loop import model_state
    from graphc.train.step import apply_state

    distill = record["distill"]
    spec, path = distill["teacher"], distill["teacher_weights"]
    settings = Distillation.from_record(distill)
    module = load_module(spec, "train")
    ck = read_checkpoint(path, spec, "--teacher")
    theirs = ck.data.get("classes") or None
    if theirs != (classes or None):
        def text(chosen: Any) -> str:
            return ",".join(map(str, chosen)) if chosen else "all"

        raise UsageError(f"the teacher {path} was trained on other classes", where="--teacher",
                         expected=f"classes {text(classes)} (the student's)",
                         got=f"classes {text(theirs)}")

    def build(batch: int) -> Any:
        graph = trained_form(fit_head(build_at(module, 0, batch), ck.state, 0)[0], ck.config)
        graph = pruned_model(graph, ck.data)[0]
        if ck.data.get("qat"):
            graph = qat_model(graph, ck.data["qat"])
        if ck.data.get("binary"):
            graph = binary_model(graph, ck.data["binary"])
        need_all(path, model_state(graph), ck.state, spec)
        return apply_state(graph, ck.state)

    unlabeled = read_unlabeled(distill["unlabeled"]) if distill.get("unlabeled") else None
    accuracy = (f", {100 * ck.history[-1].test_accuracy:.2f}% test accuracy"
                if ck.history else "")
    form = "T^2 on the soft term (Hinton)" if settings.tau_squared else "the course's form"
    details.append(f"  teacher        {model_name(spec)} from {path} (epoch {ck.epoch}{accuracy}),"
                   " frozen")
    details.append(f"  distillation   T {settings.T:g}, alpha {settings.alpha:g}, beta "
                   f"{settings.beta:g}, {form}")
    if settings.teacher_labels:
        source = (f"{distill['unlabeled']} (its array x)" if unlabeled is not None
                  else "augmented copies of training images")
        details.append(f"  teacher labels {settings.teacher_labels} samples from {source}, "
                       "labeled softmax(z_t)")
    return Teacher(build, settings, model_name(spec), unlabeled)


def _sparse_masks(ck: Any, pruned: dict[str, Any], head: list[str]
                  ) -> dict[str, np.ndarray]:
    """The masks of ``--init``'s pruned weights (``w != 0``), without a new head's; ``pruned``
    then lists exactly the masked parameters (its other keys stay as they are)."""
    from graphc.train.checkpoint import sparse_masks

    masks = {k: v for k, v in sparse_masks(ck.state, ck.data).items() if k not in head}
    if masks:
        pruned["sparse"] = sorted(masks)
    else:
        pruned.pop("sparse", None)
    return masks


def _pruned_line(pruned: dict[str, Any], masks: dict[str, np.ndarray], graph: Any) -> str:
    parts = []
    if masks:
        zeros = sum(int(m.size - m.sum()) for m in masks.values())
        total = sum(m.size for m in masks.values())
        plural = "s" if len(masks) != 1 else ""
        parts.append(f"{zeros:,} of {total:,} weights in {len(masks)} parameter{plural} held "
                     "at 0")
    if pruned.get("channels"):
        parts.append(f"channels as pruned ({graph.num_params():,} parameters)")
    return f"  pruned         {'; '.join(parts) or 'record kept'}"


def _penalty_line(plan: _Plan, state: dict[str, np.ndarray]) -> str:
    """The penalties, the weights they act on and what they add to the loss at the end."""
    from graphc.train.loop import frozen_params, penalties

    graph = plan.build(plan.config.batch)
    frozen = frozen_params(graph, plan.config.freeze) if plan.config.unfreeze_at is None else []
    chosen = penalties(graph, plan.config, frozen)
    count = len(chosen[0].params)
    adds = ", ".join(f"{p.value(state):.4g}" for p in chosen)
    return (f"  penalty        {' '.join(plan.config.penalty)} on {count} weight"
            f"{'s' if count != 1 else ''} (Conv, Gemm, MatMul): adds {adds} to the loss at the "
            "end")


def _with_fake_quant(build: Any, state: dict[str, np.ndarray], train_set: Any, config: Any,
                     record: dict[str, Any]) -> tuple[Any, dict[str, np.ndarray]]:
    """``--qat``: calibrate the folded model on training images, then train its graph with
    fake quantization; the checkpoint's record keeps the grids to rebuild it."""
    from graphc.compress.calibrate import calibration_batches
    from graphc.compress.latency import cpu_info
    from graphc.compress.qat import prepare
    from graphc.ir import Value
    from graphc.train.loop import fit_data, model_state

    graph = folded(build(config.batch), state)
    shape = graph.type_of(Value(graph.inputs[0])).shape
    x = fit_data(train_set, shape, "--qat")[:max(256, shape[0])]
    qat, qat_record = prepare(graph, calibration_batches(graph, x),
                              qmax=127 if cpu_info().vnni else 63)
    record["qat"] = qat_record
    start = dict(state)

    def build_qat(batch: int) -> Any:
        return qat_model(build(batch), qat_record, start)

    return build_qat, model_state(qat)


def _plan_resume(args: argparse.Namespace) -> _Plan:

    # Compared by identity: --seed 0 or --momentum 0 are given too (0 == False).
    given = [flag for dest, flag in TRAIN_OPTIONS.items()
             if not any(getattr(args, dest) is unset for unset in (None, False))
             and getattr(args, dest) != []]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be given with --resume",
                         expected="only --epochs (to train longer), -o and --plot",
                         got=" ".join(given), hint="A resumed run keeps its checkpoint's "
                         "configuration.")
    ck = read_checkpoint(args.resume, args.model, "--resume")
    record = ck.data
    data = record.get("data", "digits")
    if args.data is not None and args.data != data:
        raise UsageError(f"--data {args.data} differs from the checkpoint's", where="--resume",
                         expected=repr(data), got=repr(args.data))
    epochs = ck.config.epochs if args.epochs is None else args.epochs
    if epochs < ck.epoch:
        raise UsageError(f"{args.resume} has already trained {ck.epoch} epochs",
                         where="--epochs", expected=f">= {ck.epoch}", got=epochs)
    module = load_module(args.model, "train")
    threads, note = bound_threads(ck.config.threads, args.resume)
    ck = replace(ck, config=replace(ck.config, threads=threads))
    config = replace(ck.config, epochs=epochs)
    probe = build_at(module, config.seed, config.batch)
    fitted, _ = fit_head(probe, ck.state, config.seed)
    refit = fitted is not probe
    train_set, test_set = load_data(data, record.get("classes"))

    def build(batch: int) -> Any:
        graph = probe if batch == config.batch else build_at(module, config.seed, batch)
        graph = fit_head(graph, ck.state, config.seed)[0] if refit else graph
        return pruned_model(graph, record)[0]

    if record.get("qat"):
        plain = build

        def build(batch: int) -> Any:
            return qat_model(plain(batch), record["qat"])

    details = [f"  resumed        {args.resume} after epoch {ck.epoch}"]
    if record.get("binary"):
        from graphc.compress.binary_train import binary_layers

        unary = build

        def build(batch: int) -> Any:
            return binary_model(unary(batch), record["binary"])

        details.append(_binary_line(record["binary"], build(config.batch), binary_layers))
    teacher = _teacher(record, record.get("classes"), details) if record.get("distill") else None
    if record.get("pruned"):
        from graphc.train.checkpoint import sparse_masks

        details.append(_pruned_line(record["pruned"], sparse_masks(ck.state, record),
                                    build(config.batch)))
    return _Plan(model_name(args.model), build, train_set, test_set, config, record, ck.state,
                 [note] if note else [], details, ck, teacher=teacher)


def _refuse_clashes(args: argparse.Namespace, output: str) -> None:
    """Refuse outputs that would overwrite each other or an input (the model file, --init)."""
    paths = [("-o", output), ("--plot", args.plot), ("MODEL", args.model),
             ("--init", args.init), ("--unlabeled", args.unlabeled)]
    if args.teacher and ":" in args.teacher:
        paths.append(("--teacher", args.teacher.partition(":")[2]))
    seen: dict[Path, str] = {}
    for option, path in paths:
        if not path or (option not in ("-o", "--plot") and not Path(path).is_file()):
            continue
        key = Path(path).resolve()
        if key in seen:
            first = seen[key]
            raise UsageError(f"{first} {path!r} would overwrite {option} {path!r}",
                             expected="a file of its own for each output",
                             got=f"{first} and {option} name the same file",
                             hint="Give each output its own file.")
        seen[key] = option


def cmd_train(args: argparse.Namespace) -> int:
    from graphc.train import checkpoint
    from graphc.train import loop as training

    if args.output is None and args.resume is None:
        raise UsageError("train needs -o/--output", expected="-o FILE.ckpt",
                         got="no -o")
    output = args.output or args.resume
    check_writable(output, "-o")
    _refuse_clashes(args, output)
    # Hard links too; --resume's own file is its output (it is saved there), so it is allowed.
    refuse_overwriting([("-o", output), ("--plot", args.plot)],
                       [args.model, args.init, args.unlabeled, args.teacher, args.data])
    if args.plot:
        check_writable(args.plot, "--plot")
        if Path(args.plot).suffix.lower() not in PLOT_FORMATS:
            raise UsageError(f"cannot draw {args.plot!r}", where="--plot",
                             expected=f"a {', '.join(PLOT_FORMATS)} file",
                             got=repr(Path(args.plot).suffix or "no suffix"))
    check_threads(args.threads)
    if args.epochs is not None and args.epochs < 1:
        raise UsageError("--epochs must be a positive integer", expected="an int >= 1",
                         got=args.epochs)
    plan = _plan_resume(args) if args.resume else _plan_fresh(args)
    last = [plan.checkpoint.epoch if plan.checkpoint else 0]

    def save(result: Any) -> None:
        checkpoint.save_checkpoint(output, plan.name, result, plan.config, data=plan.record)
        last[0] = len(result.history)

    for note in plan.notes:
        print(f"graphc: {note}", file=sys.stderr, flush=True)
    try:
        if plan.checkpoint is not None:
            result = checkpoint.resume(plan.checkpoint, plan.build, plan.train_set, plan.test_set,
                                       epochs=plan.config.epochs, on_epoch=save,
                                       teacher=plan.teacher)
        else:
            result = training.train(plan.build, plan.train_set, plan.test_set, plan.config,
                                     state=plan.state, on_epoch=save, masks=plan.masks,
                                     teacher=plan.teacher)
    except KeyboardInterrupt:
        if not last[0] or args.debug:
            raise
        print(f"graphc: interrupted; {output} holds epoch {last[0]}: continue with "
              f"`graphc train {args.model} --resume {output}`", file=sys.stderr)
        return 130
    if plan.checkpoint is not None and last[0] == plan.checkpoint.epoch:
        save(result)  # nothing left to train: still write -o
    data = f"{plan.record.get('data', 'digits')}{classes_text(plan.record.get('classes'))}"
    if args.plot:
        training.plot_history(result.history, args.plot, title=f"{plan.name} on {data}")
    epochs = len(result.history)
    print(f"trained {plan.name} for {epochs} epoch{'s' if epochs != 1 else ''} on {data} "
          f"({len(plan.train_set)} training, {len(plan.test_set)} test "
          f"{samples_word(plan.train_set)}, "
          f"{plan.train_set.classes} classes)")
    for line in plan.details:
        print(line)
    if plan.config.penalty:
        print(_penalty_line(plan, result.state))
    print(f"  test accuracy  {100 * result.test_accuracy:.2f}%")
    print(f"  checkpoint     {output}")
    if args.plot:
        print(f"  curves         {args.plot}")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``train`` sub-command to ``sub`` (the sub-parsers of ``graphc``)."""
    p = sub.add_parser("train", parents=[common], help="train a model, writing a checkpoint "
                                                       "after every epoch")
    p.add_argument("model", help="a zoo model name or a .py file with build(seed, batch)")
    needed = p.add_argument_group("required (except with --resume, which reads it from the "
                                  "checkpoint)")
    needed.add_argument("--data", metavar="DATA", help=f"the data set: {DATA_HELP}")
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
    p.add_argument("--dropout-scaling", metavar="WHEN", choices=("train", "test"),
                   help="train: inverted dropout, ONNX's (default); test: the course's original "
                        "convention, zero in training and multiply by the keep probability at "
                        "test time")
    p.add_argument("--extend", metavar="SPEC",
                   help="new training samples, e.g. averages=500,outliers=50,foreign=100 "
                        "(averages of two objects of a class, far-off copies, objects of "
                        "another distribution labeled uniformly)")
    p.add_argument("--seed", type=int, metavar="N",
                   help="seed of the initial weights, the batch order, dropout and "
                        "augmentation (default 0)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="onnxruntime threads (default: onnxruntime's, one per core)")
    p.add_argument("--backend", metavar="NAME", help="onnxruntime (default) or interpreter")
    p.add_argument("--resume", metavar="CKPT",
                   help="continue an interrupted run with the checkpoint's own configuration")
    p.add_argument("--init", metavar="CKPT",
                   help="start from a checkpoint's parameters and BatchNorm statistics (not "
                        "its optimizer state)")
    p.add_argument("--new-head", action="store_true", default=None,
                   help="with --init: train a new head (automatic when the class counts "
                        "differ)")
    p.add_argument("--penalty", action="append", metavar="KIND[:WEIGHT]",
                   help="add a penalty on every Conv, Gemm and MatMul weight to the loss: l1 "
                        "(default weight 0.001), l2 (sum of squares, 0.0001), group-l1 (0.001) "
                        "or group-l2 (per output channel, 0.01); repeatable, one per kind")
    p.add_argument("--freeze", action="append", metavar="GLOB",
                   help="parameters not to train, e.g. 'block*' (repeatable)")
    p.add_argument("--unfreeze-at", type=int, metavar="EPOCH",
                   help="train the frozen parameters too after this many epochs")
    p.add_argument("--qat", action="store_true", default=None,
                   help="quantization-aware training: fold BatchNorm, simulate quantize-int8's "
                        "grids (calibrated on training images) while training; best with --init")
    p.add_argument("--binary", metavar="MODE",
                   help="train a binary network (XNOR-Net): weights (alpha * sign(W) per "
                        "output channel, latent fp32 weights, straight-through gradient) or all "
                        "(activations too); best with --init from an fp32 checkpoint")
    p.add_argument("--keep-fp32", metavar="LAYERS",
                   help="with --binary: the layers left in fp32: first,last (default), none, "
                        "or layer names separated by commas")
    p.add_argument("--classes", metavar="LIST",
                   help="only these digit classes, relabeled 0..M-1 in this order: 0-4 or "
                        "5,6,7")
    p.add_argument("--teacher", metavar="TEACHER:CKPT",
                   help="distill: learn from this frozen teacher (a zoo model or .py file and "
                        "its checkpoint) as well as from the labels")
    p.add_argument("--T", type=float, metavar="T",
                   help="with --teacher: the temperature of softmax(z / T) (default 4)")
    p.add_argument("--alpha", type=float, metavar="A",
                   help="with --teacher: the weight of the hard term H(y, softmax(z_s)) "
                        "(default 0.5)")
    p.add_argument("--beta", type=float, metavar="B",
                   help="with --teacher: the weight of the soft term H(softmax(z_t/T), "
                        "softmax(z_s/T)) (default 0.5)")
    p.add_argument("--tau-squared", action="store_true", default=None,
                   help="with --teacher: multiply the soft term by T^2 (Hinton et al.)")
    p.add_argument("--teacher-labels", type=int, metavar="N",
                   help="with --teacher: add N samples labeled by the teacher's softmax "
                        "(augmented training images, or --unlabeled)")
    p.add_argument("--unlabeled", metavar="FILE.npz",
                   help="with --teacher-labels: draw the samples from this file's array x")
    p.add_argument("--teacher-mode", metavar="MODE",
                   help="with --teacher: how its logits are computed: auto (default), graph "
                        "(inside the training step) or separate (its own session, cached "
                        "without augmentation)")
    p.set_defaults(func=cmd_train)
