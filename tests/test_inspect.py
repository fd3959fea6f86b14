"""inspect: what a features file holds, for complete files, partials and files from other tools."""

from __future__ import annotations

import json

import numpy as np

from helpers import run_cli
from halitool.features import FeaturesWriter, LevelLayout, write_features


def test_inspect_json_of_an_extracted_file(tiny_checkpoint, mnist_dir, tmp_path):
    out = tmp_path / "f.h5"
    code, _, stderr = run_cli(["extract", str(tiny_checkpoint), "--data", f"mnist:{mnist_dir}", "-o", str(out),
                               "--with-logvar", "--format", "json"])
    assert code == 0, stderr
    code, stdout, stderr = run_cli(["inspect", str(out), "--format", "json"])
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["command"] == "inspect" and doc["schema_version"] == 1
    assert doc["format"] == "halitool-features" and doc["format_version"] == 1 and doc["complete"] is True
    assert doc["n_samples"] == 250 and doc["rows_done"] == 250
    assert doc["splits"] == {"train": 200, "valid": 0, "test": 50}
    assert doc["levels"] == {"z1": {"shape": [2, 7, 7], "dim": 98, "logvar": True},
                             "z2": {"shape": [8], "dim": 8, "logvar": True}}
    assert doc["classes"] == [str(c) for c in range(10)]
    assert "thick" in doc["attributes"] and "even" in doc["attributes"]
    prov = doc["provenance"]
    assert prov["latent"] == "mean" and prov["dataset"] == "mnist" and prov["model_config"]["arch"] == "tiny"
    assert prov["command"]  # this process's argv here; `halitool extract ...` from the shell (test_extract.py)


def test_inspect_table_goes_to_stderr(tmp_path):
    path = write_features(tmp_path / "g.h5", {"z1": np.zeros((4, 3), np.float32)}, np.array([0, 0, 1, 2], np.int8),
                          labels=np.array([0, 1, 0, 1]))
    code, stdout, stderr = run_cli(["inspect", str(path), "--format", "table"])
    assert code == 0 and stdout == ""
    assert "halitool-features v1" in stderr and "train 2, valid 1, test 1" in stderr and "level z1" in stderr


def test_inspect_reports_a_partial(tmp_path):
    path = tmp_path / "f.h5.partial"
    writer = FeaturesWriter.create(path, levels=[LevelLayout("z2", (4,))], split=np.zeros(10, np.int8),
                                   sample_ids=np.arange(10), provenance={"latent": "mean"})
    writer.write(0, {"z2": np.ones((3, 4), np.float32)})
    writer.mark_done(3)
    writer.close()
    code, stdout, _ = run_cli(["inspect", str(path), "--format", "json"])
    assert code == 0
    doc = json.loads(stdout)
    assert doc["complete"] is False and doc["rows_done"] == 3 and doc["n_samples"] == 10


def test_inspect_refuses_other_files(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    code, _, stderr = run_cli(["inspect", str(junk)])
    assert code == 3 and "junk.h5" in stderr
    code, _, stderr = run_cli(["inspect", str(tmp_path / "missing.h5")])
    assert code == 3 and "not found" in stderr
