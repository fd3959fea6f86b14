"""The folder: reader on generated folders of lossless images with an attributes.csv."""

import json

import numpy as np
import pytest
from PIL import Image

from helpers import folder_truth, run_cli, write_image_folder
from halitool.data import open_dataset
from halitool.data.folder import open_folder
from halitool.errors import BadInputError


def test_known_answers(image_folder_dir):
    truth = folder_truth(6)
    ds = open_dataset(f"folder:{image_folder_dir}")
    assert ds.kind == "folder" and len(ds) == 6
    assert ds.filenames == truth.names and ds.filenames == sorted(ds.filenames)
    assert ds.image_shape == (3, 30, 30)  # the first image's shorter side, square
    np.testing.assert_array_equal(ds.sample_ids, np.arange(6))
    assert ds.attribute_names == ["bright", "reddish"]
    np.testing.assert_array_equal(ds.attributes, truth.attributes)  # csv rows are reversed: matched by name
    assert ds.split_counts() == {"train": 6, "valid": 0, "test": 0}
    images = ds.images(ds.indices("all"))
    # solid colours survive the lossless formats, the crop and the resize
    np.testing.assert_allclose(images.mean(axis=(2, 3)), truth.colours, atol=1)
    assert ds.preprocessing == {"crop": "largest_square", "size": 30, "resample": "lanczos",
                                "value_range": [0, 255], "channels": 3}


def test_size_option_and_split_column(tmp_path):
    root = write_image_folder(tmp_path / "f", n=7, split=True)
    truth = folder_truth(7)
    ds = open_folder(root, size=16)
    assert ds.image_shape == (3, 16, 16) and ds.preprocessing["size"] == 16
    np.testing.assert_array_equal(ds.split, truth.split)
    np.testing.assert_array_equal(ds.images([4])[0, :, 0, 0], truth.colours[4])


def test_numeric_split_column(image_folder_dir):
    csv = image_folder_dir / "attributes.csv"
    lines = csv.read_text().splitlines()
    lines = [lines[0] + ",split"] + [line + ",2" for line in lines[1:]]
    csv.write_text("\n".join(lines) + "\n")
    assert open_folder(image_folder_dir).split_counts() == {"train": 0, "valid": 0, "test": 6}


def test_greyscale_folder_gives_one_channel(tmp_path):
    # n=3: png, bmp, png (WebP has no greyscale mode, so a grey .webp would read as RGB)
    root = write_image_folder(tmp_path / "g", n=3, grey=True, attributes=False)
    ds = open_dataset(f"folder:{root}")
    assert ds.image_shape == (1, 30, 30) and ds.attributes is None and ds.attribute_names == []
    with Image.open(root / ds.filenames[2]) as image:
        expected = np.asarray(image)[0, 0]
    assert np.all(ds.images([2]) == expected)


def test_one_colour_image_makes_the_folder_rgb(tmp_path):
    root = write_image_folder(tmp_path / "g", n=3, grey=True, attributes=False)
    Image.new("RGB", (30, 30), (255, 0, 0)).save(root / "zz_red.png")
    ds = open_dataset(f"folder:{root}")
    assert ds.image_shape == (3, 30, 30)
    np.testing.assert_array_equal(ds.images([3])[0, :, 5, 5], [255, 0, 0])


def test_centre_crop_of_a_wide_image(tmp_path):
    root = tmp_path / "wide"
    root.mkdir()
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, 20:40] = 255  # the centred 20x20 square is white, the sides black
    Image.fromarray(pixels).save(root / "a.png")
    images = open_folder(root).images([0])
    assert images.shape == (1, 3, 20, 20) and np.all(images == 255)


def test_data_info_json(image_folder_dir):
    code, out, err = run_cli(["data", "info", f"folder:{image_folder_dir}", "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "folder" and doc["image_shape"] == [3, 30, 30]
    assert [a["name"] for a in doc["attributes"]] == ["bright", "reddish"]


def one_error(code, out, err, expected_code=3):
    assert code == expected_code and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), err
    return lines[0]


def rewrite_csv(root, old, new):
    csv = root / "attributes.csv"
    csv.write_text(csv.read_text().replace(old, new, 1))


def test_non_binary_value_names_line_and_column(image_folder_dir):
    rewrite_csv(image_folder_dir, "img_002.png,", "img_002.png,7")
    lines = (image_folder_dir / "attributes.csv").read_text().splitlines()
    row = next(i for i, line in enumerate(lines, start=1) if line.startswith("img_002.png"))
    line = one_error(*run_cli(["data", "info", f"folder:{image_folder_dir}"]))
    assert "attributes.csv" in line and f"line {row}" in line and "'bright'" in line


def test_mixed_zero_and_minus_one_is_refused(image_folder_dir):
    csv = image_folder_dir / "attributes.csv"
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",0"  # reddish is -1/1 elsewhere
    csv.write_text("\n".join(lines) + "\n")
    line = one_error(*run_cli(["data", "info", f"folder:{image_folder_dir}"]))
    assert "'reddish'" in line


def test_unknown_file_name(image_folder_dir):
    rewrite_csv(image_folder_dir, "img_001.bmp", "nobody.png")
    line = one_error(*run_cli(["data", "info", f"folder:{image_folder_dir}"]))
    assert "'nobody.png' is not an image file" in line


def test_image_without_a_row(image_folder_dir):
    csv = image_folder_dir / "attributes.csv"
    csv.write_text("\n".join(line for line in csv.read_text().splitlines() if "img_004" not in line) + "\n")
    line = one_error(*run_cli(["data", "info", f"folder:{image_folder_dir}"]))
    assert "img_004" in line and "no row" in line


def test_missing_filename_column(image_folder_dir):
    rewrite_csv(image_folder_dir, "filename,", "file,")
    line = one_error(*run_cli(["data", "info", f"folder:{image_folder_dir}"]))
    assert "'filename'" in line


def test_bad_split_word(tmp_path):
    root = write_image_folder(tmp_path / "f", n=3, split=True)
    rewrite_csv(root, ",valid", ",validation")
    line = one_error(*run_cli(["data", "info", f"folder:{root}"]))
    assert "'validation'" in line


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    line = one_error(*run_cli(["data", "info", f"folder:{tmp_path}"]))
    assert "no image files" in line


def test_undecodable_image_names_the_file(image_folder_dir):
    (image_folder_dir / "img_001.bmp").write_bytes(b"BM not really")
    line = one_error(*run_cli(["data", "info", f"folder:{image_folder_dir}"]))
    assert "img_001.bmp" in line and "cannot decode" in line


def test_image_removed_after_opening(image_folder_dir):
    ds = open_folder(image_folder_dir)
    (image_folder_dir / ds.filenames[1]).unlink()
    with pytest.raises(BadInputError, match="image file is missing"):
        ds.images([1])
