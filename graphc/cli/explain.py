"""``graphc explain TOPIC``: the course's arithmetic shown on small examples.

Each topic is one entry of ``TOPICS``: a one-line summary, a function that adds the topic's
options to its own parser, and the function that prints it. ``graphc explain`` alone lists the
topics.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphc.cli.common import check_writable
from graphc.errors import GraphcError, UsageError, unknown

PLOT_FORMATS = (".png", ".svg", ".pdf")


@dataclass(frozen=True)
class Topic:
    """One topic of ``graphc explain``: its summary, its options and the function that runs it."""

    summary: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _numbers(text: str, option: str, example: str) -> list[float]:
    """Parse a comma-separated list of numbers given to ``option``, one clear error if not."""
    items = [item.strip() for item in text.split(",")]
    values = []
    for item in items:
        try:
            values.append(float(item))
        except ValueError:
            raise UsageError(f"{item!r} is not a number", where=option,
                             expected=f"comma-separated numbers such as {example}",
                             got=repr(text)) from None
    return values


# ----- temperature ----------------------------------------------------------------------------


def _temperature_options(p: argparse.ArgumentParser) -> None:
    from graphc.train.temperature import DEFAULT_LOGITS, DEFAULT_TEMPERATURES

    def listed(values: tuple[float, ...]) -> str:
        return ",".join(f"{v:g}" for v in values)

    p.add_argument("--logits", default=listed(DEFAULT_LOGITS), metavar="Z1,Z2,...",
                   help="the teacher's logits, one per class (default: %(default)s)")
    p.add_argument("--T", dest="temperatures", default=listed(DEFAULT_TEMPERATURES),
                   metavar="T1,T2,...", help="the temperatures, each > 0 (default: %(default)s)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the probabilities against T and as bars per temperature")


def _temperature(args: argparse.Namespace) -> int:
    from graphc.train import temperature

    logits = temperature.check_logits(_numbers(args.logits, "--logits", "2,1,0.5,-1"),
                                      "--logits")
    temps = temperature.check_temperatures(_numbers(args.temperatures, "--T", "1,2,4,20,100"),
                                           "--T", logits=logits)
    _check_plot(args.plot)
    table = temperature.temperature_table(logits, temps)
    print(f"softmax(z / T) for the logits z = {', '.join(f'{v:g}' for v in logits)}")
    print()
    print(temperature.format_table(table))
    print()
    print(temperature.explanation(table))
    if args.plot:
        temperature.plot_temperature(table, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


# ----- activations ----------------------------------------------------------------------------


def _activations_options(p: argparse.ArgumentParser) -> None:
    from graphc.symbolic.activations import DEFAULT_POINTS

    p.add_argument("--at", default=",".join(f"{v:g}" for v in DEFAULT_POINTS),
                   metavar="X1,X2,...", help="the points x (default: %(default)s)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw each activation and its derivative from x = -4 to 4")


def _activations(args: argparse.Namespace) -> int:
    from graphc.symbolic import activations

    points = activations.check_points(_numbers(args.at, "--at", "-2,-1,0,1,2"), "--at")
    _check_plot(args.plot)
    table = activations.activation_table(points)
    print("f(x) and f'(x) of the course's activations (f' from graphc's gradient graphs)")
    print()
    print(activations.format_table(table))
    print()
    print("At the kinks: Heaviside' = 0 everywhere (no gradient to learn from), ReLU'(0) = 0,")
    print("LeakyReLU'(0) = 1 (the course's (x < 0) alpha x + (x >= 0) x).")
    difference, proved = activations.tanh_identity(points)
    print()
    print(f"tanh(x) = 2 sigmoid(2x) - 1: largest difference at these points {difference:.1e}; "
          f"sympy {'proves' if proved else 'does not prove'} it for every x")
    if args.plot:
        activations.plot_activations(args.plot)
        print(f"\nwrote {args.plot}")
    return 0


def _check_plot(path: str | None) -> None:
    if not path:
        return
    check_writable(path, "--plot")
    if Path(path).suffix.lower() not in PLOT_FORMATS:
        raise UsageError(f"cannot draw {path!r}", where="--plot",
                         expected=f"a {', '.join(PLOT_FORMATS)} file",
                         got=repr(Path(path).suffix or "no suffix"))


# ----- augmentation ---------------------------------------------------------------------------


def _augmentation_options(p: argparse.ArgumentParser) -> None:
    from graphc.train.augment_views import DEFAULT_AUGMENT, DEFAULT_EXTEND

    p.add_argument("--augment", default=DEFAULT_AUGMENT, metavar="SPEC",
                   help="the transforms, each shown alone (train --augment's spec; default: "
                        "%(default)s)")
    p.add_argument("--extend", default=DEFAULT_EXTEND, metavar="SPEC",
                   help="the new objects (train --extend's spec; default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="the random draws (default: %(default)s)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the digits under each transform, the new objects, the generated "
                        "data sets and the feature-space simulation")


def _augmentation(args: argparse.Namespace) -> int:
    from graphc.train import augment_views
    from graphc.train.augment import Augment
    from graphc.train.extend import Extend

    if args.seed < 0:
        raise UsageError("the seed must be >= 0", where="--seed", expected="an int >= 0",
                         got=args.seed)
    for option, parse, spec in (("--augment", Augment.parse, args.augment),
                                ("--extend", Extend.parse, args.extend)):
        try:
            parse(spec)
        except GraphcError as err:
            raise err.located(option) from None
    _check_plot(args.plot)
    views = augment_views.views(args.augment, args.extend, args.seed)
    print(augment_views.format_views(views))
    if args.plot:
        augment_views.plot_views(views, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


# ----- binary ---------------------------------------------------------------------------------


def _binary_options(p: argparse.ArgumentParser) -> None:
    from graphc.compress.xnor import DEFAULT_A, DEFAULT_W, MAX_PRINTED

    def listed(values: tuple[int, ...]) -> str:
        return ",".join(str(v) for v in values)

    p.add_argument("--a", metavar="A1,A2,...",
                   help=f"the first +-1 vector (default: {listed(DEFAULT_A)})")
    p.add_argument("--w", metavar="W1,W2,...",
                   help=f"the second +-1 vector (default: {listed(DEFAULT_W)})")
    p.add_argument("--seed", type=int, metavar="N",
                   help="draw random vectors (and the neuron's inputs and weights) from this seed")
    p.add_argument("--n", type=int, metavar="N",
                   help=f"the length of the random vectors, 1 to {MAX_PRINTED} (default: 8; "
                        "draws them from --seed, 0 if not given)")


def _binary_vectors(args: argparse.Namespace) -> tuple[tuple[int, ...], tuple[int, ...],
                                                        tuple[float, ...], tuple[float, ...]]:
    """Return the two +-1 vectors and the neuron's inputs and latent weights the options ask
    for."""
    from graphc.compress import xnor

    given = [name for name in ("--a", "--w") if getattr(args, name[2:]) is not None]
    drawn = [name for name in ("--seed", "--n") if getattr(args, name[2:]) is not None]
    if given and drawn:
        raise UsageError("give the vectors or draw them, not both", where=" and ".join(given),
                         expected="--a/--w or --seed/--n", got=" and ".join(given + drawn))
    if drawn:
        n = args.n if args.n is not None else len(xnor.DEFAULT_A)
        xnor.check_length(n, "--n")
        if n > xnor.MAX_PRINTED:
            raise UsageError("too long to print", where="--n",
                             expected=f"1 <= n <= {xnor.MAX_PRINTED}", got=n,
                             hint="The example prints every entry and every bit.")
        seed = xnor.check_seed(args.seed if args.seed is not None else 0, "--seed")
        return (*xnor.random_signs(n, seed), *xnor.random_neuron_inputs(n, seed))
    example = "1,-1,1,1,-1,1,-1,-1"
    a = (xnor.check_signs(_numbers(args.a, "--a", example), "--a") if args.a is not None
         else xnor.DEFAULT_A)
    w = (xnor.check_signs(_numbers(args.w, "--w", example), "--w") if args.w is not None
         else xnor.DEFAULT_W)
    for name, v in (("--a", a), ("--w", w)):
        if len(v) > xnor.MAX_PRINTED:
            raise UsageError("too long to print", where=name,
                             expected=f"at most {xnor.MAX_PRINTED} values", got=len(v),
                             hint="The example prints every entry and every bit.")
    return a, w, xnor.DEFAULT_X, xnor.DEFAULT_W_LATENT


def _binary(args: argparse.Namespace) -> int:
    from graphc.compress import xnor

    a, w, x, w_latent = _binary_vectors(args)
    # A vector left at its default is named as such when the lengths differ.
    names = ("--a" if args.a is not None else "the default --a",
             "--w" if args.w is not None else "the default --w")
    dot = xnor.xnor_dot(a, w, names=names)
    neuron = xnor.binary_neuron(x, w_latent)
    print("1. dot(a, w) = 2 * popcount(xnor(a, w)) - n: multiplying signs is comparing bits")
    print()
    print(xnor.format_dot(dot))
    print()
    print("2. A binary neuron (XNOR-Net): y = alpha * (2 * popcount(xnor(a, w)) - n) with "
          "a = sign(x),")
    print("   w = sign(w_latent) and alpha = mean|w_latent|")
    print()
    print(xnor.format_neuron(neuron))
    print()
    print(xnor.WHY_NOT_POPCOUNT)
    return 0


TOPICS: dict[str, Topic] = {
    "activations": Topic("f(x) and f'(x) of Heaviside, sigmoid, tanh, ReLU, leaky ReLU; "
                         "tanh = 2 sigmoid(2x) - 1", _activations_options, _activations),
    "augmentation": Topic("augmentation, new objects, generated data and feature-space noise "
                          "and mixup, in numbers and a picture", _augmentation_options,
                          _augmentation),
    "binary": Topic("dot(a, w) of +-1 vectors as 2 * popcount(xnor(a, w)) - n, bit by bit",
                    _binary_options, _binary),
    "temperature": Topic("softmax(z / T) of a teacher's logits, from T = 1 to the uniform 1/n",
                         _temperature_options, _temperature),
}


# ----- the command ----------------------------------------------------------------------------


class _TopicParser(argparse.ArgumentParser):
    """A topic's parser: its usage errors are graphc's, one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, where=self.prog)


# A value that starts with "-" and a digit, such as "-1,2": argparse would take it for an option.
_NEGATIVE = re.compile(r"-\.?\d")


def _attach_negative_values(options: list[str]) -> list[str]:
    """Join ``--logits -1,2`` into ``--logits=-1,2`` so that a list may start with a negative."""
    joined: list[str] = []
    for item in options:
        if (joined and joined[-1].startswith("--") and "=" not in joined[-1]
                and _NEGATIVE.match(item)):
            joined[-1] += "=" + item
        else:
            joined.append(item)
    return joined


def _topic_list() -> str:
    width = max(len(name) for name in TOPICS)
    return "\n".join(f"  {name:<{width}}  {topic.summary}" for name, topic in TOPICS.items())


def cmd_explain(args: argparse.Namespace) -> int:
    if args.topic is None:
        print("topics (graphc explain TOPIC --help for its options):")
        print(_topic_list())
        return 0
    if args.topic not in TOPICS:
        raise unknown("topic", args.topic, TOPICS, where="graphc explain", cls=UsageError)
    topic = TOPICS[args.topic]
    parser = _TopicParser(prog=f"graphc explain {args.topic}", description=topic.summary,
                          parents=[args.common])
    topic.add_options(parser)
    # Parsed into the same namespace, so a --debug after the topic reaches main().
    parser.parse_args(_attach_negative_values(args.options), namespace=args)
    return topic.run(args)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``explain`` command to ``sub`` (the sub-parsers of ``graphc``)."""
    p = sub.add_parser("explain", parents=[common],
                       help="show the course's arithmetic on a small example (activations, "
                            "binary XNOR dot products, softmax with a temperature)",
                       usage="%(prog)s [-h] [--debug] [TOPIC [the topic's options]]",
                       description="Show the course's arithmetic on a small example.",
                       epilog="topics:\n" + _topic_list(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topic", nargs="?", metavar="TOPIC",
                   help="what to explain (none: list the topics)")
    # Everything after the topic is the topic's own options, parsed by its parser.
    p.add_argument("options", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_explain, common=common)
