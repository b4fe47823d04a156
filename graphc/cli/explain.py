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
from graphc.errors import UsageError, unknown

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
    if args.plot:
        check_writable(args.plot, "--plot")
        if Path(args.plot).suffix.lower() not in PLOT_FORMATS:
            raise UsageError(f"cannot draw {args.plot!r}", where="--plot",
                             expected=f"a {', '.join(PLOT_FORMATS)} file",
                             got=repr(Path(args.plot).suffix or "no suffix"))
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


TOPICS: dict[str, Topic] = {
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
                       help="show the course's arithmetic on a small example (softmax with a "
                            "temperature)",
                       usage="%(prog)s [-h] [--debug] [TOPIC [the topic's options]]",
                       description="Show the course's arithmetic on a small example.",
                       epilog="topics:\n" + _topic_list(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topic", nargs="?", metavar="TOPIC",
                   help="what to explain (none: list the topics)")
    # Everything after the topic is the topic's own options, parsed by its parser.
    p.add_argument("options", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_explain, common=common)
