"""``graphc explain``: softmax with a temperature against numpy written here, the printed table,
the plot's bytes, the topic list and the errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from graphc import testing
from graphc.cli import main
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


def fails(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    return testing.one_error_line(capsys.readouterr().err)


def test_unknown_topic_names_the_closest(capsys):
    line = fails(capsys, ["explain", "temprature"])
    assert line == ("graphc: error: graphc explain: unknown topic 'temprature'; expected one of "
                    "'temperature', got 'temprature'. Did you mean 'temperature'?")


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
