"""The `inference` pipeline over the whole zoo, and the CLI's compile/passes commands with it."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from graphc.cli import main
from graphc.interpret import run
from graphc.ir import Graph
from graphc.models import MODELS, load
from graphc.onnxio.runtime import run_onnxruntime
from graphc.pipeline import resolve, run_pipeline

PASS_NAMES = ["remove-dropout", "fold-batchnorm", "fold-constants", "remove-identity",
              "eliminate-dead-code"]


def ops_of(g: Graph) -> list[str]:
    return [g.op(n) for n in g.op_nodes()]


def assert_close(want: dict[str, np.ndarray], got: dict[str, np.ndarray], what: str) -> None:
    assert list(got) == list(want), what
    for name, w in want.items():
        g = got[name]
        assert g.shape == w.shape and g.dtype == w.dtype, (what, name)
        scale = float(np.max(np.abs(w)))
        diff = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64))))
        assert diff <= 1e-5 * scale, (what, name, diff, scale)


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_through_the_inference_pipeline(name):
    module = load(name)
    before = module.build()
    feeds = module.example_inputs()
    after, reports = run_pipeline(before, resolve(pipeline="inference"))
    after.verify()
    assert [r.name for r in reports] == PASS_NAMES

    ops = ops_of(after)
    assert "Dropout" not in ops
    if name == "residual":
        # The conv feeding both bn1 and the skip Add: refused, and only that one.
        assert ops.count("BatchNormalization") == 1 and after.op("bn1") == "BatchNormalization"
        (bn_report,) = [r for r in reports if r.name == "fold-batchnorm"]
        assert [w.split(" =")[0] for w, _ in bn_report.refusals] == ["%bn1"]
    else:
        assert "BatchNormalization" not in ops
    if "BatchNormalization" in ops_of(before) or "Dropout" in ops_of(before):
        assert len(ops) < len(ops_of(before))

    assert after.output_names() == before.output_names()
    assert after.inputs == before.inputs
    assert after.num_params() <= before.num_params()

    assert_close(run(before, feeds), run(after, feeds), "interpreter")
    onnx_before = run_onnxruntime(before, feeds)
    onnx_after = run_onnxruntime(after, feeds)
    assert list(onnx_after) == before.output_names()
    assert_close(onnx_before, onnx_after, "onnxruntime")
    assert_close(run(before, feeds), onnx_after, "compiled on onnxruntime vs interpreter")


# ----- the CLI ----------------------------------------------------------------------------------


def test_cli_compile_residual_inference_verify_verbose(tmp_path, capsys):
    path = tmp_path / "r.onnx"
    assert main(["compile", "residual", "--pipeline", "inference", "-o", str(path),
                 "--verify", "-v"]) == 0
    out = capsys.readouterr().out
    refused = [line for line in out.splitlines() if "refused" in line]
    assert len(refused) == 1, out
    assert "%bn1" in refused[0]
    assert "%conv1 is also used by %add" in refused[0]
    for name in PASS_NAMES:
        assert re.search(rf"^\s+{name}\s+nodes \d+ -> \d+", out, re.M), (name, out)
    found = re.search(r"max abs diff (\S+) \(.*output scale (\S+)\)", out)
    assert found, out
    diff, scale = float(found.group(1)), float(found.group(2))
    assert diff <= 1e-5
    # The printed numbers are the real ones: recompute them from the written file.
    module = load("residual")
    feeds = module.example_inputs()
    want = run(module.build(), feeds)["logits"]
    got = run_onnxruntime(path.read_bytes(), feeds)["logits"]
    assert float(np.max(np.abs(got - want))) == pytest.approx(diff, rel=0.01, abs=1e-9)
    assert float(np.max(np.abs(want))) == pytest.approx(scale, rel=0.01)
    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node].count("BatchNormalization") == 1
    assert [o.name for o in model.graph.output] == ["logits"]


def test_cli_explain_prints_the_formula_and_the_nodes(tmp_path, capsys):
    assert main(["compile", "cnn", "--passes", "fold-batchnorm", "--explain",
                 "-o", str(tmp_path / "c.onnx")]) == 0
    out = capsys.readouterr().out
    assert "W' = W * gamma / sqrt(var + eps)" in out
    assert out.count("fold-into-conv:") == 3
    before = [line.strip() for line in out.splitlines() if line.strip().startswith("before ")]
    after = [line.strip() for line in out.splitlines() if line.strip().startswith("after ")]
    assert any(line.startswith("before  %block1.bn = BatchNormalization(%block1.conv")
               for line in before), out
    assert any(line.startswith("after   %block1.conv = Conv(%x, %block1.conv.weight, "
                               "%block1.conv.bias)") for line in after), out
    assert not any("BatchNormalization" in line for line in after)


def test_cli_passes_lists_every_pass_and_the_pipeline(capsys):
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in PASS_NAMES:
        (line,) = [ln for ln in lines if ln.split() and ln.split()[0] == name]
        assert len(line.split(maxsplit=1)) == 2, line  # with its one-line summary
    assert "pipeline inference: " + ", ".join(PASS_NAMES) in out


@pytest.mark.parametrize("option, value, close", [("--passes", "fold-batchnrom", "fold-batchnorm"),
                                                  ("--pipeline", "inferenc", "inference")])
def test_cli_unknown_pass_or_pipeline_exits_2(tmp_path, capsys, option, value, close):
    path = tmp_path / "x.onnx"
    assert main(["compile", "cnn", option, value, "-o", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphc: error: ") and len(err.splitlines()) == 1, err
    assert f"Did you mean '{close}'?" in err
    assert not path.exists()
