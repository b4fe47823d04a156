"""Measure what a model costs on this CPU: which CPU it is, how long a call takes, what runs.

Every speed claim is a ratio measured in one run. The machines change between sessions (an
AVX2-only AMD EPYC one day, an AVX-512 VNNI Xeon another) and absolute times on shared machines
drift up to 2x, while the ratio of two models timed side by side holds to a few percent. So:

- ``cpu_info()`` names the CPU and its int8-relevant flags, to print next to every ratio: int8
  pays where the CPU has dot-product instructions (VNNI, AMX), and on AVX2 alone it mostly
  does not;
- ``measure()`` times several models on the same inputs in interleaved rounds and returns, per
  model, the median time per call, its spread, and the median of the per-round ratios to the
  first model;
- ``executed_ops()`` reads onnxruntime's profile to list the kernels it runs after its graph
  optimizations, and ``runtime_weight_dequantize()`` finds the int8 trap among them: a weight
  DequantizeLinear that was not fused into an int8 kernel dequantizes the weights on every call.

>>> cpu = CpuInfo("AMD EPYC", ("avx2",))
>>> cpu.vnni
False
>>> cpu.describe()
'AMD EPYC (avx2; no avx512_vnni, avx_vnni, amx_int8: int8 convolutions do not pay here)'
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from graphc.errors import GraphcError, UsageError
from graphc.ir import Graph
from graphc.onnxio.runtime import session

# The x86 features that decide int8 speed, in the order they are printed.
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
# The int8 dot-product instructions. Without one of them onnxruntime's U8S8 kernels add u8*s8
# pairs in 16 bits (vpmaddubsw, with saturation): int8 convolutions measured 0.95-1.14x of
# fp32 time on an AVX2-only EPYC, against 0.33x (64->64 3x3, batch 1) on a VNNI Xeon.
DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")

# One sample is the mean of enough calls to take about this long: a 20 us model timed one call
# at a time measures the timer and the scheduler; a 100 ms model takes one call per sample.
SAMPLE_SECONDS = 0.01
MAX_CALLS_PER_SAMPLE = 100_000

# onnxruntime renames the nodes it copies or fuses: a DequantizeLinear it copies for each of
# its users becomes "<name>/duplicated", a node it creates gets "_token_<n>" (also as the
# suffix that makes a copy's name unique: "<name>/duplicated_token_3").
_RENAMED = re.compile(r"(?:/duplicated|_token_\d+)+$")


# ----- the CPU ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuInfo:
    """A CPU's model name and which of ``INT8_FLAGS`` it has (in that order)."""

    model: str
    flags: tuple[str, ...]

    @property
    def vnni(self) -> bool:
        """Whether int8 dot products run in 32-bit lanes (AVX-512 VNNI or AVX-VNNI)."""
        return "avx512_vnni" in self.flags or "avx_vnni" in self.flags

    def describe(self) -> str:
        """Return one line: the model, its int8 flags, and what they mean for int8 speed.

        >>> CpuInfo("Intel Xeon", ("avx2", "avx512f", "avx512bw", "avx512_vnni")).describe()
        'Intel Xeon (avx2, avx512f, avx512bw, avx512_vnni: int8 convolutions can pay here)'
        """
        if any(f in self.flags for f in DOT_PRODUCT_FLAGS):
            return f"{self.model} ({', '.join(self.flags)}: int8 convolutions can pay here)"
        missing = ", ".join(DOT_PRODUCT_FLAGS)
        if "avx2" in self.flags:
            return (f"{self.model} ({', '.join(self.flags)}; no {missing}: "
                    "int8 convolutions do not pay here)")
        # No measurements exist for such CPUs (an ARM server, an old x86): say so, no guess.
        have = ", ".join(self.flags) + "; " if self.flags else ""
        return f"{self.model} ({have}no avx2, {missing}: int8 speed not measured on such CPUs)"


def _parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """Return the model name and int8 flags of the first processor in /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # every processor repeats the same block; the first one is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    present = set(fields.get("flags", "").split())
    return " ".join(fields.get("model name", "").split()), tuple(
        f for f in INT8_FLAGS if f in present)


def cpu_info() -> CpuInfo:
    """Return this machine's CPU: its model name and int8 flags, read from /proc/cpuinfo.

    Where /proc/cpuinfo does not exist or names no model (macOS, some ARM boards), the model is
    ``platform.processor()`` or the machine type, and no flag is reported.

    >>> info = cpu_info()
    >>> bool(info.model), set(info.flags) <= set(INT8_FLAGS)
    (True, True)
    """
    try:
        model, flags = _parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        model, flags = "", ()
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return CpuInfo(model, flags)


# ----- timing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One model's time per call in seconds over the rounds of ``measure()``: the median and
    the 25th to 75th percentile (``low``, ``high``); its ratio to the first model (the median
    of the per-round ratios) with the same percentiles; and ``calls`` per sample."""

    name: str
    median: float
    low: float
    high: float
    ratio: float
    ratio_low: float
    ratio_high: float
    calls: int
    rounds: int


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _runner(model: bytes | onnx.ModelProto | Graph, name: str, threads: int,
            feeds: dict[str, np.ndarray]) -> Any:
    """Return a call that runs ``model`` once on ``feeds`` (run once here, so that a model
    onnxruntime cannot load or run fails before any timing, by its name)."""
    try:
        sess = session(model, threads=threads)
    except GraphcError:
        raise
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise GraphcError(f"onnxruntime cannot load {name}: {_one_line(err)}") from None

    def run() -> Any:
        return sess.run(None, feeds)

    try:
        run()
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise GraphcError(f"onnxruntime cannot run {name} on the inputs: {_one_line(err)}",
                          expected="inputs " + ", ".join(
                              f"{i.name} {i.type} {i.shape}" for i in sess.get_inputs()),
                          got=", ".join(f"{k} {v.dtype} {list(v.shape)}"
                                        for k, v in feeds.items())) from None
    return run


def _calls_per_sample(run: Any, warmup: int) -> int:
    """Run ``warmup`` calls (at least one) and return how many calls make a sample of about
    ``SAMPLE_SECONDS``, judged by the fastest of them."""
    fastest = math.inf
    for _ in range(max(warmup, 1)):
        start = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - start)
    return int(min(MAX_CALLS_PER_SAMPLE, max(1, math.ceil(SAMPLE_SECONDS / max(fastest, 1e-9)))))


def measure(models: Sequence[bytes | onnx.ModelProto | Graph], feeds: Mapping[str, Any], *,
            names: Sequence[str] | None = None, threads: int = 1, rounds: int = 21,
            warmup: int = 3) -> list[Timing]:
    """Time each model on ``feeds`` with onnxruntime (CPU) in interleaved rounds; return one
    ``Timing`` per model, in order, with ratios to the first model.

    Sessions come from ``graphc.onnxio.runtime.session``: ``threads`` intra-op threads, one
    inter-op thread, sequential execution and all graph optimizations (onnxruntime's defaults
    for both). After ``warmup`` calls per
    model, round r runs every model once, in an order rotated by r so that none always goes
    first (the one after a long model finds cold caches). One sample is the mean of enough
    calls to take about ``SAMPLE_SECONDS``.

    The ratio of a model is the median over rounds of (its time / the first model's time in
    the same round). Both times of a round see the same machine state, so a slow stretch
    (another process, a frequency change) cancels out of the ratio; the median then drops the
    rounds where it hit one model only. This is more robust than the ratio of the two medians,
    which mixes times from different moments. Names label the models in errors and in the
    result (default ``model 0``, ``model 1``, ...).

    >>> from graphc.models import backprop_example
    >>> from graphc.onnxio.export import to_bytes
    >>> model = to_bytes(backprop_example.build())
    >>> feeds = {"x": np.float32(-2), "y": np.float32(5), "z": np.float32(-4)}
    >>> first, again = measure([model, model], feeds, rounds=3)
    >>> first.ratio, first.median > 0, 0.2 < again.ratio < 5
    (1.0, True, True)
    """
    names = list(names) if names is not None else [f"model {i}" for i in range(len(models))]
    if not models:
        raise UsageError("nothing to measure", expected="at least one model", got="none")
    if len(names) != len(models):
        raise UsageError("one name per model", expected=len(models), got=len(names))
    for option, value, least in (("threads", threads, 1), ("rounds", rounds, 1),
                                 ("warmup", warmup, 0)):
        if not isinstance(value, int) or value < least:
            raise UsageError(f"{option} must be an integer >= {least}", got=value)
    arrays = {k: np.asarray(v) for k, v in feeds.items()}
    runs = [_runner(m, n, threads, arrays) for m, n in zip(models, names, strict=True)]
    calls = [_calls_per_sample(run, warmup) for run in runs]
    samples = np.empty((rounds, len(runs)))
    # A garbage collection inside a sample would charge one model for Python's pause.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for k in range(len(runs)):
                i = (r + k) % len(runs)
                run, n = runs[i], calls[i]
                start = time.perf_counter_ns()
                for _ in range(n):
                    run()
                samples[r, i] = (time.perf_counter_ns() - start) * 1e-9 / n
    finally:
        if collecting:
            gc.enable()
    ratios = samples / samples[:, :1]
    result = []
    for i, name in enumerate(names):
        low, mid, high = np.percentile(samples[:, i], [25, 50, 75])
        r_low, r_mid, r_high = np.percentile(ratios[:, i], [25, 50, 75])
        result.append(Timing(name, float(mid), float(low), float(high), float(r_mid),
                             float(r_low), float(r_high), calls[i], rounds))
    return result


# ----- what onnxruntime runs ----------------------------------------------------------------


def executed_ops(model_bytes: bytes, feeds: Mapping[str, Any], threads: int = 1
                 ) -> list[tuple[str, str]]:
    """Return (node name, op type) of each kernel onnxruntime runs on ``feeds``, in order of
    first run, each once: the graph after onnxruntime's optimizations, read from its profile.

    Fused nodes carry onnxruntime's names (``conv_token_1`` for a QLinearConv made from
    ``conv``) and op types (``QGemm``, ``QLinearConv``, ``FusedConv``). The profile is written
    to a temporary folder and deleted.

    >>> from graphc.models import backprop_example
    >>> from graphc.onnxio.export import to_bytes
    >>> model = to_bytes(backprop_example.build())
    >>> executed_ops(model, {"x": np.float32(-2), "y": np.float32(5), "z": np.float32(-4)})
    [('add', 'Add'), ('f', 'Mul')]
    """
    arrays = {k: np.asarray(v) for k, v in feeds.items()}
    with tempfile.TemporaryDirectory(prefix="graphc-profile-") as folder:
        # An absolute prefix: onnxruntime writes a relative one into the current folder.
        sess = session(model_bytes, threads=threads,
                       profile=os.path.join(os.path.abspath(folder), "onnxruntime"))
        sess.run(None, arrays)
        path = sess.end_profiling()
        with open(path, encoding="utf-8") as f:
            events = json.load(f)
        os.remove(path)
    found: list[tuple[str, str]] = []
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = (name[:-len("_kernel_time")], event.get("args", {}).get("op_name", ""))
            if node not in found:
                found.append(node)
    return found


def runtime_weight_dequantize(model_bytes: bytes, feeds: Mapping[str, Any]) -> list[str]:
    """Return the names of the DequantizeLinear nodes on weights that run at run time.

    A weight is an initializer or a Constant's output. onnxruntime never constant-folds a
    weight DequantizeLinear: either it fuses it into an int8 kernel (QGemm, QLinearConv, ...),
    or the weights are dequantized on every call, which makes an int8 model slower than fp32
    (a float Conv on a DequantizeLinear weight without an output QuantizeLinear, for one).
    Copies onnxruntime makes (``W_dq/duplicated``) count as the node they copy; an unnamed
    node is reported as ``DequantizeLinear(<its weight>)``. An empty list is the good answer.
    """
    model = onnx.load_model_from_string(model_bytes)
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    weights |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    taken = {node.name for node in graph.node}
    dequantize: set[str] = set()
    renamed = False
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not node.input or node.input[0] not in weights:
            continue
        if not node.name:
            # onnxruntime would call it "DequantizeLinear_0": give it a name that says which.
            name, k = f"DequantizeLinear({node.input[0]})", 1
            while name in taken:
                name, k = f"DequantizeLinear({node.input[0]}) {k}", k + 1
            node.name = name
            taken.add(name)
            renamed = True
        dequantize.add(node.name)
    if not dequantize:
        return []
    data = model.SerializeToString() if renamed else model_bytes
    found: list[str] = []
    for name, op in executed_ops(data, feeds):
        if op != "DequantizeLinear":
            continue
        original = name if name in dequantize else _RENAMED.sub("", name)
        if original in dequantize and original not in found:
            found.append(original)
    return found
