"""``halitool semisup`` through the real entry point on small features files."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from halitool.features import write_features
from helpers import run_cli


def features_file(path, labels=True, n_train=300, n_test=100, seed=0):
    """z1 (spatial, noise) and z2 (10 separated clusters) for MNIST-like train/test splits."""
    rng = np.random.default_rng(seed)
    y = np.r_[rng.permutation(np.arange(n_train) % 10), rng.permutation(np.arange(n_test) % 10)]
    z2 = rng.normal(size=(10, 6))[y] * 20 + rng.normal(size=(len(y), 6))
    z1 = rng.normal(size=(len(y), 2, 2, 2))
    split = np.r_[np.zeros(n_train), np.full(n_test, 2)].astype(np.int8)
    return write_features(path, {"z1": z1.astype(np.float32), "z2": z2.astype(np.float32)}, split,
                          labels=y if labels else None)


@pytest.fixture
def feats(tmp_path):
    return features_file(tmp_path / "f.h5")


def test_json_keys(feats):
    code, out, err = run_cli(["semisup", str(feats), "--labels", "20", "--features", "z2", "--seeds", "3",
                              "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    for key in ("schema_version", "command", "labels", "protocol", "classifier", "features", "error_mean",
                "error_std", "runs", "seconds", "notes", "transductive", "labels_used"):
        assert key in doc
    assert doc["command"] == "semisup" and doc["protocol"] == "linear" and doc["features"] == "z2"
    assert doc["labels"] == 20 and doc["error_mean"] == 0.0
    assert [r["seed"] for r in doc["runs"]] == [0, 1, 2] and all("error" in r and "C" in r for r in doc["runs"])


def test_default_features_are_every_level(feats):
    code, out, _ = run_cli(["semisup", str(feats), "--labels", "10", "--seeds", "1", "--format", "json"])
    assert code == 0 and json.loads(out)["features"] == "z1+z2"


def test_protocol_all_json_and_csv(feats, tmp_path):
    code, out, err = run_cli(["semisup", str(feats), "--labels", "10", "--features", "z2", "--seeds", "2",
                              "--protocol", "all", "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["protocol"] == "all" and set(doc["protocols"]) == {"linear", "linear-heldout", "spread"}
    assert doc["best"] in doc["protocols"]
    assert doc["protocols"]["spread"]["transductive"] is True
    assert any("more labels than N" in n for n in doc["protocols"]["linear-heldout"]["notes"])
    target = tmp_path / "out.csv"
    code, out, err = run_cli(["semisup", str(feats), "--labels", "10", "--features", "z2", "--seeds", "2",
                              "--protocol", "all", "--format", "csv", "-o", str(target)])
    assert code == 0, err
    assert out == ""
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == 6 and {r["protocol"] for r in rows} == {"linear", "linear-heldout", "spread"}
    code, _, err = run_cli(["semisup", str(feats), "--labels", "10", "--seeds", "1", "--format", "csv",
                            "-o", str(target)])
    assert code == 2 and "already exists" in err


def test_table_goes_to_stderr_with_published_results(feats):
    code, out, err = run_cli(["semisup", str(feats), "--labels", "10", "--features", "z2", "--seeds", "2",
                              "--format", "table"])
    assert code == 0 and out == ""
    assert "Bad GAN" in err and "mean +- std" in err


def test_same_seed_same_output(feats):
    args = ["semisup", str(feats), "--labels", "10", "--seeds", "2", "--seed-base", "4", "--format", "json"]
    first, second = json.loads(run_cli(args)[1]), json.loads(run_cli(args)[1])
    assert first["runs"] == second["runs"] and [r["seed"] for r in first["runs"]] == [4, 5]


@pytest.mark.parametrize("args, code, message", [
    (["--labels", "15"], 2, "not a multiple"),
    (["--labels", "0"], 2, "'--labels': 0 is not in the range x>=1"),
    (["--labels", "1000"], 3, "only"),
    (["--protocol", "nope"], 2, "unknown protocol"),
    (["--features", "z3"], 2, "no level"),
    (["--seeds", "0"], 2, "'--seeds': 0 is not in the range x>=1"),
])
def test_bad_input_one_error_line(feats, args, code, message):
    got, out, err = run_cli(["semisup", str(feats), "--format", "json", *args])
    assert got == code and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0]


def test_features_without_class_labels(tmp_path):
    path = features_file(tmp_path / "nolabels.h5", labels=False)
    code, out, err = run_cli(["semisup", str(path), "--labels", "10", "--format", "json"])
    assert code == 3 and out == ""
    assert err.strip().count("\n") == 0 and "no class labels" in err


def test_data_with_features_file_is_a_usage_error(feats):
    code, _, err = run_cli(["semisup", str(feats), "--data", "mnist", "--format", "json"])
    assert code == 2 and "--data" in err


def test_checkpoint_source_extracts_once_into_the_cache(tmp_path, mnist_dir, monkeypatch):
    pytest.importorskip("halitool.extract")
    from halitool.checkpoint import save_checkpoint
    from halitool.models import ModelConfig, build_model

    monkeypatch.setenv("HALITOOL_DATA", str(tmp_path / "home"))
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", build_model(ModelConfig(arch="tiny")),
                           preprocessing={}, training={}, metrics={})
    args = ["semisup", str(ckpt), "--data", f"mnist:{mnist_dir}", "--labels", "10", "--seeds", "2",
            "--device", "cpu", "--format", "json"]
    code, out, err = run_cli(args)
    assert code == 0, err
    doc = json.loads(out)
    cached = list((tmp_path / "home" / "features").glob("*.h5"))
    assert len(cached) == 1 and doc["features_file"] == str(cached[0]) and doc["features"] == "z1+z2"
    assert doc["splits"] == {"train": 200, "test": 50}
    mtime = cached[0].stat().st_mtime_ns
    code, out2, err = run_cli(args)
    assert code == 0, err
    assert cached[0].stat().st_mtime_ns == mtime  # reused, not extracted again
    assert json.loads(out2)["runs"] == doc["runs"]


def test_finetune_runs_from_a_checkpoint_and_needs_one(tmp_path, mnist_dir, monkeypatch, feats):
    pytest.importorskip("halitool.extract")
    from halitool.checkpoint import save_checkpoint
    from halitool.models import ModelConfig, build_model

    monkeypatch.setenv("HALITOOL_DATA", str(tmp_path / "home"))
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", build_model(ModelConfig(arch="tiny")),
                           preprocessing={}, training={}, metrics={})
    args = ["semisup", str(ckpt), "--data", f"mnist:{mnist_dir}", "--labels", "20", "--seeds", "1", "--epochs", "1",
            "--max-unlabelled", "60", "--device", "cpu", "--format", "json", "--protocol", "all"]
    code, out, err = run_cli(args)
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["protocols"]) == {"linear", "linear-heldout", "spread", "finetune"}
    run = doc["protocols"]["finetune"]["runs"][0]
    assert 0 < run["pseudo_labelled"] <= 60 and run["steps"] == 1 and 0 <= run["error"] <= 100
    assert json.loads(run_cli(args)[1])["protocols"]["finetune"]["runs"] == [run]  # deterministic on the CPU
    code, out, err = run_cli(["semisup", str(feats), "--labels", "10", "--protocol", "finetune", "--format", "json"])
    assert code == 2 and out == "" and "needs a checkpoint" in err
