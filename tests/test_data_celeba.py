"""The celeba: reader on generated trees in the official txt layout and the CSV redistribution."""

import json

import numpy as np
import pytest
from PIL import Image

from helpers import (
    CELEBA_ATTRIBUTES,
    FEMALE_RED,
    MALE_RED,
    NOT_SMILING_GREEN,
    SMILING_GREEN,
    celeba_truth,
    run_cli,
    write_celeba,
)
from halitool.data import open_dataset
from halitool.data.celeba import open_celeba
from halitool.errors import BadInputError, UsageError


@pytest.mark.parametrize("fixture", ["celeba_dir", "celeba_csv_dir"])
def test_tables_known_answers(fixture, request):
    root = request.getfixturevalue(fixture)
    truth = celeba_truth(10)
    ds = open_dataset(f"celeba:{root}")
    assert ds.kind == "celeba" and len(ds) == 10
    assert ds.attribute_names == list(CELEBA_ATTRIBUTES)
    np.testing.assert_array_equal(ds.attributes, truth.attributes)
    assert ds.attributes.dtype == np.int8
    np.testing.assert_array_equal(ds.split, truth.split)
    assert ds.split_counts() == {"train": 6, "valid": 2, "test": 2}
    np.testing.assert_array_equal(ds.sample_ids, np.arange(1, 11))
    assert ds.filenames == truth.names
    assert ds.image_shape == (3, 64, 64)
    assert ds.preprocessing["crop"] == 140 and ds.preprocessing["size"] == 64
    assert ds.preprocessing["channels"] == 3 and ds.preprocessing["value_range"] == [0, 255]
    assert ds.preprocessing["layout"] == ("txt" if fixture == "celeba_dir" else "csv")


@pytest.mark.parametrize("fixture", ["celeba_dir", "celeba_csv_dir"])
def test_images_carry_the_attributes(fixture, request):
    root = request.getfixturevalue(fixture)
    truth = celeba_truth(10)
    ds = open_dataset(f"celeba:{root}")
    order = np.array([7, 0, 3])  # any order, returned in that order
    images = ds.images(order).astype(np.float64)
    assert images.shape == (3, 3, 64, 64)
    male = truth.attributes[order, CELEBA_ATTRIBUTES.index("Male")]
    smiling = truth.attributes[order, CELEBA_ATTRIBUTES.index("Smiling")]
    corner_red = images[:, 0, :8, :8].mean(axis=(1, 2))
    centre_green = images[:, 1, 28:36, 28:36].mean(axis=(1, 2))
    # JPEG's colour subsampling moves solid colours by a few levels
    np.testing.assert_allclose(corner_red, np.where(male, MALE_RED, FEMALE_RED), atol=15)
    np.testing.assert_allclose(centre_green, np.where(smiling, SMILING_GREEN, NOT_SMILING_GREEN), atol=15)
    # the 140-pixel centre crop removes the blue frame drawn outside it (JPEG bleeds a little at the edge)
    assert images[:, 2].mean() < 10


def test_crop_and_size_options_are_applied_and_recorded(celeba_dir):
    ds = open_celeba(celeba_dir, crop=178, size=32)
    assert ds.image_shape == (3, 32, 32)
    assert ds.preprocessing["crop"] == 178 and ds.preprocessing["size"] == 32
    images = ds.images([0])
    # a 178-pixel square reaches 19-20 pixels beyond the 140 box on every side: the blue frame shows there
    blue = images[0, 2].astype(float)
    assert blue[:2].mean() > 200 and blue[:, :2].mean() > 200
    assert blue[8:24, 8:24].mean() < 10


def test_bad_options_are_usage_errors(celeba_dir):
    with pytest.raises(UsageError):
        open_celeba(celeba_dir, crop=0)
    with pytest.raises(UsageError):
        open_celeba(celeba_dir, size=-1)


def test_crop_larger_than_image_names_the_file(celeba_dir):
    ds = open_celeba(celeba_dir, crop=200)
    with pytest.raises(BadInputError, match="000001.jpg.*smaller than"):
        ds.images([0])


def test_parallel_batches_equal_serial(celeba_dir):
    ds = open_dataset(f"celeba:{celeba_dir}")
    serial = list(ds.iter_batches(ds.indices("all"), batch_size=3))
    parallel = list(ds.iter_batches(ds.indices("all"), batch_size=3, workers=2))
    assert [len(i) for i, _ in parallel] == [3, 3, 3, 1]
    for (i1, x1), (i2, x2) in zip(serial, parallel):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(x1, x2)


def test_opening_decodes_nothing(celeba_dir):
    for path in (celeba_dir / "img_align_celeba").glob("*.jpg"):
        path.write_bytes(b"")  # every image broken: opening must still work, decoding must not
    ds = open_dataset(f"celeba:{celeba_dir}")
    assert len(ds) == 10
    with pytest.raises(BadInputError):
        ds.images([0])


def test_data_info_json(celeba_dir):
    code, out, err = run_cli(["data", "info", f"celeba:{celeba_dir}", "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    truth = celeba_truth(10)
    assert doc["kind"] == "celeba" and doc["splits"] == {"train": 6, "valid": 2, "test": 2}
    assert doc["image_shape"] == [3, 64, 64] and doc["classes"] is None
    assert [a["name"] for a in doc["attributes"]] == list(CELEBA_ATTRIBUTES)
    np.testing.assert_allclose([a["positive_rate"] for a in doc["attributes"]], truth.attributes.mean(axis=0))


def test_real_file_quirks(tmp_path):
    """Windows line ends, a blank last line and extra spaces: all parse as in the clean file."""
    root = write_celeba(tmp_path / "c", n=4)
    attr = root / "list_attr_celeba.txt"
    text = attr.read_text().replace(" ", "   ").replace("\n", "\r\n") + "\r\n"
    attr.write_bytes(text.encode())
    ds = open_dataset(f"celeba:{root}")
    np.testing.assert_array_equal(ds.attributes, celeba_truth(4).attributes)


# Bad input through the CLI: exit 3 (2 for usage), one Error: line naming the file, nothing on stdout.

def one_error(code, out, err, expected_code=3):
    assert code == expected_code and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), err
    return lines[0]


def test_attribute_row_with_too_few_values_names_the_line(celeba_dir):
    attr = celeba_dir / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    lines[5] = lines[5].rsplit(" ", 3)[0]  # line 6 of the file (the 4th image) loses values
    attr.write_text("\n".join(lines) + "\n")
    line = one_error(*run_cli(["data", "info", f"celeba:{celeba_dir}"]))
    assert "list_attr_celeba.txt" in line and "line 6" in line and "too few" in line


def test_csv_attribute_row_with_too_few_values_names_the_line(celeba_csv_dir):
    attr = celeba_csv_dir / "list_attr_celeba.csv"
    lines = attr.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]
    attr.write_text("\n".join(lines) + "\n")
    line = one_error(*run_cli(["data", "info", f"celeba:{celeba_csv_dir}"]))
    assert "list_attr_celeba.csv" in line and "line 3" in line


def test_attribute_value_not_plus_minus_one(celeba_dir):
    attr = celeba_dir / "list_attr_celeba.txt"
    attr.write_text(attr.read_text().replace("000002.jpg -1", "000002.jpg  0").replace("000002.jpg  1", "000002.jpg  0"))
    line = one_error(*run_cli(["data", "info", f"celeba:{celeba_dir}"]))
    assert "line 4" in line and "'0'" in line


def test_count_line_disagrees(celeba_dir):
    attr = celeba_dir / "list_attr_celeba.txt"
    attr.write_text("11\n" + attr.read_text().split("\n", 1)[1])
    line = one_error(*run_cli(["data", "info", f"celeba:{celeba_dir}"]))
    assert "line 1 says 11" in line


def test_partition_missing_an_image(celeba_dir):
    part = celeba_dir / "list_eval_partition.txt"
    part.write_text("\n".join(part.read_text().splitlines()[:-1]) + "\n")
    line = one_error(*run_cli(["data", "info", f"celeba:{celeba_dir}"]))
    assert "list_eval_partition.txt" in line and "000010.jpg" in line


def test_not_a_celeba_folder(tmp_path):
    line = one_error(*run_cli(["data", "info", f"celeba:{tmp_path}"]))
    assert "list_attr_celeba" in line


def test_missing_image_names_the_file(celeba_dir):
    (celeba_dir / "img_align_celeba" / "000004.jpg").unlink()
    ds = open_dataset(f"celeba:{celeba_dir}")
    ds.images([0, 1, 2])  # the others still decode
    with pytest.raises(BadInputError, match=r"000004\.jpg: image file is missing"):
        ds.images([3])


def test_undecodable_image_names_the_file(celeba_dir):
    path = celeba_dir / "img_align_celeba" / "000002.jpg"
    path.write_bytes(path.read_bytes()[: 300])  # a truncated JPEG
    ds = open_dataset(f"celeba:{celeba_dir}")
    with pytest.raises(BadInputError, match=r"000002\.jpg: cannot decode image"):
        list(ds.iter_batches(ds.indices("all"), batch_size=4, workers=2))


def test_not_a_jpeg_names_the_file(celeba_csv_dir):
    path = celeba_csv_dir / "img_align_celeba" / "img_align_celeba" / "000005.jpg"
    path.write_text("this is not an image")
    ds = open_dataset(f"celeba:{celeba_csv_dir}")
    with pytest.raises(BadInputError, match=r"000005\.jpg: cannot decode image"):
        ds.images([4])


def test_generated_jpegs_look_like_celeba(celeba_dir):
    with Image.open(celeba_dir / "img_align_celeba" / "000001.jpg") as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (178, 218)
    lines = (celeba_dir / "list_attr_celeba.txt").read_text().split("\n")
    assert lines[0] == "10" and lines[1].endswith(" ") and "  " in lines[2]


def test_check_decodes_every_image(celeba_dir):
    code, out, err = run_cli(["data", "info", f"celeba:{celeba_dir}", "--check", "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["images_checked"] == 10


def test_check_missing_image_exit_3_names_the_file(celeba_dir):
    (celeba_dir / "img_align_celeba" / "000009.jpg").unlink()
    line = one_error(*run_cli(["data", "info", f"celeba:{celeba_dir}", "--check"]))
    assert "000009.jpg" in line and "missing" in line


def test_check_undecodable_image_exit_3_names_the_file(celeba_csv_dir):
    path = celeba_csv_dir / "img_align_celeba" / "img_align_celeba" / "000003.jpg"
    path.write_bytes(path.read_bytes()[:300])
    line = one_error(*run_cli(["data", "info", f"celeba:{celeba_csv_dir}", "--check", "--format", "json"]))
    assert "000003.jpg" in line and "cannot decode" in line
