"""Checkpoint format v1: round trip, strict loading, refusals of corrupt, foreign and malicious files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from halitool.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from halitool.errors import BadInputError
from halitool.models import ModelConfig, build_model
from helpers import run_cli


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny", n_levels=2))
    model.train()
    model.losses(torch.rand(8, *model.image_shape))  # move the batch-norm statistics away from their defaults
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, preprocessing={"value_range": [0, 255]}, training={"steps": 7},
                    metrics={"d_loss": 1.25})
    return model.eval(), path


def test_save_then_load_gives_identical_encodings(saved):
    model, path = saved
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and loaded.path == path and len(loaded.sha256) == 64
    assert loaded.training == {"steps": 7} and loaded.metrics == {"d_loss": 1.25}
    assert loaded.preprocessing == {"value_range": [0, 255]}
    assert not loaded.model.training
    x = torch.rand(5, *model.image_shape)
    with torch.no_grad():
        a, b = model.encode(x), loaded.model.encode(x)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert torch.equal(model.reconstruct(x, "z2"), loaded.model.reconstruct(x, "z2"))


def _rewrite(path, tensors=None, **metadata_changes):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata())
    metadata.update(metadata_changes)
    save_file(tensors if tensors is not None else load_file(str(path)), str(path), metadata=metadata)


def test_strict_load_mismatch_exits_3_naming_missing_and_unexpected_tensors(saved):
    _, path = saved
    tensors = load_file(str(path))
    tensors["encoders.0.extra"] = tensors.pop("encoders.1.net.4.bias")
    _rewrite(path, tensors)
    code, stdout, stderr = run_cli(["info", str(path), "--format", "json"])
    assert code == 3 and stdout == ""
    assert str(path) in stderr
    assert "missing: encoders.1.net.4.bias" in stderr and "unexpected: encoders.0.extra" in stderr


def test_checkpoint_of_another_architecture_is_refused(saved):
    _, path = saved
    _rewrite(path, config=json.dumps(ModelConfig(arch="tiny", n_levels=3).to_dict()))
    with pytest.raises(BadInputError, match="level shapes"):
        load_checkpoint(path)


@pytest.mark.parametrize("changes, message", [
    ({"format": "something-else"}, "not a halitool checkpoint"),
    ({"format_version": "2"}, "format version '2' is not supported"),
    ({"config": json.dumps({"arch": "tiny", "levels": 2, "width": 3})}, "unknown model config keys: width"),
    ({"config": "{not json"}, "'config' is not valid JSON"),
])
def test_wrong_metadata_is_refused(saved, changes, message):
    _, path = saved
    _rewrite(path, **changes)
    with pytest.raises(BadInputError, match=message):
        load_checkpoint(path)


def test_truncated_and_garbage_files_exit_3_naming_the_file(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a checkpoint at all")
    for bad in (truncated, garbage):
        code, _, stderr = run_cli(["info", str(bad)])
        assert code == 3 and str(bad) in stderr and "safetensors" in stderr


class _CreatesAFile:
    """Unpickling this would create a file (if anything ever unpickled it with pickle at large)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_malicious_pt_file_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _CreatesAFile(target)}, evil)
    code, stdout, stderr = run_cli(["info", str(evil)])
    assert code == 3 and stdout == ""
    assert str(evil) in stderr and "weights_only" in stderr
    assert not target.exists()


def test_pt_state_dict_with_config_loads_through_weights_only(saved, tmp_path):
    model, path = saved
    pt = tmp_path / "model.pt"
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, pt)
    loaded = load_checkpoint(pt)
    x = torch.rand(3, *model.image_shape)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode(x)["z2"], model.encode(x)["z2"])
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    with pytest.raises(BadInputError, match="carries no model config"):
        load_checkpoint(bare)
    assert load_checkpoint(bare, config=model.config).config == model.config


def test_names_resolve_in_the_pretrained_folder(saved, tmp_path, monkeypatch):
    _, path = saved
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "hali-test.safetensors").write_bytes(path.read_bytes())
    monkeypatch.setenv("HALITOOL_PRETRAINED", str(folder))
    assert resolve_checkpoint("hali-test") == folder / "hali-test.safetensors"
    assert load_checkpoint("hali-test").training == {"steps": 7}
    assert resolve_checkpoint(path) == path
    with pytest.raises(BadInputError, match="no shipped model"):
        resolve_checkpoint("hali-nothing")


def test_save_is_atomic_and_leaves_no_temporary_files(saved):
    _, path = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]
