"""halitool info on a checkpoint written by a real training run."""

from __future__ import annotations

import json

import pytest

from halitool.fileio import sha256_file
from helpers import run_cli


@pytest.fixture
def checkpoint(mnist_dir, tmp_path):
    code, stdout, stderr = run_cli(["train", "--data", f"mnist:{mnist_dir}", "--arch", "tiny", "--levels", "3",
                                    "--steps", "2", "--batch-size", "50", "--out", str(tmp_path / "run")])
    assert code == 0, stderr
    return tmp_path / "run" / "model.safetensors"


def test_info_json_describes_the_checkpoint(checkpoint):
    code, stdout, stderr = run_cli(["info", str(checkpoint), "--format", "json"])
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["command"] == "info" and doc["schema_version"] == 1
    assert doc["config"]["arch"] == "tiny" and doc["config"]["n_levels"] == 3
    assert doc["levels"] == {"z1": [2, 7, 7], "z2": [8], "z3": [4]}
    parts = doc["parameters"]
    assert parts["total"] == parts["encoders"] + parts["decoders"] + parts["discriminator"] > 0
    assert doc["training"]["steps"] == 2 and doc["training"]["data"].startswith("mnist:")
    assert doc["training"]["command"].startswith("halitool train")
    assert set(doc["metrics"]) >= {"d_loss", "g_loss", "validation"}
    assert doc["sha256"] == sha256_file(checkpoint)
    assert doc["path"] == str(checkpoint.resolve())


def test_info_table_goes_to_stderr_and_json_to_a_file(checkpoint, tmp_path):
    out = tmp_path / "info.json"
    code, stdout, stderr = run_cli(["info", str(checkpoint), "--format", "table", "-o", str(out)])
    assert code == 0 and stdout == ""
    assert "z3" in stderr and "sha256" in stderr
    assert json.loads(out.read_text())["levels"]["z2"] == [8]


def test_info_on_a_missing_checkpoint_exits_3(tmp_path):
    code, _, stderr = run_cli(["info", str(tmp_path / "nothing.safetensors")])
    assert code == 3 and "nothing.safetensors" in stderr
    code, _, stderr = run_cli(["info", "hali-does-not-exist"])
    assert code == 3 and "no shipped model" in stderr
