"""The mnist: reader on IDX files written byte by byte, and every kind of bad IDX input through the CLI."""

import gzip
import struct

import numpy as np
import pytest

from helpers import run_cli, write_mnist
from halitool.data import open_dataset
from halitool.data.idx import encode_idx


def write_arrays(root, train_x, train_y, test_x, test_y, gz=False):
    root.mkdir(parents=True, exist_ok=True)
    for name, array in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                        ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        data = encode_idx(array)
        (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_known_values(tmp_path, gz):
    train_x = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    test_x = 255 - np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    root = write_arrays(tmp_path / "m", train_x, np.array([2, 0, 1], np.uint8), test_x, np.array([1, 1], np.uint8), gz)
    ds = open_dataset(f"mnist:{root}")
    assert ds.image_shape == (1, 4, 5) and len(ds) == 5
    np.testing.assert_array_equal(ds.images([0, 1, 2, 3, 4])[:, 0], np.concatenate([train_x, test_x]))
    np.testing.assert_array_equal(ds.images([4, 0])[:, 0], np.stack([test_x[1], train_x[0]]))
    np.testing.assert_array_equal(ds.labels, [2, 0, 1, 1, 1])
    np.testing.assert_array_equal(ds.split, [0, 0, 0, 2, 2])
    np.testing.assert_array_equal(ds.sample_ids, np.arange(5))
    assert ds.class_names == ["0", "1", "2"] and ds.filenames is None
    assert ds.preprocessing["channels"] == 1 and ds.preprocessing["size"] == [4, 5]
    np.testing.assert_array_equal(ds.indices("test"), [3, 4])


def test_gz_and_plain_agree(tmp_path):
    plain = open_dataset(f"mnist:{write_mnist(tmp_path / 'p', seed=3)}")
    packed = open_dataset(f"mnist:{write_mnist(tmp_path / 'g', gz=True, seed=3)}")
    np.testing.assert_array_equal(plain.images(plain.indices()), packed.images(packed.indices()))
    np.testing.assert_array_equal(plain.labels, packed.labels)
    np.testing.assert_array_equal(plain.attributes, packed.attributes)


def test_batches_cover_every_row_in_order(mnist_dir):
    ds = open_dataset(f"mnist:{mnist_dir}")
    rows = np.concatenate([r for r, _ in ds.iter_batches(ds.indices("train"), 64, workers=2)])
    np.testing.assert_array_equal(rows, np.arange(200))


# Bad input: documented exit code, exactly one Error: line naming the file, nothing on stdout.

def one_error(args, expected_code=3):
    code, out, err = run_cli(args)
    assert code == expected_code and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), err
    return lines[0]


def test_truncated_idx(mnist_dir):
    path = mnist_dir / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    line = one_error(["data", "info", f"mnist:{mnist_dir}"])
    assert "t10k-images-idx3-ubyte" in line and "truncated" in line


def test_truncated_header(mnist_dir):
    (mnist_dir / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00")
    line = one_error(["data", "info", f"mnist:{mnist_dir}"])
    assert "train-labels-idx1-ubyte" in line and "header" in line


def test_wrong_magic(mnist_dir):
    path = mnist_dir / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    line = one_error(["data", "info", f"mnist:{mnist_dir}"])
    assert "train-images-idx3-ubyte" in line and "magic" in line


def test_header_size_mismatch_extra_bytes(mnist_dir):
    path = mnist_dir / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00" * 7)
    line = one_error(["data", "info", f"mnist:{mnist_dir}"])
    assert "train-labels-idx1-ubyte" in line and "7 bytes beyond" in line


def test_header_declares_more_images(mnist_dir):
    path = mnist_dir / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack(">I", 201)  # 200 images follow
    path.write_bytes(bytes(data))
    line = one_error(["data", "info", f"mnist:{mnist_dir}"])
    assert "train-images-idx3-ubyte" in line and "(201, 28, 28)" in line


def test_image_label_count_mismatch(mnist_dir):
    (mnist_dir / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(np.zeros(49, dtype=np.uint8)))
    line = one_error(["data", "info", f"mnist:{mnist_dir}"])
    assert "49 labels for 50 images" in line


def test_wrong_dimensions(mnist_dir):
    (mnist_dir / "t10k-images-idx3-ubyte").write_bytes(encode_idx(np.zeros((50, 784), dtype=np.uint8)))
    line = one_error(["data", "info", f"mnist:{mnist_dir}"])
    assert "t10k-images-idx3-ubyte" in line and "3 dimensions" in line


def test_corrupt_gz(tmp_path):
    root = write_mnist(tmp_path / "m", gz=True)
    path = root / "train-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # damage the deflate stream, keep the gzip magic
    path.write_bytes(bytes(data))
    line = one_error(["data", "info", f"mnist:{root}"])
    assert "train-images-idx3-ubyte.gz" in line and "cannot read" in line


def test_truncated_gz(tmp_path):
    root = write_mnist(tmp_path / "m", gz=True)
    path = root / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    line = one_error(["data", "info", f"mnist:{root}"])
    assert "t10k-labels-idx1-ubyte.gz" in line


def test_missing_file(mnist_dir):
    (mnist_dir / "t10k-labels-idx1-ubyte").unlink()
    line = one_error(["data", "info", f"mnist:{mnist_dir}"])
    assert "t10k-labels-idx1-ubyte" in line and "missing" in line


def test_unknown_spec_kind_is_usage_error(tmp_path):
    line = one_error(["data", "info", f"imagenet:{tmp_path}"], expected_code=2)
    assert "imagenet" in line and "celeba" in line and "folder" in line and "mnist" in line


def test_missing_root(tmp_path):
    line = one_error(["data", "info", f"mnist:{tmp_path / 'nowhere'}"])
    assert "nowhere" in line and "does not exist" in line


def test_root_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_error(["data", "info", f"celeba:{tmp_path / 'file'}"])
    assert "not a folder" in line
