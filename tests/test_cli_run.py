"""``graphc run``: a compiled file on the user's data, checked against onnxruntime run directly
(and against the labels for the accuracy it prints)."""

from __future__ import annotations

import textwrap

import numpy as np
import onnxruntime as ort
import pytest

from graphc.cli import main

MODEL = """\
    from graphc import GraphBuilder, nn

    def build(seed=0, batch=1):
        b = GraphBuilder("two_in", seed=seed)
        x = b.input("x", (batch, 1, 4, 4))
        s = b.input("s", (batch, 3))
        h = nn.relu(nn.linear(nn.flatten(x), 3, name="fc1"))
        b.output(nn.linear(h + s, 3, name="fc2"), "scores")
        b.output(nn.relu(s), "gate")
        return b.build()
    """


@pytest.fixture
def folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "two_in.py").write_text(textwrap.dedent(MODEL))
    assert main(["compile", "two_in.py", "-o", "fixed.onnx"]) == 0
    assert main(["compile", "two_in.py", "-o", "dynamic.onnx", "--dynamic-batch"]) == 0
    capsys.readouterr()
    rng = np.random.default_rng(3)
    # 16 pixels per sample stored flat (reshaped to (1, 4, 4)), s as float64 (converted).
    np.save(tmp_path / "x.npy", rng.standard_normal((10, 16)).astype(np.float32))
    np.savez(tmp_path / "s.npz", s=rng.standard_normal((10, 3)))
    return tmp_path


def reference(path, n=10):
    """The outputs of onnxruntime itself, one sample at a time."""
    x = np.load("x.npy").reshape(n, 1, 4, 4)
    s = np.load("s.npz")["s"].astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = [sess.run(["scores", "gate"], {"x": x[i:i + 1], "s": s[i:i + 1]})
            for i in range(n)]
    return {"scores": np.concatenate([r[0] for r in rows]),
            "gate": np.concatenate([r[1] for r in rows])}


@pytest.mark.parametrize("model, extra", [("fixed.onnx", []), ("dynamic.onnx", ["--batch", "4"]),
                                          ("fixed.onnx", ["--interpreter"])])
def test_outputs_equal_onnxruntime_run_directly(folder, capsys, model, extra):
    want = reference(folder / model)
    labels = np.argmax(want["scores"], axis=1)
    labels[:3] = (labels[:3] + 1) % 3  # 7 of 10 right
    np.save(folder / "labels.npy", labels)
    assert main(["run", model, "--input", "x=x.npy", "--input", "s=s.npz", "--labels",
                 "labels.npy", "-o", "out.npz", *extra]) == 0
    out = capsys.readouterr().out.splitlines()
    got = dict(np.load(folder / "out.npz"))
    assert sorted(got) == ["gate", "scores"]
    tolerance = 1e-5 if "--interpreter" in extra else 1e-6
    for name in want:
        assert got[name].shape == want[name].shape == ((10, 3))
        np.testing.assert_allclose(got[name], want[name], rtol=tolerance, atol=tolerance)
    backend = "graphc's interpreter" if "--interpreter" in extra else "onnxruntime"
    batches = "3 batches of 4" if "--batch" in extra else "10 batches of 1"
    assert out[0] == f"ran {model} on {backend}: 10 samples in {batches}"
    assert out[1] == "  input   x  (10, 1, 4, 4) float32  from x.npy"
    assert out[2] == "  input   s  (10, 3) float32  from s.npz"
    scores = want["scores"].astype(np.float64)
    assert out[3].startswith(f"  output  scores  (10, 3) float32  min {scores.min():.4g}  "
                             f"max {scores.max():.4g}")
    assert out[5] == "  accuracy  70.00% (7 of 10; argmax of scores vs labels.npy)"
    assert out[6] == "  wrote   out.npz (scores, gate)"


def test_one_input_file_without_a_name_and_nan_counted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "relu.py").write_text(textwrap.dedent("""\
        from graphc import GraphBuilder, nn

        def build(seed=0):
            b = GraphBuilder("relu")
            b.output(nn.relu(b.input("x", (2, 2))), "y")
            return b.build()
        """))
    assert main(["compile", "relu.py", "-o", "relu.onnx"]) == 0
    x = np.array([[-1.0, np.nan], [2.0, np.inf], [3.0, 4.0]], np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=np.array([1, 1, 0]))
    capsys.readouterr()
    assert main(["run", "relu.onnx", "--input", "data.npz", "--labels", "data.npz"]) == 0
    out = capsys.readouterr().out.splitlines()
    # onnxruntime: Relu(NaN) = NaN, Relu(inf) = inf; 3 samples at batch 2 (the last padded).
    assert out[0] == "ran relu.onnx on onnxruntime: 3 samples in 2 batches of 2"
    assert out[2] == ("  output  y  (3, 2) float32  min 0  max 4  mean 2.25  std 1.479  "
                      "(1 NaN, 1 inf)")
    # argmax rows: [0, nan] -> 1 (NaN is the maximum for argmax), [2, inf] -> 1, [3, 4] -> 1
    assert out[3] == "  accuracy  66.67% (2 of 3; argmax of y vs data.npz)"
    assert list(tmp_path.glob("*.npz")) == [tmp_path / "data.npz"]  # no -o: nothing written
