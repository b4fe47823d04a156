"""The ``graphc`` command line: ``main()``, the parser, loading MODEL, and the commands
compile, show, grad, passes, models and ops.

``graphc train`` and the checkpoint side of ``compile`` (``--weights``, ``--accuracy``) are in
``graphc.cli_train``, which uses this module's model loading (``load_module``, ``build_at``)
and ``check_writable``; this module imports it only inside ``make_parser`` and ``cmd_compile``.

Errors print one line, ``graphc: error: ...``, and exit 1 (2 for usage errors); ``--debug``
shows the traceback instead.
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


def load_module(spec: str, verb: str = "compile") -> ModuleType:
    """Import MODEL, a zoo name or a .py file (another file is a usage error of ``verb``)."""
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


def _origin(module: ModuleType) -> str:
    return getattr(module, "__file__", None) or module.__name__


def _check_graph(graph: Any, origin: str) -> None:
    """Refuse what a model's ``build()`` returned unless it is a graphc Graph."""
    from graphc.ir import Graph

    if not isinstance(graph, Graph):
        raise GraphcError(f"build() of {origin} returned {type(graph).__name__}",
                          expected="a graphc Graph (return b.build())", got=type(graph).__name__)


def _build(module: ModuleType, seed: int) -> Any:
    try:
        graph = module.build(seed=seed)
    except TypeError as err:
        if "seed" not in str(err):
            raise
        graph = module.build()
    _check_graph(graph, _origin(module))
    graph.verify()
    return graph


def build_at(module: ModuleType, seed: int, batch: int) -> Any:
    """Build MODEL's graph at a training batch size: ``build(seed=..., batch=...)``."""
    from graphc.ir import Value

    origin = _origin(module)
    try:
        graph = module.build(seed=seed, batch=batch)
    except TypeError as err:
        if "batch" not in str(err) and "seed" not in str(err):
            raise
        raise GraphcError(f"cannot train {Path(origin).stem}: its build() takes no seed and "
                          "batch arguments", where=origin,
                          expected="def build(seed=0, batch=1) -> Graph",
                          got=str(err)) from None
    _check_graph(graph, origin)
    shape = graph.type_of(Value(graph.inputs[0])).shape if graph.inputs else ()
    if not shape or shape[0] != batch:
        raise GraphcError(f"build(batch={batch}) of {origin} made an input of another batch size",
                          where=f"input {graph.inputs[0]!r}" if graph.inputs else None,
                          expected=f"shape ({batch}, ...)", got=shape,
                          hint="Use the batch argument for the first dimension of the input.")
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
    module = load_module(spec)
    graph = _build(module, seed)
    return Loaded(graph, example_feeds(module, graph, seed))


def check_writable(path: str, option: str) -> None:
    """Refuse an output path whose folder is missing, before any work is done."""
    target = Path(path)
    if target.is_dir():
        raise GraphcError(f"cannot write {path!r}: it is a folder", where=option,
                          hint="Give a file name.")
    folder = target.parent
    if folder.exists() and not folder.is_dir():
        raise GraphcError(f"cannot write {path!r}: {str(folder)!r} is a file, not a folder",
                          where=option, hint="Give a path in an existing folder.")
    if not folder.is_dir():
        raise GraphcError(f"cannot write {path!r}: the folder {str(folder)!r} does not "
                          "exist", where=option, hint="Create it first.")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise GraphcError(f"cannot write {path!r}: permission denied", where=option,
                          hint="Choose a writable location.")


def _size(nbytes: int) -> str:
    return f"{nbytes / 1024:,.1f} KiB" if nbytes < 1024**2 else f"{nbytes / 1024**2:,.1f} MiB"


def cmd_compile(args: argparse.Namespace) -> int:
    from graphc.cli_train import accuracy_data, apply_weights, check_data, print_accuracy
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
        print_accuracy(data, args.accuracy, test_set, weights)
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
    from graphc.cli_train import add_train_parser

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

    add_train_parser(sub, common)

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
