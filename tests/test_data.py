"""Data sets (digits split, synthetic sets, batching), checked on real values."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.errors import ShapeError, UsageError
from graphc.train.data import (
    Dataset,
    bar_row,
    load_digits,
    make_blobs_dataset,
    make_images,
    make_spirals,
    make_xor,
)


@pytest.fixture(scope="module")
def digits() -> tuple[Dataset, Dataset]:
    return load_digits()


def row_multiset(x: np.ndarray) -> list[bytes]:
    return sorted(row.tobytes() for row in x.reshape(len(x), -1))


# --- digits --------------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_range(digits: tuple[Dataset, Dataset]) -> None:
    train, test = digits
    assert (len(train), len(test)) == (1347, 450)
    assert train.x.shape == (1347, 1, 8, 8) and test.x.shape == (450, 1, 8, 8)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert train.classes == test.classes == 10
    assert (train.name, test.name) == ("digits/train", "digits/test")
    both = np.concatenate([train.x, test.x])
    assert both.min() == 0.0 and both.max() == 1.0
    assert set(np.unique(both * 16)) <= set(range(17))  # pixels k/16 exactly
    flat_train, flat_test = load_digits(layout="flat")
    assert flat_train.x.shape == (1347, 64) and flat_test.x.shape == (450, 64)
    np.testing.assert_array_equal(flat_train.x, train.x.reshape(-1, 64))
    np.testing.assert_array_equal(flat_test.y, test.y)


def test_digits_split_is_a_partition_of_all_1797(digits: tuple[Dataset, Dataset]) -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    train, test = digits
    full = sklearn_digits()
    rows = np.concatenate([full.data / 16, full.target[:, None]], axis=1).astype(np.float32)
    ours = np.concatenate([np.concatenate([d.x.reshape(len(d), -1), d.y[:, None]], axis=1)
                           for d in (train, test)]).astype(np.float32)
    assert row_multiset(ours) == row_multiset(rows)


def test_digits_split_is_stratified(digits: tuple[Dataset, Dataset]) -> None:
    train, test = digits
    everything = np.bincount(np.concatenate([train.y, test.y]), minlength=10)
    assert everything.sum() == 1797
    for part in (train, test):
        counts = np.bincount(part.y, minlength=10)
        expected = everything * len(part) / 1797
        assert np.abs(counts - expected).max() <= 1, (counts, expected)


def test_digits_split_is_deterministic(digits: tuple[Dataset, Dataset]) -> None:
    train, test = digits
    again_train, again_test = load_digits(seed=0)
    np.testing.assert_array_equal(again_train.x, train.x)
    np.testing.assert_array_equal(again_test.y, test.y)
    other_train, other_test = load_digits(seed=1)
    assert len(other_test) == 450
    assert not np.array_equal(other_test.x, test.x)
    assert row_multiset(other_test.x) != row_multiset(test.x)  # other samples, not just order
    smaller_train, smaller_test = load_digits(test_size=0.1)
    assert (len(smaller_train), len(smaller_test)) == (1617, 180)


def test_load_digits_refuses_bad_arguments() -> None:
    with pytest.raises(UsageError) as err:
        load_digits(layout="imag")
    assert str(err.value) == ("load_digits: unknown layout 'imag'; expected one of 'flat', "
                              "'image', got 'imag'. Did you mean 'image'?")
    with pytest.raises(UsageError, match=r"test_size is out of range; expected a number in "
                                         r"\(0, 1\], got 1.5"):
        load_digits(test_size=1.5)


# --- Dataset -------------------------------------------------------------------------------


def toy(n: int = 10) -> Dataset:
    x = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    return Dataset(x, np.arange(n) % 3, classes=3, name="toy")


def test_dataset_coerces_dtypes_and_prints_shapes() -> None:
    ds = toy()
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64 and len(ds) == 10
    assert repr(ds) == "Dataset('toy', x=(10, 2) float32, y=(10,) int64, classes=3)"


def test_dataset_refuses_inconsistent_fields() -> None:
    with pytest.raises(ShapeError, match=r"different numbers of samples; expected x of shape "
                                         r"\(3, \.\.\.\), got shape \(2, 2\)"):
        Dataset(np.zeros((2, 2)), np.zeros(3, dtype=int), classes=2)
    with pytest.raises(UsageError, match=r"label out of range; expected labels in 0\.\.1, "
                                         r"got 0\.\.2"):
        Dataset(np.zeros((3, 2)), np.array([0, 1, 2]), classes=2)
    with pytest.raises(ShapeError, match="labels must be integer class ids"):
        Dataset(np.zeros((2, 2)), np.array([0.5, 1.0]), classes=2)


def test_batches_cover_every_sample_exactly_once() -> None:
    ds = toy(10)
    got = list(ds.batches(3, seed=4))
    assert [len(y) for _, y in got] == [3, 3, 3, 1]
    xs = np.concatenate([x for x, _ in got])
    ys = np.concatenate([y for _, y in got])
    assert sorted(xs[:, 0] / 2) == list(range(10))  # row i of toy is [2i, 2i+1]
    np.testing.assert_array_equal(ys, (xs[:, 0] / 2).astype(int) % 3)  # x and y stay paired
    assert not np.array_equal(xs[:, 0], np.arange(0, 20, 2))  # actually shuffled


def test_batches_are_deterministic_per_seed() -> None:
    ds = toy(10)
    first = [y for _, y in ds.batches(4, seed=7)]
    same = [y for _, y in ds.batches(4, seed=7)]
    other = [y for _, y in ds.batches(4, seed=8)]
    generator = [y for _, y in ds.batches(4, seed=np.random.default_rng(7))]
    assert all(np.array_equal(a, b) for a, b in zip(first, same, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(first, generator, strict=True))
    x_first = np.concatenate([x for x, _ in ds.batches(4, seed=7)])
    x_other = np.concatenate([x for x, _ in ds.batches(4, seed=8)])
    assert not np.array_equal(x_first, x_other)
    assert len(other) == 3


def test_batches_drop_last_and_no_shuffle() -> None:
    ds = toy(10)
    dropped = list(ds.batches(3, seed=0, drop_last=True))
    assert [len(y) for _, y in dropped] == [3, 3, 3]
    assert len(np.unique(np.concatenate([x[:, 0] for x, _ in dropped]))) == 9
    ordered = np.concatenate([x for x, _ in ds.batches(4, seed=0, shuffle=False)])
    np.testing.assert_array_equal(ordered, ds.x)
    assert [len(y) for _, y in ds.batches(20, seed=0)] == [10]
    assert list(ds.batches(20, seed=0, drop_last=True)) == []


def test_batches_check_arguments_eagerly() -> None:
    with pytest.raises(UsageError, match=r"batch_size must be an integer >= 1; expected an int "
                                         r">= 1, got 0"):
        toy().batches(0, seed=0)  # no next(): the error comes at the call


def test_subset_by_indices_and_mask() -> None:
    ds = toy(10)
    sub = ds.subset([7, 2])
    np.testing.assert_array_equal(sub.x, [[14, 15], [4, 5]])
    np.testing.assert_array_equal(sub.y, [1, 2])
    assert (sub.classes, sub.name) == (3, "toy")
    assert len(ds.subset(ds.y == 0)) == 4
    with pytest.raises(UsageError, match=r"index out of range; expected indices in 0\.\.9"):
        ds.subset([10])
    with pytest.raises(ShapeError, match="boolean mask of the wrong length"):
        ds.subset(np.ones(3, dtype=bool))


def test_split_of_a_synthetic_set_is_stratified() -> None:
    train, test = make_blobs_dataset(120, 3, 2, seed=0).split(0.25, seed=0)
    assert (len(train), len(test)) == (90, 30)
    assert np.bincount(test.y).tolist() == [10, 10, 10]


# --- synthetic sets ------------------------------------------------------------------------

MAKERS = {
    "blobs": lambda seed: make_blobs_dataset(60, 3, 5, seed),
    "xor": lambda seed: make_xor(50, seed),
    "spirals": lambda seed: make_spirals(61, 3, seed),
    "images": lambda seed: make_images(40, 4, 8, seed),
}
SHAPES = {"blobs": ((60, 5), 3), "xor": ((50, 2), 2), "spirals": ((61, 2), 3),
          "images": ((40, 1, 8, 8), 4)}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_synthetic_sets_are_deterministic_and_shaped(name: str) -> None:
    ds, same, other = MAKERS[name](0), MAKERS[name](0), MAKERS[name](1)
    shape, classes = SHAPES[name]
    assert ds.x.shape == shape and ds.y.shape == shape[:1] and ds.classes == classes
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64 and ds.name == name
    np.testing.assert_array_equal(ds.x, same.x)
    np.testing.assert_array_equal(ds.y, same.y)
    assert not np.array_equal(ds.x, other.x)
    assert set(np.unique(ds.y)) == set(range(classes))


def test_balanced_classes() -> None:
    assert np.bincount(make_blobs_dataset(60, 3, 2, 0).y).tolist() == [20, 20, 20]
    assert np.bincount(make_spirals(61, 3, 0).y).tolist() == [21, 20, 20]
    assert np.bincount(make_images(40, 4, 8, 0).y).tolist() == [10, 10, 10, 10]


def test_xor_labels_are_correct_by_construction() -> None:
    ds = make_xor(500, seed=3)
    opposite = np.sign(ds.x[:, 0]) != np.sign(ds.x[:, 1])
    np.testing.assert_array_equal(ds.y, opposite.astype(np.int64))
    assert np.abs(ds.x).min() >= 0.1 and np.abs(ds.x).max() <= 1.0
    assert 200 < ds.y.sum() < 300
    # Not linearly separable: the best of many lines through the data stays near chance.
    angles = np.linspace(0, np.pi, 90)
    w = np.stack([np.cos(angles), np.sin(angles)])
    for b in (-0.5, 0.0, 0.5):
        scores = ((ds.x @ w + b) > 0) == ds.y[:, None].astype(bool)
        assert np.maximum(scores.mean(0), 1 - scores.mean(0)).max() < 0.8


def test_blobs_are_nearly_separable() -> None:
    ds = make_blobs_dataset(300, 4, 3, seed=2)
    means = np.stack([ds.x[ds.y == c].mean(0) for c in range(4)])
    nearest = np.argmin(np.linalg.norm(ds.x[:, None] - means[None], axis=-1), axis=1)
    assert (nearest == ds.y).mean() > 0.95


def test_images_show_their_class_bar() -> None:
    ds = make_images(200, 4, 8, seed=0)
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    brightest = ds.x[:, 0].mean(axis=2).argmax(axis=1)
    np.testing.assert_array_equal(brightest, [bar_row(c, 4, 8) for c in ds.y])
    assert [bar_row(c, 8, 8) for c in range(8)] == list(range(8))
    with pytest.raises(UsageError, match="more classes than bar rows"):
        make_images(20, 9, 8)
