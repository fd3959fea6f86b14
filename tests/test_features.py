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


def test_to_pandas_rows_columns_and_a_level(tmp_path):
    levels = _arrays()
    split = np.array([0] * 20 + [1] * 5 + [2] * 5, dtype=np.int8)
    labels = np.arange(30) % 3
    attributes = (np.arange(60).reshape(30, 2) % 3 == 0).astype(np.int8)
    sample_ids = np.arange(30) * 7 + 100  # ids that are not row numbers, so the index is visibly the ids
    path = write_features(tmp_path / "f.h5", levels, split, labels=labels, attributes=attributes,
                          attribute_names=["a", "b"], sample_ids=sample_ids)
    with open_features(path) as f:
        table = f.to_pandas()
        with_z1 = f.to_pandas(level="z1")
        with pytest.raises(BadInputError, match="no level 'z9'"):
            f.to_pandas(level="z9")
    assert table.index.name == "sample_id" and table.index.tolist() == sample_ids.tolist()
    assert table.columns.tolist() == ["split", "label", "class", "a", "b"]
    assert table["split"].value_counts().to_dict() == {"train": 20, "valid": 5, "test": 5}
    assert table["split"].iloc[[0, 20, 29]].tolist() == ["train", "valid", "test"]
    assert table["label"].tolist() == labels.tolist() and table["class"].tolist() == [str(v) for v in labels]
    np.testing.assert_array_equal(table[["a", "b"]].to_numpy(), attributes)
    assert with_z1.columns.tolist() == table.columns.tolist() + [f"z1_{i}" for i in range(18)]
    np.testing.assert_array_equal(with_z1.filter(like="z1_").to_numpy(), levels["z1"].reshape(30, -1))
    assert with_z1["z1_0"].dtype == np.float32
    # Selecting a split gives the rows read_level gives for it.
    np.testing.assert_array_equal(with_z1[with_z1["split"] == "test"].filter(like="z1_").to_numpy(),
                                  levels["z1"].reshape(30, -1)[25:])


def test_to_pandas_without_labels_or_attributes(tmp_path):
    path = write_features(tmp_path / "bare.h5", _arrays(), np.zeros(30, np.int8))
    with open_features(path) as f:
        table = f.to_pandas(level="z2")
    assert table.columns.tolist() == ["split"] + [f"z2_{i}" for i in range(5)]
    assert table.index.tolist() == list(range(30))


def test_factors_round_trip_with_names_and_discrete_flags(tmp_path):
    factors = np.random.default_rng(1).normal(size=(30, 3)).astype(np.float32)
    factors[:, 2] = np.arange(30) % 4  # a discrete factor: its values are categories
    path = write_features(tmp_path / "f.h5", _arrays(), np.zeros(30, np.int8), factors=factors,
                          factor_names=["size", "angle", "shape"], factor_discrete=[False, False, True])
    with open_features(path) as f:
        np.testing.assert_array_equal(f.factors, factors)
        assert f.factors.dtype == np.float32
        assert f.factor_names == ["size", "angle", "shape"] and f.factor_discrete == [False, False, True]
    with h5py.File(path) as h5:
        assert h5["labels/factors"].shape == (30, 3) and h5["labels/factors"].dtype == np.float32


def test_a_file_without_factors_still_reads(tmp_path):
    # Older writers made no /labels/factors: the file is as valid as before, with no factors.
    path = write_features(tmp_path / "old.h5", _arrays(), np.zeros(30, np.int8), labels=np.arange(30) % 3)
    with h5py.File(path) as h5:
        assert "labels/factors" not in h5
    with open_features(path) as f:
        assert f.factors is None and f.factor_names == [] and f.factor_discrete == []
        assert f.labels is not None


def test_factors_without_the_discrete_attribute_are_measurements(tmp_path):
    path = write_features(tmp_path / "f.h5", _arrays(), np.zeros(30, np.int8), factors=np.zeros((30, 2)),
                          factor_names=["a", "b"])
    with h5py.File(path, "a") as h5:
        del h5["labels/factors"].attrs["discrete"]
    with open_features(path) as f:
        assert f.factor_discrete == [False, False]


@pytest.mark.parametrize("edit, message", [
    (lambda h5: h5["labels/factors"].attrs.__setitem__("names", ["a"]), "lacks one name per column"),
    (lambda h5: h5["labels/factors"].attrs.__delitem__("names"), "lacks one name per column"),
    (lambda h5: h5["labels/factors"].attrs.__setitem__("names", ["a", "a"]), "names a factor twice"),
    (lambda h5: h5["labels/factors"].attrs.__setitem__("discrete", [True]), "one true/false per column"),
    (lambda h5: (h5.__delitem__("labels/factors"), h5.create_dataset("labels/factors", data=np.zeros((7, 2)))),
     "labels/factors has 7 rows"),
    (lambda h5: (h5.__delitem__("labels/factors"), h5.create_dataset("labels/factors", data=np.zeros(30))),
     "not numbers of shape"),
], ids=["too-few-names", "no-names", "repeated-name", "discrete-length", "row-count", "one-dimensional"])
def test_bad_factors_are_refused_on_open(tmp_path, edit, message):
    path = write_features(tmp_path / "f.h5", _arrays(), np.zeros(30, np.int8), factors=np.zeros((30, 2)),
                          factor_names=["a", "b"])
    with h5py.File(path, "a") as h5:
        edit(h5)
    with pytest.raises(BadInputError, match=message):
        open_features(path)


def test_nan_factors_refused_naming_the_factor(tmp_path):
    factors = np.zeros((30, 2), np.float32)
    factors[3, 1] = np.inf
    path = write_features(tmp_path / "f.h5", _arrays(), np.zeros(30, np.int8), factors=factors,
                          factor_names=["a", "b"])
    with open_features(path) as f, pytest.raises(BadInputError, match="NaN or inf values in b"):
        f.factors
