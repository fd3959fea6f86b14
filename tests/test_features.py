import h5py
import numpy as np
import pytest

from halitool.errors import BadInputError
from halitool.features import FeaturesWriter, LevelLayout, open_features, write_features


def _arrays(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "z1": rng.normal(size=(n, 2, 3, 3)).astype(np.float32),
        "z2": rng.normal(size=(n, 5)).astype(np.float32),
    }


def test_round_trip(tmp_path):
    levels = _arrays()
    split = np.array([0] * 20 + [1] * 5 + [2] * 5, dtype=np.int8)
    labels = np.arange(30) % 3
    attributes = (np.arange(60).reshape(30, 2) % 2).astype(np.int8)
    path = write_features(tmp_path / "f.h5", levels, split, labels=labels, attributes=attributes,
                          attribute_names=["a", "b"], provenance={"model_config": {"arch": "tiny"}, "seed": 3})
    with open_features(path) as f:
        assert f.levels == ["z1", "z2"]
        assert f.level_shape("z1") == (2, 3, 3) and f.level_dim("z1") == 18
        np.testing.assert_array_equal(f.read_level("z1"), levels["z1"].reshape(30, -1))
        np.testing.assert_array_equal(f.read_level("z2", rows=f.rows("test")), levels["z2"][25:])
        assert f.split_counts() == {"train": 20, "valid": 5, "test": 5}
        np.testing.assert_array_equal(f.labels, labels)
        assert f.class_names == ["0", "1", "2"]
        assert f.attribute_names == ["a", "b"]
        assert f.attrs["model_config"] == {"arch": "tiny"} and f.attrs["seed"] == 3


def test_refuses_incomplete(tmp_path):
    path = tmp_path / "partial.h5"
    writer = FeaturesWriter.create(path, levels=[LevelLayout("z1", (4,))], split=np.zeros(3, np.int8),
                                   sample_ids=np.arange(3), provenance={})
    writer.close()
    with pytest.raises(BadInputError, match="incomplete"):
        open_features(path)
    open_features(path, allow_incomplete=True).close()


def test_refuses_other_files(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(BadInputError, match="not a readable HDF5"):
        open_features(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5.attrs["format"] = "something-else"
    with pytest.raises(BadInputError, match="not a halitool features file"):
        open_features(other)
    future = write_features(tmp_path / "v2.h5", _arrays(), np.zeros(30, np.int8))
    with h5py.File(future, "a") as h5:
        h5.attrs["format_version"] = 2
    with pytest.raises(BadInputError, match="version 2"):
        open_features(future)


def test_nan_features_refused(tmp_path):
    levels = _arrays()
    levels["z2"][4, 1] = np.nan
    path = write_features(tmp_path / "nan.h5", levels, np.zeros(30, np.int8))
    with open_features(path) as f:
        f.read_level("z1")
        with pytest.raises(BadInputError, match="NaN or inf values in 1 rows"):
            f.read_level("z2")


def test_chunks_in_band(tmp_path):
    n = 5000
    path = write_features(tmp_path / "big.h5", {"z1": np.zeros((n, 784), np.float32)}, np.zeros(n, np.int8))
    with h5py.File(path) as h5:
        rows = h5["levels/z1/mean"].chunks[0]
        assert 10 * 1024 <= rows * 784 * 4 <= 1024 * 1024
