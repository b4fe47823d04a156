"""``graphc grad``: symbolic backprop of a small model at a point, with steps, formulas, a
figure and an ONNX model of the gradients."""

from __future__ import annotations

import argparse
from typing import Any

from graphc.cli.common import (
    check_writable,
    load_model,
    non_negative_int,
    positive_int,
    refuse_overwriting,
)
from graphc.errors import UsageError


def parse_point(text: str | None) -> dict[str, Any]:
    """Parse ``x=-2,y=5,w=[0.5,-0.3]`` into a dict of names to numbers or nested lists."""
    import ast

    import numpy as np

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


def check_point_shapes(graph: Any, feeds: dict[str, Any], given: dict[str, Any]) -> None:
    """Refuse a value of ``--at`` with another number of elements than its input or parameter
    (the same numbers in another nesting are reshaped): numpy would broadcast a number over a
    whole tensor, or fail to reshape a list."""
    import numpy as np

    from graphc.ir import Value

    for name, value in given.items():
        if name in feeds:
            want = np.shape(feeds[name])
        elif name in graph.nx and graph.const_value(Value(name)) is not None:
            want = graph.const_value(Value(name)).shape
        else:
            continue  # an unknown name is reported by backprop with the names it knows
        got = np.shape(value)
        if int(np.prod(got)) != int(np.prod(want)):
            count = int(np.prod(want))
            raise UsageError(f"the value of {name} has the wrong size", where="--at",
                             expected=f"shape {want}, {count} number{'s' * (count != 1)}",
                             got=f"shape {got}, {int(np.prod(got))}",
                             hint=f"Give e.g. --at {name}={_example(want)}.")


def _example(shape: tuple[int, ...]) -> str:
    """Return a literal of zeros of ``shape``, as --at reads it."""
    text = "0"
    for size in reversed(shape):
        text = "[" + ",".join([text] * size) + "]"
    return text


def cmd_grad(args: argparse.Namespace) -> int:
    from graphc.symbolic.chain_rule import backprop

    refuse_overwriting([("--onnx", args.onnx), ("--draw", args.draw)], [args.model])
    for option, path in (("--onnx", args.onnx), ("--draw", args.draw)):
        if path:
            check_writable(path, option)  # before the backprop, not after it
    loaded = load_model(args.model, args.seed)
    point: dict[str, Any] = {k: v for k, v in loaded.feeds.items()}
    given = parse_point(args.at)
    check_point_shapes(loaded.graph, loaded.feeds, given)
    point.update(given)
    wrt = [w.strip() for w in args.wrt.split(",") if w.strip()] if args.wrt else None
    from graphc.symbolic.chain_rule import DEFAULT_LIMIT

    result = backprop(loaded.graph, point, wrt, output=args.output,
                      limit=args.limit or DEFAULT_LIMIT, straight_through=args.straight_through,
                      leaky_kink=args.leaky_kink)
    shown = _header_point(loaded.graph.inputs, loaded.feeds, given)
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
        # onnx and onnxruntime only for --onnx: they would double the start-up of the rest.
        import numpy as np

        from graphc.files import write_atomic
        from graphc.onnxio.export import check
        from graphc.onnxio.runtime import run_onnxruntime
        from graphc.symbolic.codegen import gradient_onnx

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


def _header_point(inputs: list[str], feeds: dict[str, Any], given: dict[str, Any]) -> str:
    """The point of the header: the values ``--at`` gives, then the inputs it leaves at the
    model's example values.

    >>> _header_point(["x", "y"], {"x": 1.0, "y": 2.0}, {"x": -2})
    'x=-2; example input y=2'
    >>> _header_point(["x"], {"x": 1.0}, {})
    "the model's example inputs"
    """
    if not given:
        return "the model's example inputs"
    text = ", ".join(f"{k}={_short(v)}" for k, v in given.items())
    rest = [k for k in inputs if k not in given]
    if rest:
        text += f"; example input{'s' * (len(rest) > 1)} " + ", ".join(
            f"{k}={_short(_plain(feeds[k]))}" for k in rest)
    return text


def _plain(value: Any) -> Any:
    """A number or nested list of an array for the header: 6 significant digits, whole numbers
    without a decimal point (as --at reads them).

    >>> _plain([[0.5, -3.0]])
    [[0.5, -3]]
    """
    import numpy as np

    def number(v: float) -> float | int:
        v = float(f"{v:.6g}")
        return int(v) if v.is_integer() else v

    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return number(float(array))
    return [_plain(row) for row in array]


def _short(v: Any) -> str:
    text = str(v).replace(" ", "")
    return text if len(text) <= 40 else text[:37] + "..."



def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``grad`` command to ``sub`` (the sub-parsers of ``graphc``)."""
    p = sub.add_parser("grad", parents=[common],
                       help="backprop symbolically: values, gradients, steps, formulas, figure")
    p.add_argument("model", help="a zoo model name, a .py file with build(), or an .onnx file")
    p.add_argument("--at", help="the point, e.g. x=-2,y=5,z=-4 or x=[[0.5,-0.3]]; parameters "
                                "keep their initial values unless given (default: the model's "
                                "example inputs)")
    p.add_argument("--wrt", help="comma-separated inputs or parameters (default: all)")
    p.add_argument("--of", "--output", dest="output", metavar="OUTPUT",
                   help="the name of the graph output to differentiate (default: the first; "
                        "a tensor output is summed); --output is its older spelling (a name, "
                        "not a file, unlike -o/--output of the other commands)")
    p.add_argument("--steps", action="store_true", help="print every chain-rule step")
    p.add_argument("--formulas", action="store_true", help="print the formulas as text")
    p.add_argument("--latex", action="store_true", help="print the formulas as LaTeX")
    p.add_argument("--draw", metavar="FILE", help="draw the graph with values and gradients "
                                                 "(.png or .svg)")
    p.add_argument("--onnx", metavar="FILE", help="write an ONNX model computing the output "
                                                 "and the gradients")
    p.add_argument("--straight-through", action="store_true",
                   help="use the straight-through estimator for Heaviside (derivative 1)")
    p.add_argument("--leaky-kink", choices=("one", "alpha"), default="one",
                   help="LeakyReLU's slope at 0: one (the course's (x >= 0) x branch, default) "
                        "or alpha")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="the size limit in scalar edges (default: graphc.symbolic.DEFAULT_LIMIT)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="parameter initialization seed (an int >= 0)")
    p.add_argument("--show", type=non_negative_int, default=20,
                   help="gradients to list (default 20)")
    p.add_argument("--table-limit", type=non_negative_int, default=60,
                   help="print the value table up to this many scalar values (default 60)")
    p.set_defaults(func=cmd_grad)
