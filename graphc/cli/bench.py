"""``graphc bench``: time ONNX files side by side on onnxruntime (CPU) and say which is faster.

The files must take the same inputs (a model and its compressed forms); they run on the same
seeded standard-normal inputs, interleaved in rounds, and each file's time is given as a ratio
to the first file's time in the same run: absolute times drift between runs and machines, the
ratio of interleaved runs does not (see graphc.compress.latency and docs/bench.md).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphc.cli.common import check_threads, format_size
from graphc.errors import GraphcError, UsageError

if TYPE_CHECKING:
    import numpy as np

# Standard-normal noise is a sound input for float tensors; for integer inputs (token ids,
# indices, masks) the valid values are known only to the model, so they are refused.
FLOAT_TYPES = ("float16", "float32", "float64")
# The smallest difference called faster or slower. On the project's shared machines the
# same int8 ResNet-18 comparisons run twice moved by up to 3% (1.02x, then 1.05x), and the
# same small file twice differed by up to 2%: a smaller difference does not survive a rerun.
NOISE = 0.05
HINT_SAME_INPUTS = ("graphc bench compares files that take the same inputs, such as a model and "
                    "its compressed forms.")
HINT_DYNAMIC = ("Write it with a free batch dimension (graphc compile FILE.onnx -o NEW.onnx "
                "--dynamic-batch), or leave out --batch to use the files' own batch.")


@dataclass
class Input:
    """A graph input: its name, numpy dtype and dimensions (an int, a symbol's name, or None)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | str | None, ...]

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.dims)
        return f"({dims}{',' if len(self.dims) == 1 else ''}) {self.dtype}"


@dataclass
class BenchFile:
    """A file given on the command line: its label, serialized model and inputs."""

    label: str
    data: bytes
    inputs: list[Input]


def _inputs(model: Any, label: str) -> list[Input]:
    """Return the inputs of an onnx ModelProto that are not initializers (old files list
    their initializers among the inputs)."""
    import numpy as np
    import onnx

    weights = {t.name for t in model.graph.initializer}
    found = []
    for value in model.graph.input:
        if value.name in weights:
            continue
        where = f"{label}, input {value.name!r}"
        if not value.type.HasField("tensor_type"):
            raise GraphcError("graphc bench feeds tensors only", where=where,
                              expected="a tensor input", got=value.type.WhichOneof("value"))
        ttype = value.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type))
        except (KeyError, TypeError, ValueError):
            raise GraphcError("the input has an element type numpy does not know", where=where,
                              expected="float16, float32 or float64",
                              got=f"ONNX element type {ttype.elem_type}") from None
        if not ttype.HasField("shape"):
            raise GraphcError("the input has no shape", where=where,
                              expected="a shape with fixed sizes after the batch", got="none")
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in ttype.shape.dim)
        found.append(Input(value.name, dtype, dims))
    return found


def read_file(path: str, label: str) -> BenchFile:
    """Load an ONNX file (external data checked to stay in its folder) and read its inputs."""
    from graphc.onnxio.load import _load

    model = _load(path)
    try:
        data = model.SerializeToString()
    except ValueError as err:  # protobuf cannot write a message over 2 GiB
        raise GraphcError(f"cannot pass {path!r} to onnxruntime from memory: {err}") from None
    inputs = _inputs(model, label)
    for inp in inputs:
        where = f"{label}, input {inp.name!r}"
        if inp.dtype.name not in FLOAT_TYPES:
            raise GraphcError("cannot make random values for an integer or boolean input",
                              where=where, expected="float16, float32 or float64",
                              got=str(inp.dtype),
                              hint="graphc bench feeds standard-normal noise; the valid values "
                                   "of token ids, indices or masks are known only to the model.")
        free = [axis for axis, d in enumerate(inp.dims) if axis > 0 and not isinstance(d, int)]
        if free:
            raise GraphcError(f"dimension {free[0]} has no fixed size", where=where,
                              expected="fixed sizes after the batch dimension",
                              got=inp.describe(),
                              hint="Export the file with fixed sizes (only the batch free).")
        if 0 in inp.dims:
            raise GraphcError("the input has a dimension of size 0 (a batch of 0 when it is "
                              "the first)", where=where, expected="sizes >= 1",
                              got=inp.describe(), hint="There is nothing to time on no data.")
    return BenchFile(label, data, inputs)


def check_same_inputs(files: list[BenchFile]) -> None:
    """Refuse files whose inputs differ from the first file's in name, dtype or shape (the
    batch dimension may differ: it is checked against each batch size)."""
    first = files[0]
    want = {i.name: i for i in first.inputs}
    for f in files[1:]:
        got = {i.name: i for i in f.inputs}
        if want.keys() != got.keys():
            missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
            what = (f"{f.label} lacks input {missing[0]!r}, which {first.label} takes" if missing
                    else f"{f.label} takes input {extra[0]!r}, which {first.label} does not")
            raise GraphcError(what, where=f"{f.label}, inputs", expected=sorted(want),
                              got=sorted(got), hint=HINT_SAME_INPUTS)
        for name, a in want.items():
            b = got[name]
            if a.dtype != b.dtype or len(a.dims) != len(b.dims) or a.dims[1:] != b.dims[1:]:
                raise GraphcError(f"{f.label} takes another input than {first.label}",
                                  where=f"{f.label}, input {name!r}", expected=a.describe(),
                                  got=b.describe(), hint=HINT_SAME_INPUTS)


def parse_batches(text: str | None) -> list[int] | None:
    """Return the batch sizes of ``--batch`` ("1,32,256"), or None when it is not given.

    >>> parse_batches("1, 32,256")
    [1, 32, 256]
    """
    if text is None:
        return None
    sizes = []
    for part in text.split(","):
        try:
            size = int(part.strip())
        except ValueError:
            size = 0
        if size < 1:
            raise UsageError(f"bad batch size {part.strip()!r}", where="--batch",
                             expected="comma-separated integers >= 1, e.g. 1,32,256",
                             got=repr(text))
        if size not in sizes:
            sizes.append(size)
    return sizes


def choose_batches(files: list[BenchFile], wanted: list[int] | None) -> list[int]:
    """Return the batch sizes to run: ``wanted``, each checked against the files' fixed batch
    dimensions, or else the files' own batch (1 where it is free in every file)."""
    fixed = [(f.label, i) for f in files for i in f.inputs
             if i.dims and isinstance(i.dims[0], int)]
    if wanted is None:
        sizes = sorted({i.dims[0] for _, i in fixed})
        if len(sizes) > 1:
            raise GraphcError("the files have different fixed batch sizes",
                              expected="one batch size", got=", ".join(map(str, sizes)),
                              hint="Compile them with --dynamic-batch and choose sizes with "
                                   "--batch.")
        wanted = sizes or [1]
    for size in wanted:
        for label, inp in fixed:
            if inp.dims[0] != size:
                raise UsageError(f"{label} has a fixed batch size (input {inp.name!r} is "
                                 f"{inp.describe()})", where=f"--batch {size}",
                                 expected=f"batch {inp.dims[0]}", got=size, hint=HINT_DYNAMIC)
    return wanted


def random_feeds(inputs: list[Input], batch: int, seed: int) -> dict[str, np.ndarray]:
    """Return seeded standard-normal inputs with the first dimension set to ``batch``.

    >>> import numpy as np
    >>> x = Input("x", np.dtype("float32"), ("N", 3))
    >>> random_feeds([x], 2, seed=0)["x"].shape
    (2, 3)
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal((batch, *i.dims[1:]) if i.dims else ())
            .astype(i.dtype) for i in inputs}


def format_time(seconds: float, unit: float | None = None) -> str:
    """Return a duration in µs (under 1 ms), ms (under 1 s) or s; ``unit`` forces the unit of
    another duration, so that a spread reads in the unit of its median.

    >>> format_time(2.5e-5), format_time(0.0123), format_time(4e-4, unit=0.0123)
    ('25.0 µs', '12.30 ms', '0.40 ms')
    """
    scale = seconds if unit is None else unit
    if scale < 1e-3:
        return f"{seconds * 1e6:.1f} {_micro()}s"
    if scale < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _micro() -> str:
    # An output that cannot encode the micro sign (PYTHONIOENCODING=ascii) gets "us"; a text
    # stream without an encoding (io.StringIO) takes any character.
    try:
        "µ".encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return "u"
    return "µ"


def _spread(t: Any) -> str:
    low, high = format_time(t.low, t.median), format_time(t.high, t.median)
    return f"{low.rsplit(' ', 1)[0]}-{high}"


def answer(t: Any, first: str, batch: int) -> str:
    """Return the one-line answer for a file's timing (a ``Timing``) against the first file:
    faster or slower only when the middle half of the per-round ratios lies on one side of 1
    and the ratio is at least ``NOISE`` away from it.

    >>> from graphc.compress.latency import Timing
    >>> print(answer(Timing("b.onnx", 1e-4, 9e-5, 2e-4, 0.45, 0.44, 0.47, 100, 21), "a.onnx", 1))
    b.onnx takes 0.45x the time of a.onnx at batch 1: faster
    """
    text = f"{t.name} takes {t.ratio:.2f}x the time of {first} at batch {batch}"
    if t.ratio_low <= 1.0 <= t.ratio_high:
        return (f"{text}: no clear difference (the middle half of the rounds spans "
                f"{t.ratio_low:.2f}-{t.ratio_high:.2f}x)")
    if abs(t.ratio - 1) < NOISE:
        return f"{text}: no clear difference (under {NOISE:.0%}, within the drift between runs)"
    return f"{text}: {'faster' if t.ratio < 1 else 'slower'}"


def print_table(files: list[BenchFile], timings: list[Any]) -> None:
    rows = [("file", "size", "median", "spread (p25-p75)", "ratio")]
    rows += [(t.name, format_size(len(f.data)), format_time(t.median), _spread(t),
              f"{t.ratio:.2f}x") for f, t in zip(files, timings, strict=True)]
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                          strict=True)]
        print("  " + "  ".join(cells).rstrip())


def labels(paths: list[str]) -> list[str]:
    """Return the paths as given, a repeated one numbered (the same file twice measures the
    noise of the machine).

    >>> labels(["a.onnx", "b.onnx", "a.onnx"])
    ['a.onnx', 'b.onnx', 'a.onnx #2']
    """
    seen: dict[str, int] = {}
    out = []
    for path in paths:
        seen[path] = seen.get(path, 0) + 1
        out.append(path if seen[path] == 1 else f"{path} #{seen[path]}")
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    import onnxruntime

    from graphc.compress.latency import cpu_info, measure

    wanted = parse_batches(args.batch)
    check_threads(args.threads)
    for option, value, least in (("--rounds", args.rounds, 1), ("--seed", args.seed, 0)):
        if value < least:
            raise UsageError(f"{option} must be an integer >= {least}", where=option,
                             got=value)
    files = [read_file(path, label) for path, label in zip(args.files, labels(args.files),
                                                            strict=True)]
    check_same_inputs(files)
    batches = choose_batches(files, wanted)
    from graphc.onnxio.runtime import session

    for f in files:
        # One run before the header: a file onnxruntime cannot load or run (no kernel for an
        # op and dtype) is named in graphc's one line, not onnxruntime's raw message.
        session(f.data, threads=1).run(None, random_feeds(f.inputs, batches[0], args.seed))
    threads = f"{args.threads} thread{'s' if args.threads > 1 else ''}"
    print(f"cpu          {cpu_info().describe()}")
    print(f"onnxruntime  {onnxruntime.__version__} CPU, {threads}, median of {args.rounds} "
          f"interleaved rounds, inputs N(0, 1) with seed {args.seed}")
    for batch in batches:
        feeds = random_feeds(files[0].inputs, batch, args.seed)
        timings = measure([f.data for f in files], feeds, names=[f.label for f in files],
                          threads=args.threads, rounds=args.rounds)
        print(f"\nbatch {batch}")
        print_table(files, timings)
        for t in timings[1:]:
            print("  " + answer(t, files[0].label, batch))
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``bench`` command to ``sub`` (the sub-parsers of ``graphc``)."""
    p = sub.add_parser("bench", parents=[common],
                       help="compare the speed of ONNX files on onnxruntime (CPU)")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="ONNX files that take the same inputs; times are given as ratios to "
                        "the first (the same file twice shows the machine's noise)")
    p.add_argument("--batch", metavar="SIZES",
                   help="comma-separated batch sizes, e.g. 1,32,256 (default: the files' own "
                        "batch, 1 if it is free)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--rounds", type=int, default=21, metavar="N",
                   help="interleaved rounds; each file's time is the median (default 21)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the random inputs (default 0)")
    p.set_defaults(func=cmd_bench)
