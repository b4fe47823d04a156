"""``graphc compile``: run passes, write a checked ONNX file, verify it, report its accuracy."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from graphc.cli.checkpoints import accuracy_data, apply_weights, check_data, print_accuracy
from graphc.cli.common import Loaded, format_size, load_model


def cmd_compile(args: argparse.Namespace) -> int:
    from graphc.files import write_atomic
    from graphc.interpret import run
    from graphc.onnxio.export import check, default_opset, to_onnx
    from graphc.onnxio.runtime import max_abs_diff, run_onnxruntime
    from graphc.pipeline import format_reports, resolve, run_pipeline

    names = resolve(args.passes, args.pipeline)
    if args.accuracy is not None:
        check_data(args.accuracy, "--accuracy")
    loaded = load_model(args.model, args.seed)
    weights = None
    if args.weights:
        weights = apply_weights(args.weights, args.model, loaded, args.seed)
        loaded = Loaded(weights.graph, loaded.feeds, loaded.onnx_file)
    original = loaded.graph
    test_set = None
    if args.accuracy is not None:
        test_set = accuracy_data(args.accuracy, original, weights)
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
    print(f"  file size    {format_size(len(data))}")
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
        print_accuracy(data, args.accuracy, test_set, weights)
    return 0



def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``compile`` command to ``sub`` (the sub-parsers of ``graphc``)."""
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
