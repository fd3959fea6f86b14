"""Property tests of every parser: arbitrary input gives a value or a clean BadInputError naming the file,
never another exception; valid generated inputs round-trip. (IDX bytes: tests/test_idx_properties.py; here
the gzip layer and the MNIST folder's cross-file checks.)"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halitool.data.celeba import read_attr_csv, read_attr_txt, read_partition
from halitool.data.idx import encode_idx, read_idx
from halitool.errors import BadInputError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def clean(call, path: Path):
    """``call()``'s value, or None for a BadInputError whose message starts with ``path``."""
    try:
        return call()
    except BadInputError as exc:
        assert str(exc).startswith(str(path)), str(exc)
        return None


# --------------------------------------------------------------------------------------------------- IDX
@FAST
@given(st.binary(max_size=300), st.booleans())
def test_gzipped_or_plain_bytes_parse_or_fail_cleanly(tmp_path, data, gz):
    path = tmp_path / "x-idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    clean(lambda: read_idx(path), path)


@FAST
@given(st.integers(1, 3).flatmap(lambda nd: st.lists(st.integers(0, 4), min_size=nd, max_size=nd)), st.data())
def test_damaged_gzip_of_valid_idx(tmp_path, dims, data):
    array = np.arange(int(np.prod(dims)), dtype=np.uint8).reshape(dims)
    packed = gzip.compress(encode_idx(array))
    cut = data.draw(st.integers(0, len(packed)))
    flip = data.draw(st.integers(0, len(packed) - 1))
    damaged = bytearray(packed[:cut] + packed[cut:])
    damaged[flip] ^= data.draw(st.integers(0, 255))
    path = tmp_path / "x.gz"
    path.write_bytes(bytes(damaged[:cut] if data.draw(st.booleans()) else damaged))
    got = clean(lambda: read_idx(path), path)
    if got is not None and bytes(damaged) == packed:
        np.testing.assert_array_equal(got, array)


# ------------------------------------------------------------------------------------------------- CelebA
names = st.lists(st.from_regex(r"[0-9]{6}\.jpg", fullmatch=True), min_size=0, max_size=6, unique=True)
attr_names = st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=5,
                      unique=True)


@st.composite
def tables(draw):
    rows, attrs = draw(names), draw(attr_names)
    values = np.array(draw(st.lists(st.lists(st.booleans(), min_size=len(attrs), max_size=len(attrs)),
                                    min_size=len(rows), max_size=len(rows))), dtype=np.int8).reshape(len(rows), len(attrs))
    return rows, attrs, values


@FAST
@given(tables())
def test_valid_attribute_tables_round_trip(tmp_path, table):
    rows, attrs, values = table
    txt, csv = tmp_path / "list_attr_celeba.txt", tmp_path / "list_attr_celeba.csv"
    cells = [[" 1" if v else "-1" for v in row] for row in values]
    txt.write_text("\n".join([str(len(rows)), " ".join(attrs) + " "]
                             + [f"{n} " + " ".join(c) for n, c in zip(rows, cells)]) + "\n")
    csv.write_text("\n".join(["image_id," + ",".join(attrs)]
                             + [n + "," + ",".join(x.strip() for x in c) for n, c in zip(rows, cells)]) + "\n")
    for got in (read_attr_txt(txt), read_attr_csv(csv)):
        assert got[0] == rows and got[1] == attrs
        np.testing.assert_array_equal(got[2].reshape(values.shape), values)


@FAST
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400),
                 st.lists(st.sampled_from(["1", "-1", "0", " ", "  ", "\n", ",", "000001.jpg", "a", "3", "\t"]),
                          max_size=60).map("".join)))
def test_arbitrary_attribute_and_partition_files_fail_cleanly(tmp_path, data):
    for name in ("list_attr_celeba.txt", "list_attr_celeba.csv", "list_eval_partition.txt", "list_eval_partition.csv"):
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        if "attr" in name:
            got = clean(lambda: (read_attr_txt if name.endswith(".txt") else read_attr_csv)(path), path)
            if got is not None:
                assert got[2].shape == (len(got[0]), len(got[1])) and set(np.unique(got[2])) <= {0, 1}
        else:
            got = clean(lambda: read_partition(path, ["000001.jpg"]), path)
            if got is not None:
                assert got.shape == (1,) and got[0] in (0, 1, 2)


@FAST
@given(names, st.data())
def test_valid_partitions_round_trip(tmp_path, rows, data):
    split = [data.draw(st.integers(0, 2)) for _ in rows]
    for suffix, sep, header in ((".txt", " ", []), (".csv", ",", ["image_id,partition"])):
        path = tmp_path / f"list_eval_partition{suffix}"
        path.write_text("\n".join(header + [f"{n}{sep}{s}" for n, s in zip(rows, split)]) + "\n")
        np.testing.assert_array_equal(read_partition(path, rows), np.array(split, dtype=np.int8))


# --------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def tiny_tensors(tmp_path_factory):
    from helpers import write_tiny_checkpoint
    from safetensors.torch import load_file
    from safetensors import safe_open

    path = write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    with safe_open(str(path), "pt") as f:
        return load_file(str(path)), dict(f.metadata())


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)
KEYS = ["format", "format_version", "config", "levels", "preprocessing", "training", "metrics"]


@FAST
@given(st.dictionaries(st.sampled_from(KEYS), st.one_of(st.text(max_size=30), json_values.map(json.dumps)), max_size=4),
       st.dictionaries(st.sampled_from(["arch", "levels", "leak", "dropout", "recon_weight", "bogus"]), json_values,
                       max_size=4))
def test_arbitrary_checkpoint_metadata_is_bad_input_or_loads(tmp_path, tiny_tensors, override, config):
    from safetensors.torch import save

    from halitool.checkpoint import load_checkpoint

    tensors, metadata = tiny_tensors
    metadata = {**metadata, **override}
    if config:
        metadata["config"] = json.dumps({"arch": "tiny", **config})
    path = tmp_path / "m.safetensors"
    path.write_bytes(save(tensors, metadata=metadata))
    loaded = clean(lambda: load_checkpoint(path), path)
    if loaded is not None:
        assert loaded.config.arch == "tiny"


# ------------------------------------------------------------------------------------------ features files
attr_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                        st.text(st.characters(blacklist_characters="\x00"), max_size=12),
                        st.binary(min_size=1, max_size=8), st.sampled_from(["halitool-features", "1"]),
                        st.lists(st.integers(0, 3), min_size=1, max_size=3))


@pytest.fixture(scope="module")
def features_bytes(tmp_path_factory):
    from halitool.features import write_features

    path = tmp_path_factory.mktemp("feat") / "f.h5"
    write_features(path, {"z1": np.ones((4, 3), dtype=np.float32)}, np.array([0, 0, 2, 2], dtype=np.int8),
                   labels=np.array([0, 1, 0, 1]))
    return path


@FAST
@given(st.dictionaries(st.sampled_from(["format", "format_version", "complete", "rows_done", "model_config",
                                        "splits"]), attr_values, min_size=1, max_size=3))
def test_arbitrary_features_attributes_are_bad_input_or_read(tmp_path, features_bytes, attrs):
    from halitool.features import describe_features, open_features

    path = tmp_path / "f.h5"
    path.write_bytes(features_bytes.read_bytes())
    with h5py.File(path, "r+") as h5:
        for key, value in attrs.items():
            if value is None:
                if key in h5.attrs:
                    del h5.attrs[key]
            else:
                h5.attrs[key] = np.void(value) if isinstance(value, bytes) else value
    summary = clean(lambda: describe_features(path), path)
    opened = clean(lambda: open_features(path), path)
    if opened is not None:
        with opened:
            assert opened.complete and opened.read_level("z1").shape == (4, 3)
    if summary is not None:
        assert summary["n_samples"] == 4
