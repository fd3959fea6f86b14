"""`halitool probe-attributes` through the real entry point, on small features files in the real format."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from halitool.data import open_dataset
from halitool.features import write_features
from helpers import run_cli, write_mnist


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_features(path, n=(300, 100, 100), nan=False, attributes=True, provenance=None, split=None, sample_ids=None):
    """z1 [8] carries attribute 'a', z2 [2, 2] carries 'b'; 'const' is always 0."""
    rng = np.random.default_rng(0)
    split = np.repeat([0, 1, 2], n).astype(np.int8) if split is None else split
    total = len(split)
    z1 = rng.normal(size=(total, 8)).astype(np.float32)
    z2 = rng.normal(size=(total, 2, 2)).astype(np.float32)
    if nan:
        z1[5, 3] = np.nan
    a = z1[:, 0] + 0.2 * rng.logistic(size=total) > 0
    b = z2[:, 0, 0] + 0.2 * rng.logistic(size=total) > 0.5
    attr = np.stack([a, b, np.zeros(total, bool)], axis=1).astype(np.int8)
    kwargs = dict(attributes=attr, attribute_names=["a", "b", "const"]) if attributes else {}
    return write_features(path, {"z1": z1, "z2": z2}, split, provenance=provenance, sample_ids=sample_ids, **kwargs)


def test_json_keys_and_values(tmp_path):
    path = small_features(tmp_path / "f.h5")
    code, out, err = run_cli(["probe-attributes", str(path), "--format", "json", "--C-grid", "1e-2:1e1:4"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["command"] == "probe-attributes" and doc["schema_version"] == 1
    assert set(doc["levels"]) == {"z1", "z2", "z1+z2"}
    assert doc["splits"] == {"train": 300, "valid": 100, "test": 100}
    assert doc["solver"] == "torch" and doc["seconds"] >= 0
    assert set(doc["baselines"]) == {"majority"}  # no provenance: the pixel baseline is skipped with a note
    assert "pixel baseline skipped" in err
    for level in doc["levels"].values():
        assert {"mean_accuracy", "mean_balanced_accuracy", "mean_auroc", "attributes"} <= set(level)
        for attr in level["attributes"]:
            assert set(attr) == {"name", "accuracy", "balanced_accuracy", "auroc", "C", "positive_rate"}
            assert 0 <= attr["accuracy"] <= 1 and 0 <= attr["balanced_accuracy"] <= 1
    for baseline in doc["baselines"].values():
        assert {"mean_accuracy", "mean_balanced_accuracy"} <= set(baseline)
    by_name = {a["name"]: a for a in doc["levels"]["z1"]["attributes"]}
    assert by_name["a"]["balanced_accuracy"] > 0.85  # z1 carries a
    assert by_name["const"]["auroc"] is None and by_name["const"]["C"] is None
    assert by_name["const"]["accuracy"] == 1.0
    joined = {a["name"]: a for a in doc["levels"]["z1+z2"]["attributes"]}
    assert joined["b"]["balanced_accuracy"] > 0.8  # z2 carries b


def test_options_csv_and_sklearn_solver(tmp_path):
    path = small_features(tmp_path / "f.h5")
    code, out, err = run_cli(["probe-attributes", str(path), "--levels", "z2", "--attributes", "b", "--format", "csv",
                              "--solver", "sklearn", "--C-grid", "0.1,1", "--class-weight", "balanced",
                              "--metric", "balanced_accuracy", "--max-train", "200", "--no-pixel-baseline"])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split(",")[:3] == ["kind", "source", "name"]
    assert [ln.split(",")[:3] for ln in lines[1:]] == [["level", "z2", "b"], ["baseline", "majority", "b"]]


def test_output_file_table_and_plot(tmp_path):
    path = small_features(tmp_path / "f.h5")
    out_json, png = tmp_path / "r.json", tmp_path / "bars.png"
    args = ["probe-attributes", str(path), "--format", "table", "-o", str(out_json), "--plot", str(png),
            "--C-grid", "0.1,1"]
    code, out, err = run_cli(args)
    assert code == 0, err
    assert out == ""  # the table is on stderr
    assert "z1+z2" in err and "majority" in err
    assert set(json.loads(out_json.read_text())["levels"]) == {"z1", "z2", "z1+z2"}
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 200
        colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert {(31, 119, 180), (255, 127, 14), (44, 160, 44)} <= colours  # one bar colour per level: z1, z2, z1+z2
    code, _, err = run_cli(args)
    assert code == 2 and "exists" in err  # never overwrite without --force


def test_plot_without_matplotlib_fails_at_once_and_writes_nothing(tmp_path, monkeypatch, no_matplotlib):
    from halitool import probe_features  # the command imports probe_attributes from here when it runs

    def no_probing(*args, **kwargs):
        raise AssertionError("probes were fitted although the plot could never be drawn")

    monkeypatch.setattr(probe_features, "probe_attributes", no_probing)
    path = small_features(tmp_path / "f.h5")
    code, out, err = run_cli(["probe-attributes", str(path), "-o", str(tmp_path / "r.json"),
                              "--plot", str(tmp_path / "bars.png")])
    assert code == 2 and out == ""
    assert err.count("Error:") == 1 and "pip install 'halitool[plot]'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]


def test_no_valid_split_records_the_holdout(tmp_path):
    path = small_features(tmp_path / "f.h5", n=(400, 0, 100))
    code, out, err = run_cli(["probe-attributes", str(path), "--format", "json", "--levels", "z1", "--seed", "3"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["selection"] == {"split": "train_holdout", "n": 60, "fraction": 0.15, "seed": 3}


def test_pixel_baseline_from_provenance(tmp_path):
    root = write_mnist(tmp_path / "mnist", n_train=200, n_test=60)
    ds = open_dataset(f"mnist:{root}")
    labels = ds.labels
    path = tmp_path / "f.h5"
    rng = np.random.default_rng(0)
    attr = np.stack([labels % 2 == 0, labels >= 5], axis=1).astype(np.int8)
    write_features(path, {"z1": rng.normal(size=(len(ds), 4)).astype(np.float32)}, ds.split, labels=labels,
                   attributes=attr, attribute_names=["even", "high"], sample_ids=ds.sample_ids,
                   provenance={"dataset": "mnist", "dataset_root": str(root)})
    code, out, err = run_cli(["probe-attributes", str(path), "--format", "json", "--C-grid", "0.01,1"])
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["baselines"]) == {"majority", "pixels"}
    # The fixture's digits are visible in the pixels; the random z1 carries nothing.
    assert doc["baselines"]["pixels"]["mean_balanced_accuracy"] > doc["levels"]["z1"]["mean_balanced_accuracy"] + 0.1


def _incomplete(path):
    small_features(path)
    with h5py.File(path, "r+") as h5:
        h5.attrs["complete"] = False
    return path


@pytest.mark.parametrize("case, make, extra, needle", [
    ("not hdf5", lambda p: p.write_text("hello") or p, [], "not a readable HDF5"),
    ("incomplete", _incomplete, [], "incomplete"),
    ("no attributes", lambda p: small_features(p, attributes=False), [], "no attributes"),
    ("nan", lambda p: small_features(p, nan=True), [], "NaN"),
    ("unknown attribute", small_features, ["--attributes", "a,Smiling"], "unknown attribute(s) Smiling"),
])
def test_bad_input_exits_3_with_one_line(tmp_path, case, make, extra, needle):
    path = tmp_path / "f.h5"
    make(path)
    code, out, err = run_cli(["probe-attributes", str(path), "--format", "json", *extra])
    assert code == 3, (case, err)
    assert out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], err


def test_unknown_level_is_a_usage_error_like_every_level_spec(tmp_path):
    path = small_features(tmp_path / "f.h5")
    code, out, err = run_cli(["probe-attributes", str(path), "--format", "json", "--levels", "z1,z3"])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and out == "" and len(lines) == 1 and "no level 'z3'" in lines[0], err


def test_bad_c_grid_is_a_usage_error(tmp_path):
    path = small_features(tmp_path / "f.h5")
    code, _, err = run_cli(["probe-attributes", str(path), "--C-grid", "1:0.1:3"])
    assert code == 2 and "--C-grid" in err
