"""``graphc explain``: softmax with a temperature against numpy written here, the printed table,
the plot's bytes; the XNOR dot product against numpy and the bits worked out by hand; the topic
list and the errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from graphc import testing
from graphc.cli import main
from graphc.compress.xnor import (
    DEFAULT_A,
    DEFAULT_W,
    binary_neuron,
    random_neuron_inputs,
    random_signs,
    xnor_dot,
)
from graphc.errors import UsageError
from graphc.train.temperature import (
    DEFAULT_LOGITS,
    DEFAULT_TEMPERATURES,
    entropy_bits,
    temperature_table,
    tempered_softmax,
)

LOGITS = [2.0, 1.0, 0.5, -1.0]
TEMPERATURES = [1.0, 2.0, 4.0, 20.0, 100.0]


def numpy_softmax(z: list[float], t: float) -> np.ndarray:
    """softmax(z / T) the textbook way, in float64, shifted by the max."""
    s = np.asarray(z, np.float64) / t
    e = np.exp(s - s.max())
    return e / e.sum()


def numpy_entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


# ----- the numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("logits", [LOGITS, list(DEFAULT_LOGITS), [0.0, 0.0, 0.0],
                                    [30.0, -30.0], [1e3, 999.0, -5.0, 0.0, 2.0]])
def test_t_equal_one_is_softmax(logits):
    got = tempered_softmax(logits, [1.0])[0]
    z = np.asarray(logits)
    e = np.exp(z - z.max())
    np.testing.assert_allclose(got, e / e.sum(), rtol=1e-12, atol=1e-300)


def test_the_course_example_by_hand():
    # softmax(2, 1, 0.5, -1): e^2 = 7.389056, e^1 = 2.718282, e^0.5 = 1.648721, e^-1 = 0.367879.
    total = 7.389056 + 2.718282 + 1.648721 + 0.367879
    got = tempered_softmax(LOGITS, [1.0])[0]
    np.testing.assert_allclose(got, [7.389056 / total, 2.718282 / total, 1.648721 / total,
                                     0.367879 / total], atol=1e-6)


@pytest.mark.parametrize("t", [0.3, 2.0, 4.0, 20.0, 100.0])
def test_each_temperature_against_numpy(t):
    np.testing.assert_allclose(tempered_softmax(LOGITS, [t])[0], numpy_softmax(LOGITS, t),
                               rtol=1e-12)


def test_large_temperature_tends_to_uniform():
    p = tempered_softmax(LOGITS, [1e6])[0]
    assert np.max(np.abs(p - 0.25)) < 1e-6


@pytest.mark.parametrize("logits", [LOGITS, list(DEFAULT_LOGITS), [5.0, -3.0]])
@pytest.mark.parametrize("t", [1e4, 1e6])
def test_large_temperature_deviation_is_first_order(logits, t):
    # exp(z_i / T) ~ 1 + z_i / T, so softmax(z / T)_i - 1/n ~ (z_i - mean(z)) / (n T): the order
    # of the logits survives, and shrinks as 1/T. The rest is of the order of (z / T)^2.
    z = np.asarray(logits)
    n = len(z)
    p = tempered_softmax(logits, [t])[0]
    np.testing.assert_allclose(p - 1.0 / n, (z - z.mean()) / (n * t), rtol=0,
                               atol=np.max(z**2) / t**2)


def test_small_temperature_tends_to_one_hot_argmax():
    p = tempered_softmax(LOGITS, [1e-3])[0]
    np.testing.assert_array_equal(p, [1.0, 0.0, 0.0, 0.0])
    tied = tempered_softmax([3.0, 3.0, 1.0], [1e-3])[0]
    np.testing.assert_array_equal(tied, [0.5, 0.5, 0.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_increases_with_temperature(seed):
    logits = list(np.random.default_rng(seed).normal(0.0, 3.0, size=6))
    temps = list(np.geomspace(0.1, 1e3, 25))
    table = temperature_table(logits, temps)
    expected = [numpy_entropy_bits(numpy_softmax(logits, t)) for t in temps]
    np.testing.assert_allclose(table.entropy, expected, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(table.entropy) > 0)
    assert table.entropy[-1] < np.log2(6)
    assert table.entropy[-1] > np.log2(6) - 1e-3


def test_entropy_bits_by_hand():
    np.testing.assert_allclose(entropy_bits(np.array([[0.25] * 4, [0.5, 0.5, 0.0, 0.0],
                                                      [1.0, 0.0, 0.0, 0.0]])), [2.0, 1.0, 0.0])


def test_defaults_are_the_course_temperatures():
    table = temperature_table()
    assert table.temperatures == (1.0, 2.0, 4.0, 20.0, 100.0) == DEFAULT_TEMPERATURES
    assert table.probs.shape == (5, len(DEFAULT_LOGITS))
    np.testing.assert_allclose(table.probs.sum(axis=1), 1.0, rtol=1e-12)


# ----- the command ----------------------------------------------------------------------------


ROW = re.compile(r"^\s*(\S+)((?:\s+\d+\.\d+)+)\s*$")


def table_rows(out: str) -> dict[str, list[float]]:
    """Return the printed table as T (or '1/n') -> the numbers of its row."""
    rows = {}
    for line in out.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = [float(v) for v in m.group(2).split()]
    return rows


def test_printed_table_against_numpy(capsys):
    assert main(["explain", "temperature", "--logits", "2,1,0.5,-1", "--T",
                 "1,2,4,20,100"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert list(rows) == ["1", "2", "4", "20", "100", "1/n"]
    for t in TEMPERATURES:
        row = rows[f"{t:g}"]
        p = numpy_softmax(LOGITS, t)
        # Printed with 5 decimals, the entropy (bits) with 4.
        np.testing.assert_allclose(row[:4], p, atol=0.5e-5 + 1e-12)
        assert abs(row[4] - numpy_entropy_bits(p)) <= 0.5e-4 + 1e-12
    assert rows["1/n"] == [0.25, 0.25, 0.25, 0.25, 2.0]
    assert "T = 1 is the ordinary softmax" in out
    assert "uniform 1/n = 0.25" in out
    assert "one-hot argmax (class 0)" in out
    assert "dark knowledge" in out


def test_default_table(capsys):
    assert main(["explain", "temperature"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == ["1", "2", "4", "20", "100", "1/n"]
    for t in DEFAULT_TEMPERATURES:
        np.testing.assert_allclose(rows[f"{t:g}"][:-1], numpy_softmax(list(DEFAULT_LOGITS), t),
                                   atol=0.5e-5 + 1e-12)


def test_negative_first_logit_and_ties(capsys):
    assert main(["explain", "temperature", "--logits", "-1,3,3", "--T", "1"]) == 0
    out = capsys.readouterr().out
    np.testing.assert_allclose(table_rows(out)["1"][:3], numpy_softmax([-1.0, 3.0, 3.0], 1.0),
                               atol=0.5e-5 + 1e-12)
    assert "T -> 0 to 1/2 on each tied max (classes 1, 2)" in out


def test_plot_is_a_deterministic_png(tmp_path, capsys):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for path in (first, second):
        assert main(["explain", "temperature", "--plot", str(path)]) == 0
        assert f"wrote {path}" in capsys.readouterr().out
    data = first.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"tIME" not in data and b"Software" not in data
    assert data == second.read_bytes()
    # Written through a temporary file that is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_plot_svg_is_deterministic(tmp_path):
    paths = [tmp_path / "a.svg", tmp_path / "b.svg"]
    for path in paths:
        assert main(["explain", "temperature", "--T", "1,4", "--plot", str(path)]) == 0
    text = paths[0].read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert paths[0].read_bytes() == paths[1].read_bytes()


# ----- the topics and the errors --------------------------------------------------------------


def test_no_topic_lists_the_topics(capsys):
    assert main(["explain"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+temperature\s+softmax\(z / T\)", out, re.MULTILINE)
    assert re.search(r"^\s+binary\s+dot\(a, w\) of \+-1 vectors", out, re.MULTILINE)
    assert re.search(r"^\s+activations\s+f\(x\) and f'\(x\)", out, re.MULTILINE)


def fails(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    return testing.one_error_line(capsys.readouterr().err)


def test_unknown_topic_names_the_closest(capsys):
    line = fails(capsys, ["explain", "temprature"])
    assert line == ("graphc: error: graphc explain: unknown topic 'temprature'; expected one of "
                    "'activations', 'augmentation', 'binary', 'temperature', got 'temprature'. "
                    "Did you mean 'temperature'?")


@pytest.mark.parametrize(("argv", "expected"), [
    (["--logits", "2,one,0"], "--logits: 'one' is not a number; expected comma-separated "
                              "numbers such as 2,1,0.5,-1, got '2,one,0'."),
    (["--logits", "2,,1"], "--logits: '' is not a number"),
    (["--logits", "3"], "--logits: softmax over fewer than two classes is always 1; expected at "
                        "least 2 logits, got 1."),
    (["--logits", "1,nan"], "--logits: a logit must be a finite number; expected finite "
                            "numbers, got nan."),
    (["--T", "1,x"], "--T: 'x' is not a number; expected comma-separated numbers such as "
                     "1,2,4,20,100, got '1,x'."),
    (["--T", "1,0"], "--T: a temperature must be positive and finite; expected T > 0, got 0."),
    (["--T", "-2"], "--T: a temperature must be positive and finite; expected T > 0, got -2."),
    (["--T", "inf"], "--T: a temperature must be positive and finite; expected T > 0, got inf."),
    (["--T", "1e-320"], "--T: the temperature is too small for these logits"),
    (["--plot", "t.jpg"], "--plot: cannot draw 't.jpg'; expected a .png, .svg, .pdf file, "
                          "got '.jpg'."),
    (["--temperature", "2"], "graphc explain temperature: unrecognized arguments: "
                             "--temperature 2."),
])
def test_bad_options_are_one_line(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    line = fails(capsys, ["explain", "temperature", *argv])
    assert line.startswith("graphc: error: " + expected)
    assert list(tmp_path.iterdir()) == []


def test_api_refuses_like_the_cli():
    with pytest.raises(UsageError, match="fewer than two classes"):
        temperature_table([1.0], [1.0])
    with pytest.raises(UsageError, match="expected T > 0, got 0"):
        tempered_softmax([1.0, 2.0], [0.0])
    with pytest.raises(UsageError, match="no temperature given"):
        temperature_table([1.0, 2.0], [])


# ----- binary: dot(a, w) = 2 * popcount(xnor(a, w)) - n ---------------------------------------


def numpy_sign(x: np.ndarray) -> np.ndarray:
    """sign with sign(0) = +1, the binary networks' convention."""
    return np.where(np.asarray(x, np.float64) >= 0, 1, -1)


def numpy_bits(v: np.ndarray) -> str:
    return "".join(str(int(b)) for b in (np.asarray(v) > 0).astype(int))


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 63, 64, 65, 200, 1000])
def test_identity_against_numpy(n):
    # Beyond 64 bits the XNOR is no longer one machine word; Python's integers still hold it.
    rng = np.random.default_rng(n)
    for _ in range(40):
        a, w = rng.choice([-1, 1], size=(2, n))
        r = xnor_dot(a.tolist(), w.tolist())
        dot = int(np.dot(a, w))
        agree = int(np.sum(a == w))
        assert (r.dot, r.via_popcount, r.popcount) == (dot, dot, agree)
        assert dot == 2 * agree - n
        assert r.a_bits == numpy_bits(a) and r.w_bits == numpy_bits(w)
        assert r.xnor_bits == "".join("1" if x == y else "0" for x, y in zip(a, w, strict=True))
        assert r.n == n and r.products == tuple((a * w).tolist())


def test_extremes_by_hand():
    # All agree: popcount n, dot n. All disagree: popcount 0, dot -n.
    same = xnor_dot([1, -1, -1], [1, -1, -1])
    assert (same.xnor_bits, same.popcount, same.dot) == ("111", 3, 3)
    opposite = xnor_dot([1, -1, -1], [-1, 1, 1])
    assert (opposite.xnor_bits, opposite.popcount, opposite.via_popcount) == ("000", 0, -3)
    one = xnor_dot([-1], [-1])
    assert (one.a_bits, one.xnor_bits, one.via_popcount) == ("0", "1", 1)


@pytest.mark.parametrize("seed", range(5))
def test_random_vectors_are_signs_of_the_seed(seed):
    a, w = random_signs(12, seed)
    assert (a, w) == random_signs(12, seed)
    assert len(a) == len(w) == 12 and set(a) | set(w) <= {-1, 1}
    x, w_latent = random_neuron_inputs(12, seed)
    assert len(x) == len(w_latent) == 12
    np.testing.assert_array_equal(np.round(x, 1), x)
    np.testing.assert_array_equal(np.round(w_latent, 2), w_latent)


@pytest.mark.parametrize("seed", range(20))
def test_binary_neuron_against_numpy(seed):
    x, w_latent = random_neuron_inputs(16, seed)
    neuron = binary_neuron(x, w_latent)
    alpha = np.mean(np.abs(w_latent))
    a, w = numpy_sign(x), numpy_sign(w_latent)
    expected = alpha * int(np.dot(a, w))
    assert neuron.alpha == pytest.approx(alpha, rel=1e-15)
    assert neuron.y == pytest.approx(expected, rel=1e-15, abs=0.0)
    assert neuron.output == (1 if expected >= 0 else -1)
    assert neuron.xnor.a == tuple(a.tolist()) and neuron.xnor.w == tuple(w.tolist())


def test_sign_of_zero_is_plus_one():
    # A zero input (either signed zero) and a zero latent weight become +1, never a dropped 0.
    neuron = binary_neuron([0.0, -0.0, 2.0], [0.0, 1.0, -3.0])
    assert neuron.xnor.a == (1, 1, 1) and neuron.xnor.w == (1, 1, -1)
    # Two agreements and two disagreements: y = 0, and sign(0) = +1.
    tie = binary_neuron([1.0, 1.0, -1.0, -1.0], [0.5, -0.5, -0.5, 0.5])
    assert (tie.xnor.popcount, tie.xnor.via_popcount, tie.y, tie.output) == (2, 0, 0.0, 1)


def binary_lines(out: str) -> list[str]:
    return [line.rstrip() for line in out.splitlines()]


def test_default_example_by_hand(capsys):
    assert main(["explain", "binary"]) == 0
    lines = binary_lines(capsys.readouterr().out)
    assert (DEFAULT_A, DEFAULT_W) == ((1, -1, 1, 1, -1, 1, -1, -1), (1, 1, 1, 1, -1, 1, -1, 1))
    # a = 10110100, w = 11110101: equal bits at positions 0, 2, 3, 4, 5, 6, so xnor = 10111110,
    # 6 agreements, 2 * 6 - 8 = 4; the products +1 -1 +1 +1 +1 +1 +1 -1 also sum to 4.
    for expected in [
        "  a         = +1 -1 +1 +1 -1 +1 -1 -1",
        "  w         = +1 +1 +1 +1 -1 +1 -1 +1",
        "  a_i * w_i = +1 -1 +1 +1 +1 +1 +1 -1",
        "  a           10110100",
        "  w           11110101",
        "  xnor(a, w)  10111110   (1 where the signs agree)",
        "popcount(xnor(a, w)) = 6   (the agreements; the other n - 6 = 2 disagree)",
        "n                    = 8",
        "2 * popcount - n     = 2 * 6 - 8 = 4",
        "sum of a_i * w_i     = +1 -1 +1 +1 +1 +1 +1 -1 = 4",
        "dot(a, w) = 2 * popcount(xnor(a, w)) - n: 4 = 4",
    ]:
        assert expected in lines
    # The neuron: x = 0.7 -1.2 0 0.4 -0.3 1.5 -0.8 0.2 gives a = 10110101 (sign(0) = +1);
    # w_latent = 0.6 -0.4 -0.2 0.9 0.1 0.5 -0.7 -0.3 gives w = 10011100; xnor = 11010110 has 5
    # ones, 2 * 5 - 8 = 2; alpha = 3.7 / 8 = 0.4625 and y = 0.925 > 0.
    for expected in [
        "  a = sign(x)        =   +1   -1   +1   +1   -1   +1   -1   +1   (sign(0) = +1)",
        "bits of a, w                     = 10110101, 10011100",
        "xnor(a, w)                       = 11010110   (popcount 5)",
        "2 * popcount - n                 = 2 * 5 - 8 = 2",
        "alpha = mean|w_latent|           = (0.6 + 0.4 + 0.2 + 0.9 + 0.1 + 0.5 + 0.7 + 0.3) / 8 "
        "= 0.4625",
        "y = alpha * (2 * popcount - n)   = 0.4625 * 2 = 0.925",
        "sign(y)                          = +1   (this neuron's bit for the next layer)",
    ]:
        assert expected in lines
    out = "\n".join(lines)
    assert "no popcount kernel" in out and "1.2-62x slower than fp32" in out
    assert "MatMulInteger" in out and "QLinearConv" in out


def test_given_vectors_by_hand(capsys):
    # a = 001, w = 011: only the middle bit differs, 2 agreements, 2 * 2 - 3 = 1 = 1 - 1 + 1.
    assert main(["explain", "binary", "--a", "-1,-1,1", "--w", "-1,+1,1.0"]) == 0
    lines = binary_lines(capsys.readouterr().out)
    for expected in ["  a           001", "  w           011", "  xnor(a, w)  101   (1 where the "
                     "signs agree)", "2 * popcount - n     = 2 * 2 - 3 = 1",
                     "sum of a_i * w_i     = +1 -1 +1 = 1"]:
        assert expected in lines


def test_seeded_example_against_numpy(capsys):
    assert main(["explain", "binary", "--seed", "7", "--n", "13"]) == 0
    out = capsys.readouterr().out
    a, w = (np.array(v) for v in random_signs(13, 7))
    assert f"  a           {numpy_bits(a)}" in out
    assert f"  w           {numpy_bits(w)}" in out
    agree = int(np.sum(a == w))
    assert f"2 * popcount - n     = 2 * {agree} - 13 = {int(np.dot(a, w))}" in out
    assert f"= {int(np.dot(a, w))}\ndot(a, w)" in out
    x, w_latent = random_neuron_inputs(13, 7)
    y = np.mean(np.abs(w_latent)) * int(np.dot(numpy_sign(x), numpy_sign(w_latent)))
    assert re.search(rf"^y = alpha .* = {y:.6g}$", out, re.MULTILINE)
    # --n alone draws from seed 0; --seed alone draws 8 entries.
    assert main(["explain", "binary", "--n", "5"]) == 0
    assert f"  a           {numpy_bits(np.array(random_signs(5, 0)[0]))}" in capsys.readouterr().out
    assert main(["explain", "binary", "--seed", "7"]) == 0
    assert "with n = 8" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "expected"), [
    (["--a", "1,0,1"], "--a: value 2 of 3 is not +1 or -1; expected each value +1 or -1, got 0."),
    (["--w", "1,-1,0.5"], "--w: value 3 of 3 is not +1 or -1; expected each value +1 or -1, "
                          "got 0.5."),
    (["--a", "1,x"], "--a: 'x' is not a number; expected comma-separated numbers such as "
                     "1,-1,1,1,-1,1,-1,-1, got '1,x'."),
    (["--a", "1,1", "--w", "1,-1,1"], "--w: the two vectors have different lengths; expected the "
                                      "length of --a, 2, got 3."),
    (["--a", "-1,1"], "the default --w: the two vectors have different lengths; "
                      "expected the length of --a, 2, got 8."),
    (["--n", "0"], "--n: a vector needs at least one entry; expected n >= 1, got 0."),
    (["--n", "-3"], "--n: a vector needs at least one entry; expected n >= 1, got -3."),
    (["--n", "65"], "--n: too long to print; expected 1 <= n <= 64, got 65."),
    (["--seed", "-1"], "--seed: a seed must not be negative; expected seed >= 0, got -1."),
    (["--a", "1,-1", "--seed", "2"], "--a: give the vectors or draw them, not both; expected "
                                     "--a/--w or --seed/--n, got --a and --seed."),
    (["--a", ",".join(["1"] * 65)], "--a: too long to print; expected at most 64 values, got 65."),
    (["--bits", "101"], "graphc explain binary: unrecognized arguments: --bits 101."),
])
def test_binary_bad_options_are_one_line(capsys, argv, expected):
    line = fails(capsys, ["explain", "binary", *argv])
    assert line.startswith("graphc: error: " + expected)


def test_binary_api_refuses_like_the_cli():
    with pytest.raises(UsageError, match="a: the vector is empty"):
        xnor_dot([], [])
    with pytest.raises(UsageError, match=r"w: value 1 of 1 is not \+1 or -1; .* got 0\."):
        xnor_dot([1], [0])
    with pytest.raises(UsageError, match="w: the two vectors have different lengths; expected the "
                                         "length of a, 1, got 2"):
        xnor_dot([1], [1, 1])
    with pytest.raises(UsageError, match="expected n >= 1, got 0"):
        random_signs(0)
    with pytest.raises(UsageError, match="w_latent: the two vectors have different lengths"):
        binary_neuron([1.0, 2.0], [1.0])
    with pytest.raises(UsageError, match="x: a vector needs at least one entry"):
        binary_neuron([], [])
    with pytest.raises(UsageError, match="w_latent: a value is not finite; expected finite "
                                         "numbers, got nan"):
        binary_neuron([1.0], [float("nan")])


# ----- activations ----------------------------------------------------------------------------


def numpy_activations(x: np.ndarray, alpha: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each activation and its derivative as the course writes them, in numpy."""
    s = 1 / (1 + np.exp(-x))
    t = np.tanh(x)
    return {"heaviside": ((x >= 0).astype(float), np.zeros_like(x)),
            "sigmoid": (s, s * (1 - s)),
            "tanh": (t, 1 - t**2),
            "relu": (np.maximum(x, 0), (x > 0).astype(float)),
            "leaky_relu": (np.where(x < 0, alpha * x, x), np.where(x < 0, alpha, 1.0))}


def test_activation_table_against_numpy_and_finite_differences():
    from graphc.symbolic.activations import ACTIVATIONS, LEAKY_ALPHA, activation_table

    x = np.array([-3.0, -1.0, -0.25, 0.0, 0.5, 2.0])
    table = activation_table(x)
    # ONNX stores LeakyRelu's alpha as a float32 attribute.
    want = numpy_activations(x, float(np.float32(LEAKY_ALPHA)))
    assert list(table.values) == list(ACTIVATIONS)
    for name in ACTIVATIONS:
        np.testing.assert_allclose(table.values[name], want[name][0], rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(table.slopes[name], want[name][1], rtol=1e-12, atol=1e-15)
    # Away from the kinks the slopes are the central differences of the values.
    h = 1e-6
    smooth = x != 0
    for name in ("sigmoid", "tanh", "relu", "leaky_relu"):
        up = activation_table(x[smooth] + h).values[name]
        down = activation_table(x[smooth] - h).values[name]
        np.testing.assert_allclose(table.slopes[name][smooth], (up - down) / (2 * h),
                                   rtol=1e-6, atol=1e-9)


def test_activations_command_prints_the_table_and_the_identity(capsys, tmp_path):
    plot = tmp_path / "act.png"
    assert main(["explain", "activations", "--at", "-1,0,2", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[4:14]}
    assert rows["sigmoid"] == ["0.2689", "0.5", "0.8808"]
    assert rows["sigmoid'"] == ["0.1966", "0.25", "0.105"]
    assert rows["relu'"] == ["0", "0", "1"]
    assert rows["leaky_relu(0.1)'"] == ["0.1", "1", "1"]
    assert rows["heaviside'"] == ["0", "0", "0"]
    assert "sympy proves it for every x" in out
    difference = float(re.search(r"largest difference at these points (\S+);", out).group(1))
    assert difference < 1e-15
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("argv", "expected"), [
    (["--at", "1,a"], "--at: 'a' is not a number"),
    (["--at", "1,inf"], "--at: points must be finite numbers; expected finite, got 1, inf."),
    (["--at", ",".join(["1"] * 21)], "--at: wrong number of points; expected 1 to 20 numbers, "
                                     "got 21."),
    (["--plot", "a.gif"], "--plot: cannot draw 'a.gif'"),
])
def test_activations_bad_options_are_one_line(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    line = fails(capsys, ["explain", "activations", *argv])
    assert line.startswith("graphc: error: " + expected)
    assert list(tmp_path.iterdir()) == []


# ----- augmentation ---------------------------------------------------------------------------


def test_augmentation_views_against_their_definitions():
    from graphc.train.augment_views import FEATURE_NOISE, views

    v = views("noise=0.1,mixup=1,shift=1", "averages=40,outliers=5,foreign=5", seed=3)
    by_spec = {view.spec: view for view in v.augmented}
    # Gaussian noise of sigma on each pixel: E|change| = sigma * sqrt(2 / pi), over 384 pixels.
    assert by_spec["noise=0.1"].change == pytest.approx(0.1 * np.sqrt(2 / np.pi), abs=0.01)
    for spec in ("noise=0.1", "shift=1"):
        assert np.array_equal(by_spec[spec].labels.argmax(axis=1), v.classes)
        assert np.all(by_spec[spec].labels.max(axis=1) == 1)
    # Each mixed digit lies on the segment between its original and another original, with the
    # label shares of the same lambda.
    mixed = by_spec["mixup=1"]
    flat = v.originals.reshape(len(v.originals), -1).astype(np.float64)
    for i, image in enumerate(mixed.x.reshape(len(flat), -1)):
        best = np.inf
        for j in range(len(flat)):
            d = flat[i] - flat[j]
            lam = 1.0 if not d.any() else float(np.dot(image - flat[j], d) / np.dot(d, d))
            residual = np.abs(lam * flat[i] + (1 - lam) * flat[j] - image).max()
            if residual < best:
                best, share = residual, lam
        assert best < 1e-6 and -1e-6 <= share <= 1 + 1e-6
        assert mixed.labels[i].sum() == pytest.approx(1.0)
        assert mixed.labels[i, v.classes[i]] >= share - 1e-6
    kinds = {view.spec.split("=")[0]: view for view in v.extended}
    assert [len(kinds[k].x) for k in ("averages", "outliers", "foreign")] == [40, 5, 5]
    assert np.all(kinds["averages"].labels.max(axis=1) == 1)
    assert np.allclose(kinds["foreign"].labels, 0.1)
    # An average of two digits of a class stays within their pixel range [0, 1].
    assert kinds["averages"].x.min() >= 0 and kinds["averages"].x.max() <= 1
    # 2-D Gaussian noise of sigma per axis moves a point by sigma * sqrt(pi / 2) on average
    # (the Rayleigh mean), over 300 points.
    moved = np.linalg.norm(v.noisy - v.features, axis=1).mean()
    assert moved == pytest.approx(FEATURE_NOISE * np.sqrt(np.pi / 2), abs=0.06)


def test_augmentation_command_prints_and_draws(capsys, tmp_path):
    plot = tmp_path / "aug.png"
    assert main(["explain", "augmentation", "--augment", "noise=0.1", "--extend", "foreign=2",
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^   noise=0.1 +0\.0[78]\d  kept$", out, re.M), out
    assert re.search(r"^   foreign=2 +2 new objects, labels uniform 1/10 \(none of the "
                     r"classes\)$", out, re.M), out
    assert re.search(r"^   spirals +300 objects of shape 2, 3 classes$", out, re.M), out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = tmp_path / "again.png"
    assert main(["explain", "augmentation", "--augment", "noise=0.1", "--extend", "foreign=2",
                 "--plot", str(again)]) == 0
    assert again.read_bytes() == plot.read_bytes()


@pytest.mark.parametrize(("argv", "expected"), [
    (["--augment", "blur=1"], "augment item 'blur=1': unknown augmentation 'blur'"),
    (["--extend", "averages=-1"], "extend item 'averages=-1': bad count for averages"),
    (["--seed", "-2"], "--seed: the seed must be >= 0; expected an int >= 0, got -2."),
    (["--plot", "a.txt"], "--plot: cannot draw 'a.txt'"),
])
def test_augmentation_bad_options_are_one_line(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    line = fails(capsys, ["explain", "augmentation", *argv])
    assert line.startswith("graphc: error: " + expected)
    assert list(tmp_path.iterdir()) == []
