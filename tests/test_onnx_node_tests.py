"""ONNX's own backend node tests, run on graphc through ``graphc.backend``.

The installed onnx generates its node test cases (``collect_testcases``). Every case whose one
node is an op of graphc's op set (``graphc ops``) is selected, run through the backend, and
compared as ONNX's test runner compares: the same number of outputs, and for each its dtype, its
shape and its values within ``assert_allclose(rtol=1e-3, atol=1e-7)`` against ONNX's expected
outputs.

A selected case is in one of four groups:

- it passes;
- ``REFUSED``: graphc does not support it on purpose; the backend must refuse it with a clear
  ``GraphcError`` (a wrong number is never an acceptable refusal);
- ``ONNXRUNTIME_VALUES``: graphc computes what onnxruntime computes, where ONNX's reference
  differs; the outputs are compared with onnxruntime's on the same model instead;
- ``PENDING``: it needs a piece of graphc that is not there yet (named in the reason); it is
  expected to fail until then, and passes the moment the piece lands (then remove it here).

Run ``python3 tests/test_onnx_node_tests.py`` to print the per-op table of docs/conformance.md.
"""

from __future__ import annotations

import functools
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphc import ops
from graphc.backend import GraphcBackend
from graphc.errors import GraphcError
from graphc.onnxio.runtime import run_onnxruntime

# ONNX's types that graphc has no numpy storage for: float8 (4 kinds and e8m0), bfloat16, the
# 4-bit and 2-bit integers, float4e2m1, strings.
MISSING_TYPES = {getattr(onnx.TensorProto, name) for name in (
    "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0",
    "UINT4", "INT4", "UINT2", "INT2", "FLOAT4E2M1", "STRING") if hasattr(onnx.TensorProto, name)}


def _types(model: onnx.ModelProto) -> set[int]:
    """Return the element types of a model's inputs, outputs and Cast targets (-1: not a tensor)."""
    types = set()
    for info in (*model.graph.input, *model.graph.output):
        kind = info.type.WhichOneof("value")
        types.add(info.type.tensor_type.elem_type if kind == "tensor_type" else -1)
    for node in model.graph.node:
        types |= {a.i for a in node.attribute if a.name in ("to", "output_dtype")}
    return types


def _attr(model: onnx.ModelProto, name: str) -> Any:
    found = [onnx.helper.get_attribute_value(a) for a in model.graph.node[0].attribute
             if a.name == name]
    return found[0] if found else None


def _named(*patterns: str) -> Callable[[str, onnx.ModelProto], bool]:
    return lambda name, model: any(re.fullmatch(p, name) for p in patterns)


# ----- the one list of cases graphc does not support on purpose ---------------------------------

REFUSED: list[tuple[str, str, Callable[[str, onnx.ModelProto], bool]]] = [
    ("types graphc does not have", "float8, bfloat16, 4-bit and 2-bit integers, float4 and "
     "strings, and values that are not tensors (sequence, optional): graphc's values are numpy "
     "arrays of the types onnxruntime's CPU kernels compute in",
     lambda name, model: bool(_types(model) & (MISSING_TYPES | {-1}))),
    ("training mode", "graphc builds training graphs itself from the inference form "
     "(graphc.train.step); an imported model is an inference graph",
     lambda name, model: name.startswith("test_training_dropout")
     or bool(_attr(model, "training_mode"))),
    ("16-bit quantization", "graphc quantizes to 8 bits, the forms onnxruntime's CPU kernels "
     "fuse (docs/quantization.md)",
     _named(r"test_(de)?quantizelinear_u?int16", r"test_quantizelinear_blocked_symmetric")),
    ("float16 quantization scales", "graphc's QLinear ops take float32 scales, as "
     "onnxruntime's CPU kernels do",
     _named(r"test_qlinearmatmul_\dD_u?int8_float16")),
    ("per-channel ConvInteger zero point", "onnxruntime's CPU kernel takes one w_zero_point",
     _named(r"test_convinteger_with_padding")),
]

# ----- cases waiting for pieces of graphc that are not there yet -------------------------------

# Empty: every selected case that is not refused on purpose runs.
PENDING: list[tuple[str, str, Callable[[str, onnx.ModelProto], bool]]] = []

# ----- cases where graphc computes onnxruntime's numbers and ONNX's reference differs ----------

ONNXRUNTIME_VALUES: list[tuple[str, str, Callable[[str, onnx.ModelProto], bool]]] = [
    ("onnxruntime's Resize align_corners", "at a scale that does not give a whole output size, "
     "onnxruntime (and graphc) divide by the output size, ONNX's reference by input size * "
     "scale (docs/ops.md)",
     _named(r"test_resize_downsample_scales_(linear|cubic)_align_corners")),
]


@functools.cache
def selected() -> list[Any]:
    """Return ONNX's node test cases whose single node is an op of graphc's op set."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        cases = collect_testcases()
    names = set(ops.REGISTRY)
    return [c for c in cases if len(c.model.graph.node) == 1
            and c.model.graph.node[0].op_type in names
            and c.model.graph.node[0].domain in ("", "ai.onnx")]


def group(case: Any) -> tuple[str, str, str]:
    """Return ("refused" | "pending" | "onnxruntime" | "run", label, reason) for a case."""
    for kind, table in (("refused", REFUSED), ("pending", PENDING),
                        ("onnxruntime", ONNXRUNTIME_VALUES)):
        for label, reason, matches in table:
            if matches(case.name, case.model):
                return kind, label, reason
    return "run", "", ""


def _array(value: Any) -> np.ndarray:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else \
        np.asarray(value)


def run_case(case: Any, onnxruntime: bool = False) -> None:
    """Run a case on the backend and compare as ONNX's runner does (raises on a difference),
    with ONNX's expected outputs or, with ``onnxruntime``, onnxruntime's on the case's model."""
    inputs, expected = case.data_sets[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ONNX's cases divide by zero and overflow on purpose
        rep = GraphcBackend.prepare(case.model, "CPU")
        outputs = rep.run([_array(a) for a in inputs])
    if onnxruntime:
        feeds = dict(zip(rep.input_names, map(_array, inputs), strict=True))
        expected = list(run_onnxruntime(case.model, feeds).values())
    assert len(outputs) == len(expected), f"{len(outputs)} outputs, {len(expected)} expected"
    for name, got, want in zip(rep.output_names, outputs, map(_array, expected), strict=True):
        assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
        assert got.shape == want.shape, (name, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol, err_msg=name)


def outcome(case: Any) -> str:
    """Return "pass", "refused" (a GraphcError) or "wrong" (a difference) for a case."""
    try:
        run_case(case)
    except GraphcError:
        return "refused"
    except AssertionError:
        return "wrong"
    return "pass"


CASES = [pytest.param(case, id=case.name) for case in selected()]


@pytest.mark.parametrize("case", CASES)
def test_node_case(case: Any) -> None:
    kind, label, reason = group(case)
    if kind == "run":
        run_case(case)
    elif kind == "refused":
        try:
            run_case(case)
        except GraphcError:
            return
        pytest.fail(f"{case.name} runs now: take it off REFUSED ({label})")
    elif kind == "onnxruntime":
        run_case(case, onnxruntime=True)
        try:
            run_case(case)
        except AssertionError:
            return
        pytest.fail(f"{case.name} gives ONNX's outputs now: take it off ONNXRUNTIME_VALUES")
    else:
        try:
            run_case(case)
        except (GraphcError, AssertionError) as err:
            pytest.xfail(f"{label} ({reason}): {str(err).splitlines()[0][:200]}")
        pytest.fail(f"{case.name} runs now: take it off PENDING ({label})")


def test_selection_covers_the_op_set_s_onnx_ops() -> None:
    ops_with_cases = {c.model.graph.node[0].op_type for c in selected()}
    # Ops every graphc version has, with cases in every onnx that has collect_testcases.
    assert {"Conv", "Gemm", "Relu", "Reshape", "LayerNormalization", "Pad"} <= ops_with_cases
    assert len(selected()) > 400


@pytest.mark.parametrize(("table", "label"), [(REFUSED, "refused"), (PENDING, "pending"),
                                              (ONNXRUNTIME_VALUES, "onnxruntime")])
def test_every_listed_reason_matches_a_selected_case(table: list, label: str) -> None:
    for name, _, matches in table:
        assert any(matches(c.name, c.model) for c in selected()), (label, name)


def table() -> str:
    """Return the per-op Markdown table: cases selected, passing, refused with the reason."""
    rows: dict[str, dict[str, Any]] = {}
    for case in selected():
        op = case.model.graph.node[0].op_type
        row = rows.setdefault(op, {"selected": 0, "pass": 0, "reasons": {}})
        row["selected"] += 1
        result = outcome(case)
        row["pass"] += result == "pass"
        if result != "pass":
            kind, label, _ = group(case)
            label = label if kind != "run" else f"FAILS ({result})"
            row["reasons"][label] = row["reasons"].get(label, 0) + 1
    lines = ["| op | selected | passing | not passing: why |", "|---|---:|---:|---|"]
    total = [0, 0]
    for op in sorted(rows):
        row = rows[op]
        total[0] += row["selected"]
        total[1] += row["pass"]
        why = "; ".join(f"{n} {label}" for label, n in sorted(row["reasons"].items()))
        lines.append(f"| {op} | {row['selected']} | {row['pass']} | {why} |")
    lines.append(f"| **all** | **{total[0]}** | **{total[1]}** | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")
