"""Augmentation (images, rows, hidden features) and Augment pipelines, checked on real values."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from graphc.errors import GraphcError, ShapeError, UsageError
from graphc.train.augment import (
    AUGMENTATIONS,
    DIGITS_AUGMENT,
    Augment,
    add_noise,
    colour,
    crop_resize,
    feature_mixup,
    feature_noise,
    hflip,
    inject_outliers,
    mixup,
    random_crop,
    resize_bilinear,
    rotate,
    rotate_by,
    shift,
    tabular_noise,
    translate,
)
from graphc.train.data import Dataset, load_digits, one_hot


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def digits() -> tuple[Dataset, Dataset]:
    return load_digits()


def images(n: int = 6, c: int = 2, h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    return rng(seed).random((n, c, h, w)).astype(np.float32)


# --- augmentation: common contract ---------------------------------------------------------


def _mixup_x(x: np.ndarray, r: np.random.Generator) -> np.ndarray:
    return mixup(x, np.arange(len(x)) % 3, 3, 0.4, r)[0]


IMAGE_AUGMENTS = {
    "shift": lambda x, r: shift(x, 2, r),
    "rotate": lambda x, r: rotate(x, 15, r),
    "add_noise": lambda x, r: add_noise(x, 0.1, r),
    "random_crop": lambda x, r: random_crop(x, 8, 2, r),
    "hflip": lambda x, r: hflip(x, r),
    "colour": lambda x, r: colour(x, 0.2, 0.3, r),
    "crop_resize": lambda x, r: crop_resize(x, 0.6, r),
    "mixup": _mixup_x,
    "inject_outliers": lambda x, r: inject_outliers(x, 0.5, 3.0, r),
    "feature_noise": lambda x, r: feature_noise(x, 0.1, r),
    "feature_mixup": lambda x, r: feature_mixup(x, np.arange(len(x)) % 3, 3, 0.4, r)[0],
    "augment": lambda x, r: Augment.parse("shift=1,rotate=10,noise=0.05,crop=1,hflip")(
        x, np.zeros(len(x), dtype=np.int64), r)[0],
}


@pytest.mark.parametrize("name", sorted(IMAGE_AUGMENTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_augmentation_contract(name: str, dtype: type) -> None:
    fn = IMAGE_AUGMENTS[name]
    x = images(n=12).astype(dtype)
    before = x.copy()
    out = fn(x, rng(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(x, before)  # input untouched
    assert out is not x and not np.shares_memory(out, x)
    np.testing.assert_array_equal(fn(x, rng(5)), out)  # same generator state, same result
    assert not np.array_equal(fn(x, rng(6)), out)


@pytest.mark.parametrize("name", ["tabular_noise", "mixup", "inject_outliers", "feature_noise"])
def test_tabular_contract(name: str) -> None:
    fns = {"tabular_noise": lambda x, r: tabular_noise(x, 0.1, r),
           "mixup": _mixup_x,
           "inject_outliers": lambda x, r: inject_outliers(x, 0.25, 3.0, r),
           "feature_noise": lambda x, r: feature_noise(x, 0.1, r)}
    x = rng(1).normal(size=(16, 5)).astype(np.float32)
    before = x.copy()
    out = fns[name](x, rng(2))
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(fns[name](x, rng(2)), out)


def test_augmentations_refuse_bad_inputs() -> None:
    with pytest.raises(UsageError, match=r"rng must be a numpy random Generator; expected "
                                         r"np.random.Generator, got int\. Create one"):
        shift(images(), 1, 0)
    with pytest.raises(ShapeError, match=r"shift: needs a rank-4 batch; expected shape "
                                         r"\(N, C, H, W\), got shape \(6, 64\)\. Load image"):
        shift(images().reshape(6, -1)[:, :64], 1, rng())
    with pytest.raises(ShapeError, match="add_noise: needs floating-point values"):
        add_noise(np.zeros((3, 2), dtype=np.int64), 0.1, rng())
    with pytest.raises(UsageError, match=r"rotate: max_degrees is out of range; expected a "
                                         r"number in \[0, 180\], got 200"):
        rotate(images(), 200, rng())
    with pytest.raises(UsageError, match="crop larger than the padded image"):
        random_crop(images(), 13, 2, rng())


# --- augmentation: values ------------------------------------------------------------------


def pattern() -> np.ndarray:
    x = np.zeros((1, 1, 5, 5), dtype=np.float32)
    x[0, 0, 1, 2] = 1.0
    x[0, 0, 1, 3] = 2.0
    return x


def test_translate_moves_a_pattern_by_exactly_k() -> None:
    expected = np.zeros((5, 5), dtype=np.float32)  # down 2, left 1
    expected[3, 1] = 1.0
    expected[3, 2] = 2.0
    np.testing.assert_array_equal(translate(pattern(), 2, -1)[0, 0], expected)
    expected = np.zeros((5, 5), dtype=np.float32)  # right 1, up 1: the 2 reaches the last column
    expected[0, 3] = 1.0
    expected[0, 4] = 2.0
    np.testing.assert_array_equal(translate(pattern(), -1, 1)[0, 0], expected)
    expected = np.zeros((5, 5), dtype=np.float32)  # right 2: the 2 falls off, zero fill
    expected[1, 4] = 1.0
    np.testing.assert_array_equal(translate(pattern(), 0, 2)[0, 0], expected)
    np.testing.assert_array_equal(translate(pattern(), 0, 0), pattern())
    assert not translate(pattern(), 5, 0).any()


def test_shift_moves_every_sample_rigidly_within_max_shift() -> None:
    x = np.zeros((400, 1, 9, 9), dtype=np.float32)
    x[:, 0, 4, 4] = 1.0
    x[:, 0, 4, 5] = 2.0
    out = shift(x, 2, rng(0))
    offsets = set()
    for sample in out[:, 0]:
        (r1,), (c1,) = np.nonzero(sample == 1.0)
        (r2,), (c2,) = np.nonzero(sample == 2.0)
        assert (r2, c2) == (r1, c1 + 1) and sample.sum() == 3.0  # moved as one piece
        offsets.add((int(r1) - 4, int(c1) - 4))
    assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    np.testing.assert_array_equal(shift(x, 0, rng(0)), x)


def test_rotate_by_zero_is_identity() -> None:
    x = images()
    np.testing.assert_array_equal(rotate(x, 0, rng()), x)
    np.testing.assert_array_equal(rotate_by(x, 0), x)
    np.testing.assert_array_equal(rotate_by(x, 360)[:, :, 1:-1, 1:-1].round(5),
                                  x[:, :, 1:-1, 1:-1].round(5))


@pytest.mark.parametrize("size", [5, 8])
def test_rotate_by_90_is_rot90(size: int) -> None:
    x = images(h=size, w=size)
    for degrees, k in ((90, 1), (-90, -1), (180, 2)):
        out = rotate_by(x, degrees)
        expected = np.rot90(x, k, axes=(2, 3))
        np.testing.assert_allclose(out[:, :, 1:-1, 1:-1], expected[:, :, 1:-1, 1:-1], atol=1e-5)
        np.testing.assert_allclose(out, expected, atol=1e-5)  # on squares, the border too


def test_rotate_direction_and_interpolation_by_hand() -> None:
    x = np.zeros((1, 1, 3, 3), dtype=np.float32)
    x[0, 0, 0, 1] = 1.0  # top middle
    out = rotate_by(x, 90)[0, 0]  # counterclockwise: goes to the middle left
    np.testing.assert_allclose(out, [[0, 0, 0], [1, 0, 0], [0, 0, 0]], atol=1e-6)
    ones = rotate_by(np.ones((1, 1, 7, 7), dtype=np.float32), 30)[0, 0]
    np.testing.assert_allclose(ones[2:5, 2:5], 1.0, atol=1e-6)  # weights sum to one
    assert ones[0, 0] < 0.5  # corners come from outside: zero fill
    # 45 degrees counterclockwise on a 3x3: the output's top-middle pixel comes from the top
    # right, at row 1 - sin45 = 0.29, column 1 + sin45 = 1.71, among the pixels 1, 2, 4, 5.
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    fr = fc = 1 - np.sqrt(0.5)  # distances from row 0 and from column 2
    want = ((1 - fr) * fc * 1 + (1 - fr) * (1 - fc) * 2 + fr * fc * 4 + fr * (1 - fc) * 5)
    assert rotate_by(x, 45)[0, 0, 0, 1] == pytest.approx(want)


def test_rotate_angles_stay_within_max() -> None:
    x = np.zeros((200, 1, 9, 9), dtype=np.float64)
    x[:, 0, 4, 8] = 1.0  # a point 4 pixels right of the center
    out = rotate(x, 20, rng(0))
    rows, cols = np.indices((9, 9))
    mass = out[:, 0].sum(axis=(1, 2))
    angle = np.degrees(np.arctan2(-((out[:, 0] * (rows - 4)).sum(axis=(1, 2)) / mass),
                                  (out[:, 0] * (cols - 4)).sum(axis=(1, 2)) / mass))
    assert np.abs(angle).max() <= 20.5 and np.abs(angle).max() > 15
    assert angle.min() < -5 < 5 < angle.max()


def test_noise_statistics() -> None:
    zeros = np.zeros((100, 1, 64, 64), dtype=np.float32)
    noise = add_noise(zeros, 0.3, rng(0)).astype(np.float64)
    assert abs(noise.mean()) < 0.003 and abs(noise.std() - 0.3) < 0.003
    hidden = feature_noise(np.ones((2000, 200)), 0.5, rng(1)) - 1
    assert abs(hidden.mean()) < 0.005 and abs(hidden.std() - 0.5) < 0.005
    np.testing.assert_array_equal(add_noise(zeros[:2], 0.0, rng()), zeros[:2])


def test_tabular_noise_per_feature_std() -> None:
    x = np.zeros((50_000, 3), dtype=np.float32)
    out = tabular_noise(x, [0.0, 1.0, 0.1], rng(0))
    np.testing.assert_array_equal(out[:, 0], 0.0)
    np.testing.assert_allclose(out.std(axis=0), [0.0, 1.0, 0.1], rtol=0.02)
    with pytest.raises(UsageError, match="bad std; expected a number >= 0 or 3 of them"):
        tabular_noise(x, [1.0, 2.0], rng())


def test_random_crop_is_a_bounded_translation() -> None:
    x = images(n=50, c=1)
    np.testing.assert_array_equal(random_crop(x, None, 0, rng()), x)
    out = random_crop(x, 8, 2, rng(3))
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(out[i], translate(x[i:i + 1], dy, dx)[0])]
        assert len(matches) == 1
    assert random_crop(x, (6, 5), 0, rng()).shape == (50, 1, 6, 5)


def test_hflip_mirrors_with_probability_p() -> None:
    x = images(n=40)
    np.testing.assert_array_equal(hflip(x, rng(), p=1.0), x[..., ::-1])
    np.testing.assert_array_equal(hflip(x, rng(), p=0.0), x)
    out = hflip(x, rng(0))
    flipped = [np.array_equal(o, s[..., ::-1]) for o, s in zip(out, x, strict=True)]
    kept = [np.array_equal(o, s) for o, s in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 5 < sum(flipped) < 35


@pytest.mark.parametrize("fn", [mixup, feature_mixup])
def test_mixup_mixes_pairs_and_labels(fn: Callable[..., tuple[np.ndarray, np.ndarray]]) -> None:
    n, classes = 64, 4
    x = np.eye(n, dtype=np.float64)  # row i = e_i, so a mixed row shows its pair and weight
    y = np.arange(n) % classes
    mixed, soft = fn(x, y, classes, 0.4, rng(0))
    assert soft.shape == (n, classes) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    assert soft.min() >= 0 and soft.max() <= 1
    weights = []
    for i in range(n):
        lam = mixed[i, i]
        others = mixed[i].copy()
        others[i] = 0
        j = int(others.argmax()) if others.any() else i
        assert 0 <= lam <= 1 and mixed[i].sum() == pytest.approx(1.0)
        if j != i:
            np.testing.assert_allclose(mixed[i, j], 1 - lam)
        # (when i is its own partner, lam reads 1 and the label is one-hot either way)
        want = lam * one_hot([y[i]], classes)[0] + (1 - lam) * one_hot([y[j]], classes)[0]
        np.testing.assert_allclose(soft[i], want, atol=1e-6)
        weights.append(lam)
    assert 0.3 < np.std(weights)  # Beta(0.4, 0.4) is U-shaped: weights spread over [0, 1]


def test_mixup_composes_on_soft_labels_and_checks_classes() -> None:
    x = rng(0).random((10, 3))
    _, soft = mixup(x, np.arange(10) % 2, 2, 1.0, rng(1))
    _, again = mixup(x, soft, 2, 1.0, rng(2))
    np.testing.assert_allclose(again.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ShapeError, match=r"soft labels of the wrong width; expected shape "
                                         r"\(10, 3\), got shape \(10, 2\)"):
        mixup(x, soft, 3, 1.0, rng())
    with pytest.raises(UsageError, match=r"alpha is out of range; expected a number > 0"):
        mixup(x, np.zeros(10, dtype=int), 2, 0.0, rng())


def test_inject_outliers_fraction_is_exact() -> None:
    x = rng(0).normal(size=(200, 4)).astype(np.float32)
    for fraction, count in ((0.1, 20), (0.0, 0), (1.0, 200), (0.0125, 3)):  # 2.5 rounds up
        out = inject_outliers(x, fraction, 5.0, rng(1))
        changed = (out != x).any(axis=1)
        assert changed.sum() == count, fraction
    out = inject_outliers(x, 0.1, 5.0, rng(1))
    changed = (out != x).any(axis=1)
    assert np.abs(out - x)[changed].mean() > 2.0  # about 5 stds * sqrt(2/pi)


# --- Augment pipelines ---------------------------------------------------------------------


def test_augment_parse_and_print() -> None:
    aug = Augment.parse(" shift=1, rotate=10 ,noise=0.05,hflip=0.25,mixup=0.2", classes=10)
    assert aug.names == ("shift", "rotate", "noise", "hflip", "mixup")
    assert str(aug) == "shift=1,rotate=10,noise=0.05,hflip=0.25,mixup=0.2"
    assert Augment.parse(str(aug), classes=10) == aug
    assert Augment.parse("").steps == () and Augment.parse("none").steps == ()
    assert "hflip" not in Augment.parse(DIGITS_AUGMENT).names  # mirrored digits change meaning
    assert set(AUGMENTATIONS) == {"shift", "rotate", "noise", "crop", "hflip", "brightness",
                                  "contrast", "cropresize", "mixup", "outliers"}


def test_augment_runs_in_order_and_is_deterministic(digits: tuple[Dataset, Dataset]) -> None:
    train, _ = digits
    x, y = train.x[:32], train.y[:32]
    aug = Augment.parse(DIGITS_AUGMENT)
    out, labels = aug(x, y, rng(0))
    again, _ = aug(x, y, rng(0))
    np.testing.assert_array_equal(out, again)
    np.testing.assert_array_equal(labels, y)
    assert out.shape == x.shape and out.dtype == np.float32
    expected = add_noise(rotate(shift(x, 1, r := rng(0)), 10, r), 0.05, r)
    np.testing.assert_array_equal(out, expected)
    mixed, soft = Augment.parse("noise=0.1,mixup=0.2", classes=10)(train.x[:32], y, rng(0))
    assert soft.shape == (32, 10)
    flat, same = Augment.parse("noise=0.1,outliers=0.25")(train.x[:8].reshape(8, -1), y[:8],
                                                           rng(0))
    assert flat.shape == (8, 64) and (same == y[:8]).all()
    x_none, y_none = Augment.parse("none")(x, y, rng())
    np.testing.assert_array_equal(x_none, x)


@pytest.mark.parametrize(("spec", "message"), [
    ("shift=1,rotat=10", "augment item 'rotat=10': unknown augmentation 'rotat'; expected one "
     "of 'brightness', 'contrast', 'crop', 'cropresize', 'hflip', 'mixup', 'noise', "
     "'outliers', 'rotate', 'shift', got 'rotat'. Did you mean 'rotate'?"),
    ("nois=0.1", "Did you mean 'noise'?"),
    ("rotate=abc", "augment item 'rotate=abc': bad value for rotate; expected a number in "
     "[0, 180], got 'abc'. Write it as rotate=<value>."),
    ("shift=1.5", "bad value for shift; expected an integer in [0, 64], got '1.5'"),
    ("noise=-0.1", "bad value for noise; expected a number >= 0, got '-0.1'"),
    ("hflip=2", "bad value for hflip; expected a number in [0, 1], got '2'"),
    ("mixup=0", "bad value for mixup; expected a number > 0, got '0'"),
    ("noise=nan", "bad value for noise"),
    ("shift", "augment item 'shift': shift needs a value; expected shift=<value>, got 'shift'"),
    ("shift=1,shift=2", "shift given twice"),
    ("shift=1,", "unknown augmentation ''"),
])
def test_augment_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        Augment.parse(spec)
    assert message in str(err.value)


def test_augment_call_errors_name_the_step() -> None:
    with pytest.raises(UsageError, match=r"mixup: mixing integer labels needs the "
                                         r"number of classes.*classes="):
        Augment.parse("mixup=0.2")(np.zeros((4, 3)), np.zeros(4, dtype=int), rng())
    with pytest.raises(ShapeError, match=r"shift: needs a rank-4 batch.*layout='image'"):
        Augment.parse("shift=1")(np.zeros((4, 64)), np.zeros(4, dtype=int), rng())
    with pytest.raises(GraphcError, match="rng must be a numpy random Generator"):
        Augment.parse("noise=0.1")(np.zeros((4, 3)), np.zeros(4, dtype=int), 0)


# --- colour distortion and crop-then-resize ------------------------------------------------


def test_colour_is_contrast_around_the_mean_plus_brightness() -> None:
    x = images(n=200, c=2).astype(np.float64)
    out = colour(x, 0.3, 0.5, rng(3))
    mean = x.mean(axis=(2, 3), keepdims=True)
    # Per image: out = c * (x - m) + m + b, with one c and one b for all its channels.
    centred, moved = x - mean, out - mean
    c = (moved[..., 0, 1] - moved[..., 0, 0]) / (centred[..., 0, 1] - centred[..., 0, 0])
    b = moved[..., 0, 0] - c * centred[..., 0, 0]
    np.testing.assert_allclose(out, c[..., None, None] * centred + mean + b[..., None, None],
                               atol=1e-12)
    np.testing.assert_allclose(c[:, 0], c[:, 1], atol=1e-9)
    np.testing.assert_allclose(b[:, 0], b[:, 1], atol=1e-9)
    assert 0.5 <= c.min() and c.max() <= 1.5 and c.max() - c.min() > 0.8
    assert -0.3 <= b.min() and b.max() <= 0.3 and b.max() - b.min() > 0.5
    # Brightness alone keeps the contrast; contrast alone keeps each image's mean.
    np.testing.assert_allclose(colour(x, 0.0, 0.5, rng(4)).mean(axis=(2, 3)),
                               x.mean(axis=(2, 3)), atol=1e-12)
    diff = colour(x, 0.3, 0.0, rng(4)) - x
    np.testing.assert_allclose(diff, diff[..., :1, :1] * np.ones_like(x), atol=1e-12)


def test_resize_bilinear_matches_onnxruntime_resize() -> None:
    import onnx
    from onnx import TensorProto, helper

    from graphc.onnxio.runtime import session

    x = images(n=2, c=3, h=8, w=8)
    for size in ((5, 5), (8, 8), (12, 6), (3, 10)):
        node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                                coordinate_transformation_mode="half_pixel")
        graph = helper.make_graph(
            [node], "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, 3, *size))],
            [helper.make_tensor("sizes", TensorProto.INT64, (4,), [2, 3, *size])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(model)
        (want,) = session(model.SerializeToString()).run(None, {"x": x})
        np.testing.assert_allclose(resize_bilinear(x, size), want, rtol=0, atol=2e-6)


def test_crop_resize_is_a_zoom_into_a_window() -> None:
    x = images(n=5)
    np.testing.assert_array_equal(crop_resize(x, 1.0, rng()), x)  # the whole image
    # On an image linear in row and column, a bilinear zoom is linear again, with the slopes
    # multiplied by the window's scale s in [0.5, 1] (the same for rows and columns). Samples
    # 2..5 of each axis lie inside the pixel centres for any window (edges are clamped).
    rows, cols = np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij")
    ramp = np.broadcast_to(3 * rows + cols, (40, 1, 8, 8)).astype(np.float64)
    zoomed = crop_resize(ramp, 0.5, rng(2))[:, 0]
    out = zoomed[:, 2:6, 2:6]
    row_slope = np.diff(out, axis=1)
    col_slope = np.diff(out, axis=2)
    s = col_slope[:, 0, 0]
    np.testing.assert_allclose(row_slope, 3 * s[:, None, None] * np.ones_like(row_slope),
                               atol=1e-9)
    np.testing.assert_allclose(col_slope, s[:, None, None] * np.ones_like(col_slope),
                               atol=1e-9)
    assert 0.5 <= s.min() and s.max() <= 1.0 and s.max() - s.min() > 0.3
    # The window lies inside the image: every value is one of the image's range.
    assert zoomed.min() >= 0 and zoomed.max() <= 3 * 7 + 7


def test_colour_and_crop_resize_in_a_pipeline() -> None:
    aug = Augment.parse("brightness=0.1,contrast=0.2,cropresize=0.8")
    assert str(aug) == "brightness=0.1,contrast=0.2,cropresize=0.8"
    x, y = aug(images(n=4), np.arange(4), rng())
    assert x.shape == (4, 2, 8, 8) and y.tolist() == [0, 1, 2, 3]
    with pytest.raises(UsageError, match=r"bad value for cropresize; expected a number in "
                                         r"\(0, 1\], got '0'"):
        Augment.parse("cropresize=0")
