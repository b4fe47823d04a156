"""graphc.compress.latency (the CPU, interleaved timings, what onnxruntime runs) and the
`graphc bench` command. Timings are checked for structure and sanity, never against a clock."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphc import testing
from graphc.cli import main
from graphc.cli.bench import answer
from graphc.compress.latency import (
    INT8_FLAGS,
    CpuInfo,
    Timing,
    cpu_info,
    executed_ops,
    measure,
    runtime_weight_dequantize,
)
from graphc.errors import GraphcError, UsageError

K, N = 64, 32
RNG = np.random.default_rng(0)


def init(name: str, array: object) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def make_model(nodes: list[onnx.NodeProto], x: onnx.ValueInfoProto,
               weights: list[onnx.TensorProto]) -> bytes:
    graph = helper.make_graph(nodes, "m", [x], [helper.make_tensor_value_info(
        "Y", TensorProto.FLOAT, None)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def fc_input(batch: int | str = "N", width: int = K,
             elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("X", elem, [batch, width])


def fp32_gemm(batch: int | str = "N", width: int = K) -> bytes:
    return make_model([helper.make_node("Gemm", ["X", "W", "B"], ["Y"], name="fc", transB=1)],
                      fc_input(batch, width),
                      [init("W", RNG.standard_normal((N, width)).astype(np.float32)),
                       init("B", RNG.standard_normal(N).astype(np.float32))])


def qdq_gemm() -> bytes:
    """The form onnxruntime fuses: uint8 activations, int8 weights per output channel and the
    bias as DequantizeLinear(int32, scale = s_x * s_w): it runs QuantizeLinear and QGemm."""
    s_x, s_w = np.float32(0.05), np.full(N, 0.01, np.float32)
    return make_model([
        helper.make_node("QuantizeLinear", ["X", "s_x", "z_x"], ["X_q"], name="x_q"),
        helper.make_node("DequantizeLinear", ["X_q", "s_x", "z_x"], ["X_dq"], name="x_dq"),
        helper.make_node("DequantizeLinear", ["W_q", "s_w", "z_w"], ["W"], name="W_dq", axis=0),
        helper.make_node("DequantizeLinear", ["B_q", "s_b", "z_b"], ["B"], name="B_dq", axis=0),
        helper.make_node("Gemm", ["X_dq", "W", "B"], ["Y"], name="fc", transB=1)],
        fc_input(),
        [init("s_x", s_x), init("z_x", np.uint8(128)),
         init("W_q", RNG.integers(-63, 64, (N, K)).astype(np.int8)), init("s_w", s_w),
         init("z_w", np.zeros(N, np.int8)),
         init("B_q", RNG.integers(-1000, 1000, N).astype(np.int32)),
         init("s_b", (s_x * s_w).astype(np.float32)), init("z_b", np.zeros(N, np.int32))])


def trap_conv(dq_name: str = "W_dq", users: int = 1) -> bytes:
    """The trap: a float Conv on DequantizeLinear(int8 W) without an output QuantizeLinear;
    onnxruntime dequantizes the weight on every call."""
    nodes = [helper.make_node("DequantizeLinear", ["W_q", "s_w", "z_w"], ["W"], name=dq_name,
                              axis=0)]
    nodes += [helper.make_node("Conv", ["X", "W"], [f"Y{k}" if users > 1 else "Y"],
                               name=f"conv{k}", pads=[1, 1, 1, 1]) for k in range(users)]
    if users > 1:
        nodes.append(helper.make_node("Sum", [f"Y{k}" for k in range(users)], ["Y"], name="sum"))
    return make_model(nodes, helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                           ["N", 8, 8, 8]),
                      [init("W_q", RNG.integers(-63, 64, (8, 8, 3, 3)).astype(np.int8)),
                       init("s_w", np.full(8, 0.01, np.float32)),
                       init("z_w", np.zeros(8, np.int8))])


FC_FEEDS = {"X": RNG.standard_normal((1, K)).astype(np.float32)}
CONV_FEEDS = {"X": RNG.standard_normal((1, 8, 8, 8)).astype(np.float32)}


# ----- cpu_info -----------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="no /proc/cpuinfo")
def test_cpu_info_reads_proc_cpuinfo():
    # Read the file independently: the first "model name" and "flags" lines.
    text = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    info = cpu_info()
    assert info.model
    if model:
        assert info.model == " ".join(model[1].split())
    present = set(flags[1].split()) if flags else set()
    assert info.flags == tuple(f for f in INT8_FLAGS if f in present)
    if "avx2" in present:
        assert "avx2" in info.flags
    assert info.vnni == bool(present & {"avx512_vnni", "avx_vnni"})
    assert info.describe().startswith(info.model + " (")


def test_describe_says_what_the_flags_mean_for_int8():
    epyc = CpuInfo("AMD EPYC", ("avx2",))
    assert epyc.describe() == ("AMD EPYC (avx2; no avx512_vnni, avx_vnni, amx_int8: int8 "
                               "convolutions do not pay here)")
    xeon = CpuInfo("Intel Xeon", ("avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_int8"))
    assert xeon.vnni and not epyc.vnni
    assert xeon.describe().endswith("avx512_vnni, amx_int8: int8 convolutions can pay here)")
    arm = CpuInfo("aarch64", ())
    assert not arm.vnni and "not measured" in arm.describe()


# ----- measure ------------------------------------------------------------------------------


def test_measure_interleaved_ratios():
    fp32, int8 = fp32_gemm(), qdq_gemm()
    timings = measure([fp32, int8, fp32], FC_FEEDS, rounds=3, warmup=1)
    assert [t.name for t in timings] == ["model 0", "model 1", "model 2"]
    for t in timings:
        assert 0 < t.low <= t.median <= t.high
        assert t.ratio_low <= t.ratio <= t.ratio_high
        assert t.rounds == 3 and t.calls >= 1
    assert timings[0].ratio == timings[0].ratio_low == timings[0].ratio_high == 1.0
    # The same model twice: the same time within a generous factor (a noise check, no clock).
    assert 0.2 < timings[2].ratio < 5
    assert 0.2 < timings[1].ratio < 5


def test_measure_refuses_bad_options_and_names_a_model_it_cannot_run():
    with pytest.raises(UsageError, match="rounds must be an integer >= 1"):
        measure([fp32_gemm()], FC_FEEDS, rounds=0)
    with pytest.raises(UsageError, match="nothing to measure"):
        measure([], FC_FEEDS)
    with pytest.raises(GraphcError, match="onnxruntime cannot run narrow.onnx on the inputs"):
        measure([fp32_gemm(), fp32_gemm(width=K // 2)], FC_FEEDS, names=["a", "narrow.onnx"],
                rounds=1)
    with pytest.raises(GraphcError, match="onnxruntime cannot load broken"):
        measure([b"not a model"], FC_FEEDS, names=["broken"])


# ----- executed_ops, runtime_weight_dequantize ----------------------------------------------


def test_fused_qdq_gemm_runs_no_weight_dequantize(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = executed_ops(qdq_gemm(), FC_FEEDS)
    assert {op for _, op in ran} == {"QuantizeLinear", "QGemm"}, ran
    assert len(ran) == len(set(ran))
    assert runtime_weight_dequantize(qdq_gemm(), FC_FEEDS) == []
    assert list(tmp_path.iterdir()) == []  # no profile left behind in the current folder


def test_trap_conv_dequantizes_its_weight_at_run_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = trap_conv()
    assert ("W_dq", "DequantizeLinear") in executed_ops(model, CONV_FEEDS)
    assert runtime_weight_dequantize(model, CONV_FEEDS) == ["W_dq"]
    assert list(tmp_path.iterdir()) == []


def test_runtime_weight_dequantize_sees_copies_and_unnamed_nodes():
    # A DequantizeLinear with two users is copied by onnxruntime ("W_dq/duplicated"); the copy
    # counts as the original. An unnamed one is named after its weight.
    shared = trap_conv(users=2)
    assert any(name.startswith("W_dq/duplicated") for name, _ in executed_ops(shared,
                                                                              CONV_FEEDS))
    assert runtime_weight_dequantize(shared, CONV_FEEDS) == ["W_dq"]
    assert runtime_weight_dequantize(trap_conv("", users=2), CONV_FEEDS) == [
        "DequantizeLinear(W_q)"]


# ----- graphc bench -------------------------------------------------------------------------


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], status: int) -> str:
    assert main(argv) == status
    return testing.one_error_line(capsys.readouterr().err)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_bench_two_files(tmp_path, capsys):
    a = write(tmp_path, "a.onnx", fp32_gemm())
    b = write(tmp_path, "b.onnx", qdq_gemm())
    assert main(["bench", a, b, "--rounds", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"cpu          {cpu_info().describe()}"
    assert re.match(r"onnxruntime  \S+ CPU, 1 thread, median of 3 interleaved rounds", lines[1])
    assert lines[3] == "batch 1"  # the files' batch is free: batch 1
    assert lines[4].split() == ["file", "size", "median", "spread", "(p25-p75)", "ratio"]
    row_a, row_b = lines[5].split(), lines[6].split()
    assert row_a[0] == a and row_a[-1] == "1.00x"
    assert float(row_a[1]) == pytest.approx(Path(a).stat().st_size / 1024, abs=0.05)
    assert row_a[2] == "KiB" and row_a[4] in ("µs", "ms")
    assert row_b[0] == b and re.fullmatch(r"\d+\.\d\dx", row_b[-1])
    assert re.fullmatch(rf"  {re.escape(b)} takes \d+\.\d\dx the time of {re.escape(a)} at "
                        r"batch 1: (faster|slower|no clear difference \(.*\))", lines[7])


def test_bench_answers_faster_or_slower_only_beyond_the_noise():
    def verdict(ratio: float, low: float, high: float) -> str:
        t = Timing("b.onnx", 1e-3, 1e-3, 1e-3, ratio, low, high, 10, 21)
        line = answer(t, "a.onnx", 32)
        assert line.startswith(f"b.onnx takes {ratio:.2f}x the time of a.onnx at batch 32: ")
        return line.split(": ", 1)[1]

    assert verdict(0.45, 0.43, 0.47) == "faster"
    assert verdict(1.06, 1.05, 1.08) == "slower"
    assert verdict(0.99, 0.97, 0.995).startswith("no clear difference (under 5%")
    assert verdict(0.90, 0.80, 1.01) == ("no clear difference (the middle half of the rounds "
                                         "spans 0.80-1.01x)")


def test_bench_same_file_twice_at_several_batches(tmp_path, capsys):
    a = write(tmp_path, "a.onnx", fp32_gemm())
    assert main(["bench", a, a, "--batch", "1,4", "--rounds", "3"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^batch (\d+)$", out, re.M) == ["1", "4"]
    assert len(re.findall(rf"^  {re.escape(a)} #2 takes", out, re.M)) == 2


def test_bench_uses_a_fixed_batch_and_refuses_another(tmp_path, capsys):
    fixed = write(tmp_path, "fixed.onnx", fp32_gemm(batch=2))
    free = write(tmp_path, "free.onnx", fp32_gemm())
    assert main(["bench", fixed, free, "--rounds", "1"]) == 0
    assert re.findall(r"^batch (\d+)$", capsys.readouterr().out, re.M) == ["2"]
    err = fails(capsys, ["bench", fixed, free, "--batch", "2,8"], status=2)
    assert err.startswith(f"graphc: error: --batch 8: {fixed} has a fixed batch size")
    assert "expected batch 2, got 8" in err and "--dynamic-batch" in err


def test_bench_refuses_mismatched_inputs(tmp_path, capsys):
    a = write(tmp_path, "a.onnx", fp32_gemm())
    narrow = write(tmp_path, "narrow.onnx", fp32_gemm(width=K // 2))
    err = fails(capsys, ["bench", a, narrow], status=1)
    assert f"{narrow}, input 'X'" in err
    assert f"expected (N, {K}) float32, got (N, {K // 2}) float32" in err
    assert "same inputs" in err


def test_bench_refuses_integer_inputs(tmp_path, capsys):
    ids = make_model([helper.make_node("Cast", ["X"], ["Y"], to=TensorProto.FLOAT)],
                     fc_input(elem=TensorProto.INT64), [])
    err = fails(capsys, ["bench", write(tmp_path, "ids.onnx", ids)], status=1)
    assert "input 'X'" in err and "got int64" in err


def test_bench_missing_file(tmp_path, capsys):
    err = fails(capsys, ["bench", str(tmp_path / "nope.onnx")], status=1)
    assert "nope.onnx" in err and "does not exist" in err


@pytest.mark.parametrize("batch", ["0", "a", "1,,2", "-4"])
def test_bench_bad_batch(tmp_path, capsys, batch):
    a = write(tmp_path, "a.onnx", fp32_gemm())
    err = fails(capsys, ["bench", a, f"--batch={batch}"], status=2)
    assert err.startswith("graphc: error: --batch: bad batch size")


def test_bench_bad_rounds(tmp_path, capsys):
    a = write(tmp_path, "a.onnx", fp32_gemm())
    assert "--rounds must be an integer >= 1" in fails(capsys, ["bench", a, "--rounds", "0"],
                                                       status=2)
