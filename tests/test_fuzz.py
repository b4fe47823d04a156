"""Properties of random well-typed graphs (graphc.fuzz): interpreter == onnxruntime on the
exported file, export -> import -> export byte-identical, passes and the inference pipeline
preserve outputs, a pass applied twice changes nothing the second time.

A few graphs per property in the normal run; ``pytest --fuzz tests/test_fuzz.py`` runs 10,000
per property (docs/conformance.md, "Random-graph fuzzing"). A graph graphc refuses with a
``GraphcError`` passes and is counted (``--hypothesis-show-statistics``); any other exception
fails. A failure found here becomes a named test in tests/test_fuzz_regressions.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import event, given

from graphc.errors import GraphcError
from graphc.fuzz import Case, cases, comparison_scales
from graphc.fuzz_ops import COVERED, LEFT_OUT
from graphc.interpret import run
from graphc.ir import Graph
from graphc.onnxio.export import check, to_bytes, to_onnx
from graphc.onnxio.importer import from_onnx
from graphc.onnxio.runtime import compare_outputs, run_onnxruntime
from graphc.pipeline import registry, resolve, run_pipeline

# The passes that must keep every output, with their options and the tolerance of their
# comparison on the interpreter (0: bit for bit) and on onnxruntime (None: the dtype's default,
# graphc.onnxio.runtime). fold-batchnorm changes the rounding of the folded weights; on
# onnxruntime, a folded constant is the interpreter's result instead of onnxruntime's.
PRESERVING: dict[str, tuple[dict[str, Any], float | None, float | None]] = {
    "remove-dropout": ({}, 0.0, 0.0),
    "fold-batchnorm": ({}, None, None),
    "fold-constants": ({}, 0.0, None),
    "remove-identity": ({}, 0.0, 0.0),
    "eliminate-dead-code": ({}, 0.0, 0.0),
    "prune-magnitude": ({}, 0.0, 0.0),
    "binarize": ({"prefer": "weights"}, 0.0, None),
}
# Ops the importer evaluates to constants (their values follow from the static shapes).
FOLDED_AT_IMPORT = {"Shape", "Size"}
# The passes that change outputs on purpose (lossy, or needing data the graph does not carry),
# and why they are not in PRESERVING.
CHANGING = {
    "quantize-int8": "rounds to int8 grids calibrated on data; its error is checked per layer "
                     "against max_error by the pass itself (tests/test_quantize_int8.py)",
    "prune-channels": "removes channels, which changes the outputs by their contribution",
    "substitute-student": "replaces the graph by a trained student, gated on accuracy",
}


def refused(err: GraphcError, stage: str) -> None:
    """Count a clear refusal: a GraphcError with graphc's message format."""
    assert str(err) and "Traceback" not in str(err)
    event(f"refused at {stage}: {type(err).__name__}")


def note_ops(case: Case) -> None:
    for op in sorted(set(case.ops)):
        event(f"op {op}")


def assert_same(want: dict[str, np.ndarray], got: dict[str, np.ndarray], tolerance: float | None,
                what: str, case: Case, after: Graph | None = None) -> None:
    result = compare_outputs(want, got, tolerance, comparison_scales(case))
    assert list(got) == list(want), (what, list(want), list(got))
    for name in want:
        assert got[name].dtype == want[name].dtype, (what, name)
    shown = f"\nafter:\n{after}" if after is not None else ""
    assert result.ok, f"{what}: {result}\n{case!r}{shown}"


@given(cases())
def test_interpreter_matches_onnxruntime(case: Case) -> None:
    note_ops(case)
    try:
        model = to_onnx(case.graph, case.opset)
    except GraphcError as err:
        refused(err, "export")
        return
    check(model)
    assert_same(run(case.graph, case.feeds), run_onnxruntime(model, case.feeds), None,
                "interpreter vs onnxruntime", case)


@given(cases())
def test_export_import_export_is_byte_identical(case: Case) -> None:
    note_ops(case)
    try:
        first = to_bytes(case.graph, case.opset)
    except GraphcError as err:
        refused(err, "export")
        return
    again = from_onnx(first)
    assert again.inputs == case.graph.inputs
    assert again.output_names() == case.graph.output_names()
    second = to_bytes(again, case.opset)
    if FOLDED_AT_IMPORT & {case.graph.op(n) for n in case.graph.op_nodes()}:
        # The import evaluated them (graphc's shapes are static): from then on, the same bytes.
        assert_same(run(case.graph, case.feeds), run(again, case.feeds), 0.0,
                    "import folding Shape and Size", case, again)
        first, second = second, to_bytes(from_onnx(second), case.opset)
    assert second == first, f"{case!r}\nimported:\n{again}"


def _apply(name: str, g: Graph) -> Graph | None:
    options = PRESERVING[name][0]
    try:
        new = registry()[name](g, **options)
    except GraphcError as err:
        refused(err, name)
        return None
    new.verify()
    return new


def _both_runtimes(case: Case, before: Graph, after: Graph, exact: float | None,
                   tolerance: float | None, what: str) -> None:
    assert_same(run(before, case.feeds), run(after, case.feeds), exact,
                f"{what} on the interpreter", case, after)
    try:
        want = run_onnxruntime(to_onnx(before, case.opset), case.feeds)
        got = run_onnxruntime(to_onnx(after, case.opset), case.feeds)
    except GraphcError as err:
        refused(err, f"export after {what}")
        return
    assert_same(want, got, tolerance, f"{what} on onnxruntime", case, after)


@given(cases())
def test_passes_preserve_outputs(case: Case) -> None:
    note_ops(case)
    for name, (_, exact, tolerance) in PRESERVING.items():
        after = _apply(name, case.graph)
        if after is not None:
            _both_runtimes(case, case.graph, after, exact, tolerance, name)


@given(cases())
def test_inference_pipeline_preserves_outputs(case: Case) -> None:
    note_ops(case)
    try:
        after, _ = run_pipeline(case.graph, resolve(pipeline="inference"))
    except GraphcError as err:
        refused(err, "inference")
        return
    _both_runtimes(case, case.graph, after, None, None, "inference pipeline")


@given(cases())
def test_a_pass_applied_twice_changes_nothing_the_second_time(case: Case) -> None:
    note_ops(case)
    for name in PRESERVING:
        once = _apply(name, case.graph)
        if once is None:
            continue
        twice = _apply(name, once)
        assert twice is not None, name
        assert twice.format() == once.format(), f"{name}\nonce:\n{once}\ntwice:\n{twice}"
        try:
            file = to_bytes(once, case.opset)
        except GraphcError as err:
            refused(err, f"export after {name}")
            continue
        assert to_bytes(twice, case.opset) == file, name


def test_every_op_is_generated_or_left_out_with_a_reason() -> None:
    from graphc import ops

    assert sorted(set(ops.REGISTRY) - set(COVERED) - set(LEFT_OUT)) == []
    assert not set(COVERED) & set(LEFT_OUT)
    assert all(reason.strip() for reason in LEFT_OUT.values())


def test_every_pass_is_checked_or_named_with_a_reason() -> None:
    assert sorted(set(registry()) - set(PRESERVING) - set(CHANGING)) == []
