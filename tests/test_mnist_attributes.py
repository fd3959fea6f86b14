"""Shape measurements on drawn shapes whose answer is known, and the MNIST reader's attribute table."""

import numpy as np
import pytest

from halitool.data.attributes import ATTRIBUTE_NAMES, class_attributes, digit_attributes, measure_shapes
from halitool.data.base import open_dataset


def canvas(n: int = 1, size: int = 28) -> np.ndarray:
    return np.zeros((n, size, size), dtype=np.uint8)


def bar(width: int, length: int, shear: float = 0.0, size: int = 28) -> np.ndarray:
    """A vertical bar ``width`` x ``length`` centred on the canvas; each row shifted right by shear x height."""
    image = canvas(size=size)[0]
    top = (size - length) // 2
    for row in range(top, top + length):
        height_above_centre = (size - 1) / 2 - row
        left = int(round((size - width) / 2 + shear * height_above_centre))
        image[row, left : left + width] = 255
    return image


def box(width: int, height: int, size: int = 28) -> np.ndarray:
    image = canvas(size=size)[0]
    top, left = (size - height) // 2, (size - width) // 2
    image[top : top + height, left : left + width] = 255
    return image


def test_thickness_of_thin_and_thick_bars():
    shapes = measure_shapes(np.stack([bar(2, 20), bar(6, 20)]))
    # a w x L bar: area w*L, outline 2(w+L), so 2*area/outline = w*L/(w+L)
    np.testing.assert_allclose(shapes["thickness"], [2 * 20 / 22, 6 * 20 / 26], rtol=1e-5)
    assert shapes["thickness"][1] > 2 * shapes["thickness"][0]


def test_slant_of_upright_and_slanted_bars():
    upright, right, left = measure_shapes(np.stack([bar(3, 20), bar(3, 20, 0.4), bar(3, 20, -0.4)]))["slant"]
    assert abs(upright) < 1e-4
    assert right == pytest.approx(0.4, abs=0.03)
    assert left == pytest.approx(-0.4, abs=0.03)


def test_box_width_height_area():
    shapes = measure_shapes(np.stack([box(16, 8), box(4, 20)]))
    np.testing.assert_array_equal(shapes["width"], [16, 4])
    np.testing.assert_array_equal(shapes["height"], [8, 20])
    np.testing.assert_allclose(shapes["ink_area"], [128, 80])
    # sqrt(12) x the standard deviation of a uniform run of L rows is sqrt(L^2 - 1)
    np.testing.assert_allclose(shapes["vertical_spread"], [np.sqrt(63), np.sqrt(399)], rtol=1e-4)


def test_dim_pixels_are_outside_the_box_but_count_as_ink():
    image = box(6, 6)
    image[0, 0] = 100  # below the ink threshold: not in the bounding box
    shapes = measure_shapes(image[None])
    assert shapes["width"][0] == 6 and shapes["height"][0] == 6
    assert shapes["ink_area"][0] == pytest.approx(36 + 100 / 255)


def test_blank_image_measures_zero():
    shapes = measure_shapes(canvas(2))
    for values in shapes.values():
        np.testing.assert_array_equal(values, 0)


def test_channel_axis_accepted_and_checked():
    stack = np.stack([bar(2, 20), bar(6, 20)])
    np.testing.assert_array_equal(measure_shapes(stack[:, None])["thickness"], measure_shapes(stack)["thickness"])
    with pytest.raises(ValueError):
        measure_shapes(np.zeros((1, 3, 28, 28), dtype=np.uint8))


def test_thresholds_use_the_training_median_only():
    # train rows: thin, thin, thick, thick; test rows: all thick -> the median comes from train alone
    widths = [1, 2, 5, 6, 5, 6, 6]
    images = np.stack([bar(w, 20) for w in widths])
    split = np.array([0, 0, 0, 0, 2, 2, 2])
    table, names = digit_attributes(images, np.zeros(len(widths), dtype=np.int64), split)
    thick = table[:, names.index("thick")]
    np.testing.assert_array_equal(thick, [0, 0, 1, 1, 1, 1, 1])


def test_class_attributes_known_answers():
    labels = np.arange(10)
    attrs = class_attributes(labels)
    np.testing.assert_array_equal(np.flatnonzero(attrs["even"]), [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(np.flatnonzero(attrs["closed_loop"]), [0, 6, 8, 9])
    np.testing.assert_array_equal(np.flatnonzero(attrs["greater_than_4"]), [5, 6, 7, 8, 9])


def test_mnist_reader_attaches_attributes(mnist_dir):
    ds = open_dataset(f"mnist:{mnist_dir}")
    assert ds.attribute_names == list(ATTRIBUTE_NAMES)
    assert ds.attributes.shape == (len(ds), len(ATTRIBUTE_NAMES)) and ds.attributes.dtype == np.int8
    assert set(np.unique(ds.attributes)) <= {0, 1}
    even = ds.attributes[:, ds.attribute_names.index("even")]
    np.testing.assert_array_equal(even, (ds.labels % 2 == 0).astype(np.int8))
    train = ds.indices("train")
    for name in ("thick", "slanted", "tall", "inky"):
        rate = ds.attributes[train, ds.attribute_names.index(name)].mean()
        assert 0.3 <= rate <= 0.5, (name, rate)  # strictly above the median: at most half, ties pull it lower


def test_mnist_attributes_match_the_measurements(mnist_dir):
    ds = open_dataset(f"mnist:{mnist_dir}")
    shapes = measure_shapes(ds.images(ds.indices("all")))
    train = ds.split == 0
    inky = shapes["ink_area"] > np.median(shapes["ink_area"][train])
    np.testing.assert_array_equal(ds.attributes[:, ds.attribute_names.index("inky")], inky.astype(np.int8))


def test_class_derived_attributes_are_not_invented_for_classes_that_are_not_digits(tmp_path):
    from halitool.data import open_dataset
    from halitool.data.attributes import MEASURED
    from helpers import write_mnist

    fashion = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]
    named = open_dataset(f"mnist:{write_mnist(tmp_path / 'fashion', classes=fashion)}")
    assert named.attribute_names == list(MEASURED) and named.attributes.shape == (len(named), len(MEASURED))
    assert named.class_names == fashion
    # Labels 0-9 and no classes.txt: not MNIST's own labels, so nothing says these are digits.
    unnamed = open_dataset(f"mnist:{write_mnist(tmp_path / 'plain', classes=None)}")
    assert unnamed.attribute_names == list(MEASURED) and unnamed.class_names == [str(d) for d in range(10)]
    # The measured attributes are the same whatever the classes are.
    np.testing.assert_array_equal(named.attributes, unnamed.attributes)


def test_mnist_own_training_labels_make_the_classes_digits(tmp_path, monkeypatch):
    import hashlib

    from halitool.data import mnist, open_dataset
    from helpers import write_mnist

    root = write_mnist(tmp_path / "m", classes=None)
    digest = hashlib.md5((root / "train-labels-idx1-ubyte").read_bytes()).hexdigest()
    assert open_dataset(f"mnist:{root}").attribute_names != list(ATTRIBUTE_NAMES)
    monkeypatch.setitem(mnist.MNIST_FILES, "train-labels-idx1-ubyte", (digest, 208))  # as if these were MNIST's
    assert open_dataset(f"mnist:{root}").attribute_names == list(ATTRIBUTE_NAMES)


def test_a_class_names_file_that_does_not_fit_the_labels_is_exit_3(tmp_path):
    from helpers import run_cli, write_mnist

    root = write_mnist(tmp_path / "m", classes=["a", "b"])
    code, _, stderr = run_cli(["data", "info", f"mnist:{root}"])
    assert code == 3 and "classes.txt" in stderr and "2 class names" in stderr
