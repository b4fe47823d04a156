"""Your own data (graphc.train.datafiles): .npz, .csv and image folders read back as the values
written, the synthetic sets by name, and the commands that take --data."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from matplotlib import image

from graphc.cli import main
from graphc.errors import UsageError
from graphc.train.data import make_blobs_dataset, make_spirals
from graphc.train.datafiles import load_dataset


def test_npz_with_its_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, x_test = rng.standard_normal((12, 3)), rng.standard_normal((4, 3))
    y, y_test = np.arange(12) % 3, np.array([0, 1, 2, 3])
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    train, test = load_dataset(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(train.x, x.astype(np.float32))
    np.testing.assert_array_equal(test.x, x_test.astype(np.float32))
    assert train.y.tolist() == y.tolist() and test.y.tolist() == [0, 1, 2, 3]
    assert train.classes == test.classes == 4  # labels 0..3 over both splits


def test_npz_without_test_split_is_split_like_digits(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y.astype(np.float64))  # integral floats are ids
    train, test = load_dataset(str(tmp_path / "d.npz"))
    assert (len(train), len(test)) == (15, 5)
    # every sample once, with its own label
    both = np.concatenate([train.x, test.x])
    labels = np.concatenate([train.y, test.y])
    order = np.argsort(both[:, 0])
    np.testing.assert_array_equal(both[order], x)
    assert labels[order].tolist() == y.tolist()


def test_csv_label_column_by_header_name_and_word_labels(tmp_path):
    rows = [(0.5, -1.0, "dog"), (1.5, 2.0, "cat"), (2.5, 0.25, "dog"), (3.5, 4.0, "cat")] * 2
    text = "label_note,w,animal\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)
    (tmp_path / "pets.csv").write_text(text)
    full = load_dataset(str(tmp_path / "pets.csv") + ":animal")
    x = np.concatenate([full[0].x, full[1].x])
    y = np.concatenate([full[0].y, full[1].y])
    want = {(a, b): ["cat", "dog"].index(c) for a, b, c in rows}  # sorted names: cat 0, dog 1
    got = {(float(a), float(b)): int(c) for (a, b), c in zip(x, y, strict=True)}
    assert len(x) == 8 and got == want
    # Without :COLUMN and with no label-like header, the last column is the label.
    train, _ = load_dataset(str(tmp_path / "pets.csv"))
    assert train.classes == 2 and train.x.shape[1] == 2


def test_csv_label_header_found_anywhere(tmp_path):
    (tmp_path / "d.csv").write_text("Label,a,b\n1,0.5,0.25\n0,1,2\n1,3,4\n0,5,6\n")
    train, test = load_dataset(str(tmp_path / "d.csv"))
    x = np.concatenate([train.x, test.x])
    y = np.concatenate([train.y, test.y])
    got = sorted((tuple(map(float, r)), int(c)) for r, c in zip(x, y, strict=True))
    assert got == [((0.5, 0.25), 1), ((1.0, 2.0), 0), ((3.0, 4.0), 1), ((5.0, 6.0), 0)]


def test_image_folder_reads_the_pixels_written(tmp_path):
    rng = np.random.default_rng(1)
    written = {}
    for label in ("cats", "dogs"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for k in range(3):
            pixels = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
            image.imsave(tmp_path / "pics" / label / f"{k}.png", pixels)
            written[(label, k)] = pixels
    train, test = load_dataset(str(tmp_path / "pics"))
    x = np.concatenate([train.x, test.x])
    y = np.concatenate([train.y, test.y])
    assert x.shape == (6, 3, 5, 6) and train.classes == 2
    want = {(label == "dogs", pixels.tobytes()) for (label, _), pixels in written.items()}
    got = {(bool(c), np.rint(np.moveaxis(s, 0, -1) * 255).astype(np.uint8).tobytes())
           for s, c in zip(x, y, strict=True)}
    assert got == want


def test_gray_images_saved_as_rgb_have_one_channel(tmp_path):
    for label in ("a", "b"):
        (tmp_path / "g" / label).mkdir(parents=True)
        for k in range(2):
            image.imsave(tmp_path / "g" / label / f"{k}.png", np.full((4, 4), 0.5 * k),
                         cmap="gray", vmin=0, vmax=1)
    train, test = load_dataset(str(tmp_path / "g"))
    assert train.x.shape[1:] == (1, 4, 4)
    values = sorted(np.unique(np.concatenate([train.x, test.x])).tolist())
    assert values == [0.0, pytest.approx(128 / 255, abs=1 / 255)]


def test_synthetic_sets_by_name_are_the_generators_split():
    train, test = load_dataset("blobs:n=80,classes=4,features=5,seed=2")
    full = make_blobs_dataset(80, 4, 5, seed=2)
    want_train, want_test = full.split(0.25, seed=0)
    np.testing.assert_array_equal(train.x, want_train.x)
    np.testing.assert_array_equal(test.y, want_test.y)
    assert len(load_dataset("spirals")[0]) == len(make_spirals()) * 3 // 4
    with pytest.raises(UsageError, match="cannot read 'n=x' of blobs"):
        load_dataset("blobs:n=x")


def test_train_then_accuracy_and_run_on_an_npz(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlp2d.py").write_text(
        "from graphc import GraphBuilder, nn\n\n\n"
        "def build(seed=0, batch=1):\n"
        "    b = GraphBuilder('mlp2d', seed=seed)\n"
        "    h = nn.relu(nn.linear(b.input('x', (batch, 2)), 16, name='fc1'))\n"
        "    b.output(nn.linear(h, 3, name='fc2'), 'y')\n"
        "    return b.build()\n")
    full = make_blobs_dataset(240, 3, 2, seed=4)
    np.savez(tmp_path / "blobs.npz", x=full.x[:180], y=full.y[:180], x_test=full.x[180:],
             y_test=full.y[180:])
    assert main(["train", "mlp2d.py", "--data", "blobs.npz", "--epochs", "2", "--batch", "30",
                 "-o", "b.ckpt"]) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    # The per-epoch log is on stdout, before the summary.
    assert out[0].startswith("epoch   1/2  loss ") and out[1].startswith("epoch   2/2  loss ")
    assert out[2] == "trained mlp2d for 2 epochs on blobs.npz (180 training, 60 test samples, " \
                     "3 classes)"
    assert "epoch " not in captured.err
    recorded = float(out[3].split()[-1].rstrip("%"))
    assert main(["compile", "mlp2d.py", "--weights", "b.ckpt", "-o", "m.onnx", "--dynamic-batch",
                 "--accuracy", "blobs.npz"]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("  accuracy")][0]
    sess = ort.InferenceSession("m.onnx", providers=["CPUExecutionProvider"])
    scores = sess.run(None, {"x": full.x[180:].astype(np.float32)})[0]
    accuracy = 100 * np.mean(np.argmax(scores, axis=1) == full.y[180:])
    assert line.startswith(f"  accuracy     {accuracy:.2f}% on the blobs.npz test split (60 "
                           "samples, ")
    assert accuracy == pytest.approx(recorded, abs=0.01)
    np.save(tmp_path / "x.npy", full.x[180:])
    np.save(tmp_path / "y.npy", full.y[180:])
    assert main(["run", "m.onnx", "--input", "x.npy", "--labels", "y.npy"]) == 0
    right = int(np.sum(np.argmax(scores, axis=1) == full.y[180:]))
    assert f"  accuracy  {accuracy:.2f}% ({right} of 60; argmax of y vs y.npy)" in \
        capsys.readouterr().out.splitlines()


def test_a_folder_named_like_a_set_is_given_with_its_path(tmp_path, monkeypatch):
    from graphc.train.datafiles import data_kind

    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    assert data_kind("images") == "generator"
    assert data_kind("./images") == "folder"
    assert data_kind(str(tmp_path / "images")) == "folder"
