"""``graphc compile``: run passes, write a checked ONNX file, verify it, report its accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphc.cli.checkpoints import (
    Weights,
    accuracy_data,
    apply_weights,
    check_data,
    has_labels,
    load_data,
    onnx_accuracy,
    print_accuracy,
    read_checkpoint,
)
from graphc.cli.common import (
    Loaded,
    check_writable,
    format_size,
    load_model,
    non_negative_int,
    positive_int,
    refuse_overwriting,
)
from graphc.cli.verify import (
    Check,
    print_speed_check,
    speed_check_feeds,
    verify_feeds,
    verify_fp32,
    verify_int8,
)
from graphc.errors import GraphcError, UsageError

if TYPE_CHECKING:
    import numpy as np

# Enough to measure each activation's range and each layer's error; more only costs time.
CALIBRATION_SAMPLES = 256


# The passes whose result is compared with the fp32 file the passes before them write.
SUMMARIZED = ("quantize-int8", "binarize")
# The passes that change what the model computes on purpose: --verify checks the file against
# the graph they made and shows the difference from the model.
CHANGE_OUTPUTS = ("prune-magnitude", "prune-channels", "binarize")


def cmd_compile(args: argparse.Namespace) -> int:

    from graphc.files import write_atomic
    from graphc.onnxio.export import check, default_opset, to_onnx
    from graphc.onnxio.load import file_bytes
    from graphc.pipeline import format_reports, resolve, run_pipeline

    check_writable(args.output, "-o")
    refuse_overwriting([("-o", args.output)],
                       [args.model, args.weights, args.calibrate, args.student, args.accuracy])
    if args.passes is not None and not any(p.strip() for p in args.passes.split(",")):
        raise UsageError("--passes names no pass", where="--passes",
                         expected="comma-separated pass names (see `graphc passes`)",
                         got=repr(args.passes), hint="Leave --passes out to run no pass.")
    names = resolve(args.passes, args.pipeline)
    if args.check_speed_batch is not None and not args.check_speed:
        raise UsageError("--check-speed-batch only applies to --check-speed",
                         where="--check-speed-batch", expected="--check-speed "
                         "--check-speed-batch B", got=f"--check-speed-batch "
                         f"{args.check_speed_batch}")
    if args.tolerance is not None and not args.verify:
        raise UsageError("--tolerance only applies to --verify", where="--tolerance",
                         expected="--verify --tolerance R", got=f"--tolerance {args.tolerance}")
    if args.accuracy is not None:
        check_data(args.accuracy, "--accuracy")
    pruning = prune_options(args, names)  # checked before any model is loaded
    loaded = load_bound(args.model, args.bind, args.seed) if args.bind else \
        load_model(args.model, args.seed)
    weights = None
    if args.weights:
        weights = apply_weights(args.weights, args.model, loaded, args.seed)
        loaded = Loaded(weights.graph, loaded.feeds, loaded.onnx_file)
    original = loaded.graph
    test_set = None
    if args.accuracy is not None:
        test_set = accuracy_data(args.accuracy, original, weights)
    options = {**quantize_options(args, original, names, weights), **pruning}
    more_options, student = student_options(args, names, weights, test_set, options)
    options.update(more_options)
    # With a student substituted, the compiled file computes the student: it is the reference.
    reference = student.graph if student is not None else original
    # The passes before quantize-int8 (binarize) give its fp32 reference: same folds, no int8
    # (no 1-bit storage).
    cut = names.index("quantize-int8") if "quantize-int8" in names else len(names)
    before: dict[str, Any] = {}
    graph, reports, start = original, [], 0
    for stop in sorted({names.index(p) for p in SUMMARIZED if p in names} | {len(names)}):
        graph, more = run_pipeline(graph, names[start:stop], options)
        reports += more
        if stop < len(names):
            before[names[stop]] = graph
        start = stop
    fp32 = before.get("quantize-int8", graph)
    opset = args.opset or default_opset(graph)
    model = to_onnx(graph, opset, dynamic_batch=args.dynamic_batch)
    check(model)
    data = model.SerializeToString(deterministic=True)
    given, speed_feeds = b"", None
    if args.check_speed:
        given = file_bytes(loaded.onnx_file) if loaded.onnx_file is not None else \
            to_onnx(original, opset, dynamic_batch=args.dynamic_batch).SerializeToString(
                deterministic=True)
        speed_feeds = speed_check_feeds(given, data, args)
    # Verified in memory before anything is written: a file that fails is never left behind.
    checks: list[Check] = []
    if args.verify and cut < len(names):
        checks = verify_int8(reference, graph, fp32, data, verify_feeds(loaded, options),
                             args.tolerance, dynamic_batch=bool(args.dynamic_batch))
    elif args.verify:
        what = "compiled on onnxruntime vs original on the interpreter" if reports else \
            "interpreter vs onnxruntime"
        if student is not None:
            what = "compiled on onnxruntime vs the student on the interpreter"
        original_file = file_bytes(loaded.onnx_file) \
            if loaded.onnx_file is not None and student is None else None
        lossy = [p for p in names if p in CHANGE_OUTPUTS]
        if lossy:
            # The file must compute what the pruned (binarized) graph computes; how far that
            # is from the model is the passes' error, shown but not a verification failure.
            checks = verify_fp32(graph, data, loaded.feeds, "compiled on onnxruntime vs the "
                                 "compiled graph on the interpreter", args.tolerance,
                                 dynamic_batch=bool(args.dynamic_batch))
            checks += [Check(f"{c.what}: changed on purpose by {', '.join(lossy)}; shown, "
                             "not checked", c.result, checked=False)
                       for c in verify_fp32(reference, data, loaded.feeds, what,
                                            args.tolerance, original_file)]
        else:
            checks = verify_fp32(reference, data, loaded.feeds, what, args.tolerance,
                                 original_file, dynamic_batch=bool(args.dynamic_batch))
    for c in checks:
        if c.checked and c.result is not None and not c.result.ok:
            raise GraphcError(f"the compiled file fails verification ({c.what}); nothing was "
                              f"written to {args.output}", where="--verify",
                              expected="outputs within the tolerance", got=str(c.result),
                              hint="--tolerance R sets the relative tolerance (a fraction of "
                                   "each output's largest magnitude).")
    # Measured before the file is written: a file onnxruntime cannot run is never left behind.
    accuracy = onnx_accuracy(data, test_set) if test_set is not None else None
    write_atomic(args.output, data)
    print(f"compiled {graph.name} -> {args.output} (opset {opset})")
    if args.verbose:
        for note in original.meta.get("import_notes", ()):
            print(f"  import       {note}")
    if weights is not None:
        print(f"  weights      {args.weights} ({weights.summary})")
    if student is not None:
        print(f"  student      {args.student} ({student.summary})")
    if reports:
        print("  passes")
        print(format_reports(reports, verbose=args.verbose, explain=args.explain))
        print(f"  nodes        {len(original.op_nodes())} -> {len(graph.op_nodes())} ops, "
              f"{len(model.graph.node)} ONNX nodes")
        print(f"  parameters   {original.num_params():,} -> {graph.num_params():,}")
    else:
        print(f"  nodes        {len(graph.op_nodes())} ops, {len(model.graph.node)} ONNX nodes")
        print(f"  parameters   {graph.num_params():,}")
    print(f"  file size    {format_size(len(data))}")
    print("  checker      ok (onnx.checker, full_check)")
    for i, c in enumerate(checks):
        print(f"  {'verify' if i == 0 else '':12} {c.text or c.result} ({c.what})")
    sparse = weights.checkpoint.data.get("pruned", {}).get("sparse") if weights else None
    if sparse and "prune-magnitude" not in names:
        print(f"  note         {len(sparse)} weights of {args.weights} hold pruned zeros: add "
              "--passes prune-magnitude to store them as a bitmask and the kept values")
    if cut < len(names):
        print_int8_summary(fp32, data, opset, args, loaded.feeds, weights)
    if "binarize" in before:
        print_binary_summary(before["binarize"], data, opset, args, loaded.feeds, test_set,
                             weights)
    if test_set is not None:
        print_accuracy(data, args.accuracy, test_set, student or weights, accuracy)
    if speed_feeds is not None:
        print_speed_check(given, data, speed_feeds, "given" if loaded.onnx_file else
                          "unoptimized")
    return 0


def load_bound(spec: str, binds: list[str], seed: int) -> Loaded:
    """Load an .onnx MODEL with the graph inputs of ``--bind NAME=V1,V2,...`` made constants.

    The given file takes those inputs and the compiled one does not, so --verify and
    --check-speed compare with the bound graph, not with the given file.
    """
    from graphc.cli.common import example_feeds
    from graphc.onnxio.importer import from_onnx

    if not spec.lower().endswith(".onnx"):
        raise UsageError("graph inputs are bound in an .onnx MODEL only", where="--bind",
                         expected="an .onnx file", got=repr(spec))
    values: dict[str, list[float]] = {}
    for text in binds:
        name, sep, numbers = text.partition("=")
        if name.strip() in values:
            raise UsageError("the graph input is bound twice", where="--bind",
                             expected="one --bind per input", got=repr(name.strip()))
        try:
            values[name.strip()] = [int(v) if v.strip().lstrip("-").isdigit() else float(v)
                                    for v in numbers.split(",") if v.strip()]
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise UsageError("the value is not a graph input name and numbers", where="--bind",
                             expected="NAME=V1,V2,... (NAME= for no values)", got=repr(text))
    graph = from_onnx(spec, bind=values)
    graph.verify()
    return Loaded(graph, example_feeds(None, graph, seed))


def student_options(args: argparse.Namespace, names: list[str], weights: Weights | None,
                    test_set: Any, options: dict[str, dict[str, Any]]
                    ) -> tuple[dict[str, dict[str, Any]], Weights | None]:
    """The options of substitute-student: the student with its checkpoint's weights and the
    passes listed before substitute-student (the teacher got them too), the test split of
    ``--accuracy`` as held-out data and ``--gate``; and the student's weights."""
    from graphc.compress.gate import check_points
    from graphc.pipeline import run_pipeline

    flags = {"--student": args.student, "--gate": args.gate}
    if "substitute-student" not in names:
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to substitute-student",
                             expected="--passes substitute-student",
                             got=f"passes: {names or 'none'}")
        return {}, None
    if args.student is None:
        raise UsageError("substitute-student needs the trained student", where="--student",
                         expected="--student STUDENT:CKPT (a zoo name or .py file and its "
                         "checkpoint)", got="nothing")
    gate = check_points(1.0 if args.gate is None else args.gate, "--gate")
    k = names.index("substitute-student")
    if "quantize-int8" in names[:k]:
        raise UsageError("substitute-student must come before quantize-int8",
                         expected="--passes substitute-student,quantize-int8",
                         got=f"passes: {', '.join(names)}",
                         hint="Quantize the student that ships, not the teacher it replaces.")
    if test_set is None:
        raise UsageError("substitute-student needs held-out data for its accuracy gate",
                         where="--accuracy", expected="--accuracy digits", got="nothing",
                         hint="The student replaces the teacher only if its accuracy on the "
                              "test split is within --gate points of the teacher's.")
    spec, colon, path = args.student.partition(":")
    if not colon or not spec or not path:
        raise UsageError(f"cannot read --student {args.student!r}", where="--student",
                         expected="STUDENT:CKPT, e.g. student:s.ckpt", got=repr(args.student))
    if spec.endswith(".onnx"):
        raise UsageError("--student needs a zoo model or a .py file", where="--student",
                         expected="a model graphc trains, with its checkpoint",
                         got=f"the ONNX file {spec}")
    # Read first for its message: a checkpoint of another model is an error of --student.
    read_checkpoint(path, spec, "--student")
    student = apply_weights(path, spec, load_model(spec, args.seed), args.seed)
    teacher_classes = weights.classes if weights is not None else None
    if student.classes != teacher_classes:
        raise UsageError("the student was trained on other classes than the teacher",
                         where="--student", expected=f"classes {teacher_classes or 'all'}",
                         got=f"classes {student.classes or 'all'}")
    graph, _ = run_pipeline(student.graph, names[:k], options)
    return {"substitute-student": {"student": graph, "data": (test_set.x, test_set.y),
                                   "gate": gate}}, student


def quantize_options(args: argparse.Namespace, graph: Any, names: list[str],
                     weights: Any) -> dict[str, dict[str, Any]]:
    """The options of quantize-int8 from the command line, with its calibration data."""
    flags = {"--calibrate": args.calibrate, "--calibration": args.calibration,
             "--per-tensor": args.per_tensor, "--prefer": args.prefer,
             "--weight-range": args.weight_range, "--max-error": args.max_error,
             "--fp32-layers": args.fp32_layers, "--format": args.format,
             "--dynamic": args.dynamic}
    if "quantize-int8" not in names:
        given = [flag for flag, value in flags.items() if value not in (None, False)]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to quantize-int8",
                             expected="--passes quantize-int8", got=f"passes: {names or 'none'}")
        return {}
    from graphc.passes.quantize_int8 import check_choices

    # Checked before any data is read or any pass runs: a typo is a usage error at once.
    given = {"method": args.calibration, "prefer": args.prefer,
             "weight_range": args.weight_range, "format": args.format,
             "max_error": args.max_error}
    check_choices(**{k: v for k, v in given.items() if v is not None})
    trained = weights is not None and weights.checkpoint.data.get("qat")
    if args.calibrate is None and not args.dynamic and not trained:
        raise UsageError("quantize-int8 needs calibration data", where="--calibrate",
                         expected="--calibrate digits or --calibrate FILE.npz", got="nothing",
                         hint="Activation ranges are measured on real inputs; --dynamic "
                              "measures them on every call instead.")
    options: dict[str, Any] = {}
    if args.calibrate is not None:
        options["calibration"] = calibration_data(args.calibrate, graph, weights)
    for key, value in (("method", args.calibration), ("prefer", args.prefer),
                       ("weight_range", args.weight_range), ("max_error", args.max_error),
                       ("format", args.format)):
        if value is not None:
            options[key] = value
    if args.per_tensor:
        options["per_channel"] = False
    if args.dynamic:
        options["dynamic"] = True
    if args.fp32_layers:
        options["fp32_layers"] = [s.strip() for s in args.fp32_layers.split(",") if s.strip()]
    return {"quantize-int8": options}


def prune_options(args: argparse.Namespace, names: list[str]) -> dict[str, dict[str, Any]]:
    """The options of prune-magnitude and prune-channels from the command line, refused for
    a pass that is not run."""
    chosen: dict[str, dict[str, Any]] = {"prune-magnitude": {}, "prune-channels": {}}
    for flag, value, key, passes in (
            ("--sparsity", args.sparsity, "sparsity", ("prune-magnitude",)),
            ("--prune-amount", args.prune_amount, "amount", ("prune-channels",)),
            ("--prune-method", args.prune_method, "method", ("prune-channels",)),
            ("--round-to", args.round_to, "round_to", ("prune-channels",)),
            ("--prune-scope", args.prune_scope, "scope", ("prune-magnitude", "prune-channels"))):
        if value is None:
            continue
        run = [p for p in passes if p in names]
        if not run:
            raise UsageError(f"{flag} only applies to {' or '.join(passes)}",
                             expected=f"--passes {passes[0]}", got=f"passes: {names or 'none'}")
        for name in run:
            chosen[name][key] = value
    from graphc.compress.channels import check_options
    from graphc.compress.sparse import check_scope, check_sparsity

    magnitude, channels = chosen["prune-magnitude"], chosen["prune-channels"]
    if "sparsity" in magnitude:
        check_sparsity(magnitude["sparsity"], "--sparsity")
    if "scope" in magnitude:
        check_scope(magnitude["scope"], "--prune-scope")
    if channels:
        check_options(channels.get("amount", 0.5), channels.get("method", "l1"),
                      channels.get("scope", "layer"), channels.get("round_to", 8), 1)
    return {k: v for k, v in chosen.items() if v}


def calibration_data(spec: str, graph: Any, weights: Any) -> np.ndarray:
    """The inputs of ``--calibrate``: the digits training split (the checkpoint's classes), or
    the arrays of an .npz file (one array, or one named after the model's input)."""
    import numpy as np

    from graphc.ir import Value
    from graphc.train.loop import fit_data

    shape = graph.type_of(Value(graph.inputs[0])).shape
    if has_labels(spec):
        train_set, _ = load_data(spec, weights.classes if weights else None)
        return fit_data(train_set, shape, f"--calibrate {spec}")[:CALIBRATION_SAMPLES]
    if not spec.endswith(".npz"):
        raise UsageError(f"cannot calibrate with {spec!r}", where="--calibrate",
                         expected="a data set (see --data of `graphc train --help`), or an "
                         ".npz file of inputs", got=spec)
    try:
        with np.load(spec, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        # numpy's own message ends with a period and, for a file that is no archive, talks of
        # pickles: show its first sentence as what was found.
        raise UsageError(f"cannot read {spec!r}", where="--calibrate",
                         expected="an .npz file of arrays written by numpy.savez",
                         got=str(err).split(". ")[0].rstrip(".")) from None
    name = graph.inputs[0]
    if name in arrays:
        return arrays[name]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise UsageError(f"{spec} has several arrays and none is called {name!r}", where="--calibrate",
                     expected=f"one array, or one named {name!r}", got=sorted(arrays))


def print_int8_summary(fp32: Any, data: bytes, opset: int, args: argparse.Namespace,
                       feeds: dict[str, np.ndarray], weights: Any = None) -> None:
    """Print size, latency and (with --calibrate digits) accuracy of the int8 file against
    the fp32 file the same pipeline writes without quantize-int8, both on onnxruntime."""
    from graphc.compress.latency import cpu_info, measure
    from graphc.onnxio.export import to_onnx

    if any(fp32.op(n) == "FakeQuantizeLinear" for n in fp32.op_nodes()):
        from graphc.compress.qat import fake_quant_grids

        fp32 = fake_quant_grids(fp32)[0]  # a QAT model: compare with its float weights
    reference = to_onnx(fp32, opset, dynamic_batch=args.dynamic_batch).SerializeToString(
        deterministic=True)
    print(f"  int8         size {format_size(len(data))} vs {format_size(len(reference))} fp32 "
          f"({len(data) / len(reference):.2f}x)")
    first = fp32.inputs[0]
    t = measure([reference, data], {first: feeds[first]}, rounds=21)[1]
    print(f"               time {t.ratio:.2f}x fp32 at batch {feeds[first].shape[0]} (median of 21 "
          f"interleaved runs, 1 thread; {cpu_info().describe()})")
    if has_labels(args.calibrate):
        _, test_set = load_data(args.calibrate, weights.classes if weights else None)
        before, after = onnx_accuracy(reference, test_set), onnx_accuracy(data, test_set)
        print(f"               accuracy {100 * after:.2f}% vs {100 * before:.2f}% fp32 on the "
              f"{args.calibrate} test split ({len(test_set)} images, onnxruntime)")

def print_binary_summary(fp32: Any, data: bytes, opset: int, args: argparse.Namespace,
                         feeds: dict[str, np.ndarray], test_set: Any = None,
                         weights: Weights | None = None) -> None:
    """Print size, latency and (with --accuracy) accuracy of the file binarize wrote against
    the fp32 file of the passes before it, both on onnxruntime, and the accuracy recorded in
    the fp32 checkpoint a binary one was fine-tuned from; the pass's notes give each layer's
    form and bytes."""
    from graphc.compress.latency import cpu_info, measure
    from graphc.onnxio.export import to_onnx

    reference = to_onnx(fp32, opset, dynamic_batch=args.dynamic_batch).SerializeToString(
        deterministic=True)
    print(f"  binary       size {format_size(len(data))} vs {format_size(len(reference))} fp32 "
          f"({len(data) / len(reference):.3f}x; the same passes without binarize)")
    first = fp32.inputs[0]
    t = measure([reference, data], {first: feeds[first]}, rounds=21)[1]
    print(f"               time {t.ratio:.2f}x fp32 at batch {feeds[first].shape[0]} (median of 21 "
          f"interleaved runs, 1 thread; {cpu_info().describe()})")
    if test_set is not None:
        before, after = onnx_accuracy(reference, test_set), onnx_accuracy(data, test_set)
        print(f"               accuracy {100 * after:.2f}% vs {100 * before:.2f}% in the fp32 "
              f"file on the {args.accuracy} test split ({len(test_set)} images, onnxruntime)")
    data_record = weights.checkpoint.data if weights is not None else {}
    init = data_record.get("init")
    if data_record.get("binary") and init and Path(init).is_file():
        start = read_checkpoint(init, weights.checkpoint.model, "--weights")
        if start.history and not start.data.get("binary"):
            last = start.history[-1]
            print(f"               fine-tuned from {init}: {100 * last.test_accuracy:.2f}% test "
                  f"accuracy in fp32 (recorded after its epoch {last.epoch})")


def positive_float(text: str) -> float:
    """Parse a float > 0 (argparse turns the ValueError into a usage error).

    >>> positive_float("1e-3")
    0.001
    """
    import math

    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return value


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``compile`` command to ``sub`` (the sub-parsers of ``graphc``)."""
    p = sub.add_parser("compile", parents=[common], help="compile a model to an ONNX file")
    p.add_argument("model", help="a zoo model name (see `graphc models`), a .py file with "
                                 "build(), or an .onnx file")
    p.add_argument("-o", "--output", required=True, help="the ONNX file to write")
    p.add_argument("--opset", type=positive_int,
                   help="ONNX opset (default 17, or an imported file's own opset)")
    p.add_argument("--verify", action="store_true",
                   help="run the file on onnxruntime and compare with the interpreter (and an "
                        ".onnx input on onnxruntime); a mismatch exits 1 and writes nothing")
    p.add_argument("--tolerance", type=positive_float, metavar="R",
                   help="--verify: relative tolerance, a fraction of each output's largest "
                        "magnitude (default by dtype: float32 1e-4, float64 1e-11, float16 "
                        "1e-2, integers exact); NaN and infinities always compare exactly")
    p.add_argument("--check-speed", action="store_true",
                   help="time the written file against the input (an .onnx input: that file; "
                        "a model: the file compiled without passes) on onnxruntime, paired, "
                        "with a noise band; warn when it is slower")
    p.add_argument("--check-speed-batch", type=positive_int, metavar="B",
                   help="--check-speed: the batch size to time at (default 1; needs a "
                        "dynamic-batch file for B > 1)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="parameter initialization seed (an int >= 0)")
    p.add_argument("--dynamic-batch", action="store_true", default=None,
                   help="name the first dimension of inputs and outputs N")
    p.add_argument("--passes", help="comma-separated passes to run (see `graphc passes`)")
    p.add_argument("--pipeline", help="a named pipeline of passes, e.g. inference")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the rewrites each pass refused, with reasons")
    p.add_argument("--bind", action="append", metavar="NAME=V1,V2,...",
                   help="an .onnx MODEL: make graph input NAME a constant holding these "
                        "values (an input an op needs as a constant: Reshape's shape, Pad's "
                        "pads, a Reduce's axes); repeat for several inputs")
    p.add_argument("--explain", action="store_true",
                   help="show each rewrite: the nodes before and after and the formula")
    p.add_argument("--weights", metavar="CKPT",
                   help="a checkpoint of `graphc train` to take the weights from (its head "
                        "may have another number of classes)")
    p.add_argument("--accuracy", metavar="DATA",
                   help="print the written file's test accuracy on onnxruntime on the test "
                        "split of DATA: digits (the checkpoint's --classes subset, if any), "
                        "another data set name, an .npz or .csv file or an image folder (see "
                        "docs/data.md)")
    r = p.add_argument_group("pruning (with --passes prune-magnitude or prune-channels; "
                             "`graphc prune` fine-tunes between steps)")
    r.add_argument("--sparsity", type=float, metavar="S",
                   help="prune-magnitude: zero this fraction of each weight's smallest |w| "
                        "(default: keep the zeros there are and store them as a bitmask)")
    r.add_argument("--prune-amount", type=float, metavar="A",
                   help="prune-channels: remove this fraction of the channels (default 0.5)")
    r.add_argument("--prune-method", metavar="NORM",
                   help="prune-channels: rank channels by l1 (sum |w|, default) or l2 "
                        "(sum w^2)")
    r.add_argument("--round-to", type=int, metavar="N",
                   help="prune-channels: round kept channel counts up to a multiple of N "
                        "(default 8)")
    r.add_argument("--prune-scope", metavar="NAME",
                   help="layer (the same share of every layer, default) or global")
    d = p.add_argument_group("distillation (with --passes substitute-student)")
    d.add_argument("--student", metavar="STUDENT:CKPT",
                   help="the trained student that replaces the model: a zoo name or .py file "
                        "and its checkpoint (it gets the passes listed before "
                        "substitute-student); needs --accuracy DATA as held-out data")
    d.add_argument("--gate", type=float, metavar="POINTS",
                   help="refuse a student whose accuracy on the --accuracy test split is more "
                        "than POINTS below the model's (default 1.0)")
    q = p.add_argument_group("int8 quantization (with --passes quantize-int8)")
    q.add_argument("--calibrate", metavar="DATA",
                   help="calibration inputs: 256 training samples of a data set (digits, "
                        "a name, a labeled .npz or .csv file, an image folder), or FILE.npz "
                        "of inputs")
    q.add_argument("--calibration", metavar="METHOD",
                   help="activation ranges by minmax (default), percentile or entropy")
    q.add_argument("--per-tensor", action="store_true",
                   help="one weight scale per tensor (default: one per output channel)")
    q.add_argument("--prefer", metavar="WHAT",
                   help="speed (default: keep a layer in int8 only if it is accurate and faster "
                        "on this CPU) or size (every accurate layer in int8)")
    q.add_argument("--weight-range", metavar="RANGE",
                   help="int8 weights in [-127, 127] (full) or [-63, 63] (reduced, exact on "
                        "CPUs without VNNI); default auto, by the CPU")
    q.add_argument("--max-error", type=float, metavar="E",
                   help="largest model output error (relative RMS) one int8 layer may cause "
                        "(default 0.05)")
    q.add_argument("--fp32-layers", metavar="NODES",
                   help="comma-separated layers to keep in fp32")
    q.add_argument("--format", metavar="FORM",
                   help="qdq (default: QuantizeLinear/DequantizeLinear around float ops) or "
                        "qoperator (QLinearConv, uint8 passed between int8 layers)")
    q.add_argument("--dynamic", action="store_true",
                   help="quantize Gemm/MatMul inputs on every call (DynamicQuantizeLinear + "
                        "MatMulInteger): no calibration data needed; Conv stays fp32")
    p.set_defaults(func=cmd_compile)
