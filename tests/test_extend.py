"""Extending a training set with new samples: class averages, outlier rows, foreign objects."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.errors import ShapeError, UsageError
from graphc.train.augment import OUTLIER_SCALE
from graphc.train.data import Dataset, make_blobs_dataset
from graphc.train.extend import (
    EXTENSIONS,
    Extend,
    class_averages,
    foreign_objects,
    outlier_rows,
)
from graphc.train.loop import TrainConfig, train


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def toy() -> tuple[np.ndarray, np.ndarray]:
    x = rng(1).normal(size=(30, 3)).astype(np.float32)
    return x, np.arange(30) % 3


def test_class_averages_are_means_of_two_objects_of_their_class() -> None:
    x, y = toy()
    new, labels = class_averages(x, y, 50, rng())
    assert new.shape == (50, 3) and new.dtype == np.float32 and labels.shape == (50,)
    for row, label in zip(new, labels, strict=True):
        members = x[y == label]
        # Some pair of different members averages to this row (checked against all pairs).
        pairs = (members[:, None] + members[None, :]) / 2
        hits = np.argwhere(np.abs(pairs - row).max(axis=2) < 1e-6)
        assert any(i != j for i, j in hits)
    assert set(labels.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(x, toy()[0])  # the data is not changed


def test_class_averages_by_hand_and_refusals() -> None:
    x = np.array([[0.0], [2.0], [10.0]], np.float32)
    new, labels = class_averages(x, np.array([0, 0, 1]), 3, rng())
    assert new.ravel().tolist() == [1.0, 1.0, 1.0] and labels.tolist() == [0, 0, 0]
    with pytest.raises(UsageError, match="no class has two objects to average"):
        class_averages(x[:2], np.array([0, 1]), 1, rng())
    with pytest.raises(ShapeError, match=r"needs one integer class label per object; "
                                         r"expected shape \(3,\) int"):
        class_averages(x, np.array([0.0, 1.0, 1.0]), 1, rng())


def test_outlier_rows_are_far_copies_with_their_labels() -> None:
    x = rng(2).normal(size=(500, 4)).astype(np.float64) * [1.0, 2.0, 0.5, 3.0]
    y = np.arange(500) % 5
    new, labels = outlier_rows(x, y, 2000, OUTLIER_SCALE, rng(3))
    assert new.shape == (2000, 4) and labels.shape == (2000,)
    # Each new row is an existing row of its label plus noise: the nearest row of that label
    # is at about scale * std per feature, far more than rows are from each other.
    spread = x.std(axis=0)
    distance = np.abs(new[:, None, :] - x[None, :, :]) / spread
    nearest = np.min(distance.max(axis=2) + 1e9 * (labels[:, None] != y[None, :]), axis=1)
    assert np.median(nearest) > 2.0


def test_outlier_noise_has_the_stated_std() -> None:
    x = np.array([[0.0, 0.0], [2.0, 20.0]])  # feature stds 1 and 10
    new, labels = outlier_rows(x, np.array([0, 1]), 20000, 3.0, rng(5))
    base = x[labels]
    np.testing.assert_allclose((new - base).std(axis=0), [3.0, 30.0], rtol=0.03)
    np.testing.assert_allclose((new - base).mean(axis=0), [0.0, 0.0], atol=0.1 * 30 / 10)


def test_foreign_objects_have_the_datas_moments_and_a_given_source_is_sampled() -> None:
    x = rng(6).normal(loc=[1.0, -2.0], scale=[0.5, 3.0], size=(4000, 2))
    new = foreign_objects(x, 20000, rng(7))
    np.testing.assert_allclose(new.mean(axis=0), x.mean(axis=0), atol=0.06)
    np.testing.assert_allclose(new.std(axis=0), x.std(axis=0), rtol=0.03)
    source = np.array([[5.0, 5.0], [6.0, 6.0]])
    picked = foreign_objects(x, 10, rng(), source=source)
    assert {tuple(r) for r in picked.tolist()} <= {(5.0, 5.0), (6.0, 6.0)}
    with pytest.raises(ShapeError, match=r"foreign objects of another shape; expected objects "
                                         r"of shape \(2,\), got shape \(3,\)"):
        foreign_objects(x, 1, rng(), source=np.zeros((2, 3)))


def test_extend_spec_labels_and_order() -> None:
    data = Dataset(*toy(), classes=3, name="toy")
    spec = Extend.parse(" averages=4, foreign=3 ,outliers=2")
    assert str(spec) == "averages=4,foreign=3,outliers=2" and set(EXTENSIONS) == {
        "averages", "outliers", "foreign"}
    x, soft = spec(data, rng())
    assert x.shape == (9, 3) and soft.shape == (9, 3) and soft.dtype == np.float32
    np.testing.assert_array_equal(soft.sum(axis=1), np.ones(9))
    assert (soft[:4].max(axis=1) == 1).all() and (soft[7:].max(axis=1) == 1).all()
    np.testing.assert_allclose(soft[4:7], np.full((3, 3), 1 / 3))
    again, _ = spec(data, rng())
    np.testing.assert_array_equal(x, again)
    assert Extend.parse("none")(data, rng())[0].shape == (0, 3)


@pytest.mark.parametrize(("spec", "message"), [
    ("average=5", "unknown data set extension 'average'"),
    ("averages", "bad count for averages; expected averages=<new samples, 0..1,000,000>"),
    ("averages=-1", "bad count for averages"),
    ("foreign=2000000", "bad count for foreign"),
    ("foreign=1,foreign=2", "foreign given twice"),
])
def test_extend_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        Extend.parse(spec)
    assert message in str(err.value)


def mlp(batch: int):
    from graphc import GraphBuilder, nn

    b = GraphBuilder("mlp")
    x = b.input("x", (batch, 2))
    b.output(nn.linear(nn.relu(nn.linear(x, 16, name="fc1")), 3, name="fc2"), "logits")
    return b.build()


def test_training_on_an_extended_set_counts_only_labeled_samples() -> None:
    train_set, test_set = make_blobs_dataset(n=120, classes=3, seed=1).split(seed=0)
    config = TrainConfig(epochs=2, batch=10, seed=2, extend="averages=30,foreign=30")
    result = train(mlp, train_set, test_set, config, progress=False)
    plain = train(mlp, train_set, test_set, TrainConfig(epochs=2, batch=10, seed=2),
                  progress=False)
    # 90 samples + 60 new, 15 full batches an epoch against 9.
    assert result.steps == 2 * 15 and plain.steps == 2 * 9
    assert 0.0 <= result.history[-1].train_accuracy <= 1.0
    assert result.history[-1].test_accuracy > 0.8
    with pytest.raises(UsageError, match="unknown data set extension 'blobs'"):
        TrainConfig(extend="blobs=3")
