"""Quantization-aware training: the fake-quantized graph simulates quantize-int8 exactly,
reads back into grids, trains from the CLI with fixed grids, and compiles to the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.cli import main
from graphc.compress.calibrate import activation_grid, weight_scales
from graphc.compress.int8 import build, find_layers, grid_source, needed_values
from graphc.compress.qat import fake_quant_grids, prepare, qat_graph
from graphc.interpret import run
from graphc.ir import Value
from graphc.models import load
from graphc.passes.fold_constants import fold_constants
from graphc.pipeline import run_pipeline
from graphc.train.checkpoint import load_checkpoint


def folded_cnn():
    g, _ = run_pipeline(load("cnn").build(), ["remove-dropout", "fold-batchnorm"])
    return g


def batches(g, n: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = g.type_of(Value(g.inputs[0])).shape
    return [{"x": rng.uniform(0, 1, shape).astype(np.float32)} for _ in range(n)]


def test_fake_quant_is_the_qdq_model_quantize_int8_writes():
    g = folded_cnn()
    data = batches(g)
    qat, record = prepare(g, data, qmax=63)
    ops = [qat.op(n) for n in qat.op_nodes()]
    # The inputs x, pool2 and flatten1 (block2 reads block1's ReLU output, already fake
    # quantized), the three ReLU outputs, the four weights.
    assert ops.count("FakeQuantizeLinear") == 3 + 3 + 4
    assert set(record["zero_points"]) == {qat.value_name(v)
                                          for v in needed_values(g, find_layers(g))}
    # The same grids and weight scales in quantize-int8's QDQ form compute the same numbers,
    # except where the int8 weight rounds a value the fake quantization keeps in float32:
    # FakeQuantizeLinear(W) = s * round(W / s) exactly as DequantizeLinear(int8) gives it.
    _, grids, scales = fake_quant_grids(qat)
    int8 = build(g, find_layers(g), grids, qmax=63)
    axes = {layer.node: layer.weight_axis for layer in find_layers(g)}
    assert sorted(scales) == sorted(axes)
    for node, s in scales.items():
        w = g.const_value(g.in_values(node)[1])
        np.testing.assert_array_equal(s, weight_scales(w, axes[node], 63))
    for feeds in batches(g, 2, seed=1):
        want, got = run(qat, feeds)["logits"], run(int8, feeds)["logits"]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_grids_read_back_and_rebuild_from_the_record():
    g = folded_cnn()
    qat, record = prepare(g, batches(g), qmax=127)
    plain, grids, scales = fake_quant_grids(qat)
    assert [plain.op(n) for n in plain.op_nodes()] == [g.op(n) for n in g.op_nodes()]
    points = {v: None for v in needed_values(g, find_layers(g))}
    for v, grid in grids.items():
        # pool2 and flatten1 share their input's grid (MaxPool and Flatten keep the grid).
        source = plain.value_name(grid_source(plain, v, points))
        assert grid.zero_point == record["zero_points"][source]
    # Rebuilt from the record (scales 1 until a checkpoint's state fills them): same structure.
    again = qat_graph(g, record)
    assert sorted(again.nx.nodes) == sorted(qat.nx.nodes)
    zero = [again.const_value(again.in_values(n)[2]) for n in again.op_nodes()
            if again.op(n) == "FakeQuantizeLinear"]
    assert [int(z) for z in zero if z.ndim == 0] == [int(qat.const_value(qat.in_values(n)[2]))
                                                     for n in qat.op_nodes()
                                                     if qat.op(n) == "FakeQuantizeLinear"
                                                     and qat.const_value(
                                                         qat.in_values(n)[2]).ndim == 0]


def test_grid_of_a_relu_output_starts_at_zero():
    g = folded_cnn()
    _, record = prepare(g, batches(g))
    assert record["zero_points"]["block1.relu"] == 0
    assert activation_grid(0.0, 2.0).zero_point == 0


def test_fold_constants_keeps_quantized_weights():
    g = folded_cnn()
    qat, _ = prepare(g, batches(g))
    folded = fold_constants(qat)
    assert [folded.op(n) for n in folded.op_nodes()] == [qat.op(n) for n in qat.op_nodes()]


def test_qat_from_the_cli_trains_with_fixed_grids_and_compiles(tmp_path, capsys):
    base, qat = tmp_path / "mlp.ckpt", tmp_path / "mlp.qat.ckpt"
    assert main(["train", "mlp", "--data", "digits", "--epochs", "2", "--threads", "1",
                 "-o", str(base)]) == 0
    assert main(["train", "mlp", "--data", "digits", "--epochs", "1", "--threads", "1",
                 "--init", str(base), "--qat", "--lr", "0.01", "-o", str(qat)]) == 0
    out = capsys.readouterr().out
    assert "qat            3 activation grids" in out  # the inputs of the three Gemms
    ck = load_checkpoint(qat)
    assert ck.data["qat"]["zero_points"]
    # The grids are fixed, not trained: the scales are constants kept in the record, 3 of
    # activations and 3 of Gemm weights (per channel), nothing is frozen by name.
    scales = ck.data["qat"]["scales"]
    assert len(scales) == 3 + 3
    assert not any(k.endswith(".scale") for k in ck.state) and ck.config.freeze == ()
    recorded = ck.history[-1].test_accuracy
    assert main(["compile", "mlp", "--weights", str(qat), "--pipeline", "inference",
                 "--accuracy", "digits", "-o", str(tmp_path / "q.onnx")]) == 0
    out = capsys.readouterr().out
    assert "quantization-aware" in out
    assert f"{100 * recorded:.2f}% recorded in the checkpoint" in out
    assert "(the same)" in out


@pytest.mark.parametrize("flag", ["--qat"])
def test_resume_refuses_qat_flag(tmp_path, capsys, flag):
    ck = tmp_path / "m.ckpt"
    assert main(["train", "mlp", "--data", "digits", "--epochs", "1", "-o", str(ck)]) == 0
    capsys.readouterr()
    assert main(["train", "mlp", "--resume", str(ck), flag]) == 2
    assert "--qat cannot be given with --resume" in capsys.readouterr().err


def test_quantize_int8_writes_what_qat_simulated():
    from graphc.passes.quantize_int8 import quantize_int8
    from graphc.rewrite import PassReport

    g = folded_cnn()
    qat, _ = prepare(g, batches(g), qmax=63)
    report = PassReport("quantize-int8")
    int8 = quantize_int8(qat, prefer="size", report=report)  # no calibration: the grids are set
    assert not [n for n in int8.op_nodes() if int8.op(n) == "FakeQuantizeLinear"]
    assert "quantized    4 of 4 layers" in report.notes
    for feeds in batches(g, 3, seed=7):
        want, got = run(qat, feeds)["logits"], run(int8, feeds)["logits"]
        # Only the bias can differ (float in training, int32 on the s_x * s_w grid in the
        # file, half a step of ~1e-5 at most); on these inputs no rounding flips because of it.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_qat_options_that_do_not_fit_are_refused():
    from graphc.errors import UsageError
    from graphc.passes.quantize_int8 import quantize_int8

    g = folded_cnn()
    qat, _ = prepare(g, batches(g))
    with pytest.raises(UsageError, match="--per-tensor does not apply"):
        quantize_int8(qat, prefer="size", per_channel=False)
    with pytest.raises(UsageError, match="unknown layer 'block9.conv'.*block1.conv"):
        quantize_int8(g, calibration=np.zeros((2, 1, 8, 8), np.float32),
                      fp32_layers=["block9.conv"])
