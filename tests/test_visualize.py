"""reconstruct / sample / interpolate on the tiny architecture, grid geometry, fidelity metrics with known
answers, and the reference classifier's cache."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from halitool import fidelity, grids, reference, visualize
from halitool.checkpoint import load_checkpoint
from halitool.data import open_dataset
from halitool.errors import BadInputError
from helpers import run_cli, write_tiny_checkpoint

CELL = 28 + grids.PAD  # one 28x28 image plus its border


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Reference classifiers go to a per-test data home, trained for a handful of steps."""
    monkeypatch.setenv("HALITOOL_DATA", str(tmp_path / "home"))
    monkeypatch.setattr(reference, "DEFAULT_SETTINGS", reference.ReferenceSettings(epochs=1, batch_size=20, max_steps=3))


@pytest.fixture
def ckpt(tmp_path):
    return write_tiny_checkpoint(tmp_path / "tiny.safetensors")


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


# ------------------------------------------------------------------------------------------------- grids
def test_grid_geometry_and_placement():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 1, 3, 4)).astype(np.float32) / 255
    grid = grids.grid_array(images, nrow=2)
    assert grid.shape == (3 * (3 + 1) + 1, 2 * (4 + 1) + 1) and grid.dtype == np.uint8
    for i in range(5):
        r, c = divmod(i, 2)
        top, left = 1 + r * 4, 1 + c * 5
        np.testing.assert_array_equal(grid[top: top + 3, left: left + 4], np.rint(images[i, 0] * 255))
    assert (grid[0] == 255).all() and (grid[:, 0] == 255).all()
    assert (grid[9:, 6:] == 255).all()  # the empty sixth cell stays white
    rgb = grids.grid_array(np.zeros((3, 3, 2, 2), np.float32), nrow=3)
    assert rgb.shape == (2 + 1 + 1, 3 * (2 + 1) + 1, 3)


# ------------------------------------------------------------------------------------------------ commands
def _reconstruct(ckpt, mnist_dir, out, *extra):
    return run_cli(["reconstruct", str(ckpt), "--data", f"mnist:{mnist_dir}", "-o", str(out), *extra])


def test_reconstruct_grid_json_and_determinism(ckpt, mnist_dir, tmp_path):
    code, stdout, stderr = _reconstruct(ckpt, mnist_dir, tmp_path / "a.png", "-n", "6", "--limit", "30",
                                        "--format", "json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["command"] == "reconstruct" and doc["schema_version"] == 1
    assert doc["output"] == str(tmp_path / "a.png") and doc["split"] == "test" and doc["n_images"] == 30
    assert set(doc["levels"]) == {"z1", "z2"}
    for m in doc["levels"].values():
        assert m["mse"] >= 0 and 0 <= m["class_kept"] <= 1 and 0 <= m["agreement"] <= 1
    assert 0 <= doc["reference_accuracy"] <= 1
    assert doc["reference"]["trained_now"] and (tmp_path / "home" / "reference").is_dir()
    # inputs + one row per level, 6 columns
    assert _png(tmp_path / "a.png").shape == (3 * CELL + 1, 6 * CELL + 1)
    # The first row holds the real images chosen (MNIST sample ids are row numbers).
    ds = open_dataset(f"mnist:{mnist_dir}")
    first = _png(tmp_path / "a.png")[1: 29, 1: 29]
    np.testing.assert_array_equal(first, ds.images([doc["grid"]["sample_ids"][0]])[0, 0])

    assert _reconstruct(ckpt, mnist_dir, tmp_path / "b.png", "-n", "6", "--limit", "30")[0] == 0
    assert _reconstruct(ckpt, mnist_dir, tmp_path / "c.png", "-n", "6", "--limit", "30", "--seed", "1")[0] == 0
    a, b, c = ((tmp_path / f"{x}.png").read_bytes() for x in "abc")
    assert a == b and a != c


def test_reconstruct_table_prints_the_path(ckpt, mnist_dir, tmp_path):
    code, stdout, stderr = _reconstruct(ckpt, mnist_dir, tmp_path / "r.png", "-n", "2", "--limit", "10",
                                        "--format", "table")
    assert code == 0, stderr
    assert stdout == f"{tmp_path / 'r.png'}\n"
    assert "class kept" in stderr and "z2" in stderr


def test_existing_output_needs_force(ckpt, mnist_dir, tmp_path):
    out = tmp_path / "g.png"
    out.write_bytes(b"keep")
    for args in (["reconstruct", str(ckpt), "--data", f"mnist:{mnist_dir}", "-o", str(out), "--limit", "5"],
                 ["sample", str(ckpt), "-o", str(out)],
                 ["interpolate", str(ckpt), "--data", f"mnist:{mnist_dir}", "-o", str(out)]):
        code, stdout, stderr = run_cli(args)
        assert code == 2 and "already exists" in stderr and stdout == ""
        assert out.read_bytes() == b"keep"
    code, _, stderr = run_cli(["sample", str(ckpt), "-o", str(out), "-n", "4", "--force"])
    assert code == 0, stderr
    assert _png(out).shape == (2 * CELL + 1, 2 * CELL + 1)


def test_sample_grid_size_and_seed(ckpt, tmp_path):
    outs = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        code, stdout, stderr = run_cli(["sample", str(ckpt), "-o", str(tmp_path / f"{name}.png"), "-n", "10",
                                        "--seed", seed, "--format", "json"])
        assert code == 0, stderr
        doc = json.loads(stdout)
        assert (doc["n"], doc["columns"], doc["rows"]) == (10, 4, 3)
        outs.append((tmp_path / f"{name}.png").read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]
    assert _png(tmp_path / "a.png").shape == (3 * CELL + 1, 4 * CELL + 1)


def test_interpolate_grid_endpoints_and_seed(ckpt, mnist_dir, tmp_path):
    args = ["interpolate", str(ckpt), "--data", f"mnist:{mnist_dir}", "--pairs", "2", "--steps", "3",
            "--format", "json"]
    code, stdout, stderr = run_cli([*args, "-o", str(tmp_path / "a.png")])
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert (doc["rows"], doc["columns"], doc["levels"]) == (4, 5, ["z1", "z2"])
    grid = _png(tmp_path / "a.png")
    assert grid.shape == (4 * CELL + 1, 5 * CELL + 1)
    ds = open_dataset(f"mnist:{mnist_dir}")
    for pair, (a, b) in enumerate(doc["sample_ids"]):
        for level_row in range(2):
            top = 1 + (2 * pair + level_row) * CELL
            np.testing.assert_array_equal(grid[top: top + 28, 1: 29], ds.images([a])[0, 0])
            np.testing.assert_array_equal(grid[top: top + 28, 1 + 4 * CELL: 4 * CELL + 29], ds.images([b])[0, 0])
    assert run_cli([*args, "-o", str(tmp_path / "b.png")])[0] == 0
    assert run_cli([*args, "-o", str(tmp_path / "c.png"), "--seed", "5"])[0] == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()


def test_interpolation_ends_are_the_reconstructions(ckpt, mnist_dir):
    model = load_checkpoint(ckpt).model
    ds = open_dataset(f"mnist:{mnist_dir}")
    x = torch.from_numpy(ds.images(np.arange(4))).float() / 255
    with torch.no_grad():
        lines = model.interpolations(x[:2], x[2:], steps=4)
        for level in ("z1", "z2"):
            assert lines[level].shape == (2, 4, 1, 28, 28)
            torch.testing.assert_close(lines[level][:, 0], model.reconstruct(x[:2], level))
            torch.testing.assert_close(lines[level][:, -1], model.reconstruct(x[2:], level))


# ------------------------------------------------------------------------------------------------ metrics
class _Stub:
    """A stand-in model: reconstructions are ``fn(x)`` at every level."""

    level_names = ["z1", "z2"]
    device = torch.device("cpu")

    def __init__(self, fn):
        self.fn = fn

    def reconstruct(self, x, level):
        return self.fn(x)


def test_class_kept_known_answers(mnist_dir, tmp_path):
    ds = open_dataset(f"mnist:{mnist_dir}")
    clf = reference.reference_classifier(ds)
    idx = ds.indices("test")
    x = torch.from_numpy(ds.images(idx)).float() / 255
    on_input = clf.predict(x).numpy()
    truth = ds.labels[idx]

    # Perfect reconstructions keep the class exactly as often as the classifier is right on the real images.
    same = fidelity.fidelity(_Stub(lambda x: x.clone()), ds, idx, clf, batch_size=7)
    accuracy = reference.accuracy(clf, ds, idx)
    assert accuracy == pytest.approx(float((on_input == truth).mean()))
    assert same["reference_accuracy"] == pytest.approx(accuracy)
    for m in same["levels"].values():
        assert m["mse"] == 0 and m["class_kept"] == pytest.approx(accuracy) and m["agreement"] == 1

    # Blank reconstructions all get the classifier's answer for a blank image.
    blank_class = int(clf.predict(torch.zeros(1, 1, 28, 28))[0])
    blank = fidelity.fidelity(_Stub(torch.zeros_like), ds, idx, clf, batch_size=7)
    for m in blank["levels"].values():
        assert m["class_kept"] == pytest.approx(float((truth == blank_class).mean()))
        assert m["agreement"] == pytest.approx(float((on_input == blank_class).mean()))
        assert m["mse"] == pytest.approx(float((x ** 2).mean()), rel=1e-5)

    assert fidelity.class_kept(np.array([1, 2, 3, 4]), np.array([1, 0, 3, 0])) == 0.5


def test_no_labels_gives_mse_only(ckpt, mnist_dir, tmp_path, monkeypatch):
    unlabelled = dataclasses.replace(open_dataset(f"mnist:{mnist_dir}"), labels=None, class_names=None)
    with pytest.raises(BadInputError, match="no class labels"):
        reference.reference_classifier(unlabelled)
    monkeypatch.setattr(visualize, "open_dataset", lambda spec: unlabelled)
    code, stdout, stderr = _reconstruct(ckpt, mnist_dir, tmp_path / "r.png", "-n", "2", "--limit", "8",
                                        "--format", "json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["reference_accuracy"] is None and doc["reference"] is None
    assert all(m["class_kept"] is None and m["mse"] > 0 for m in doc["levels"].values())
    assert not (tmp_path / "home" / "reference").exists()


# ------------------------------------------------------------------------------------------- reference cache
def test_reference_cache_reuse_and_corruption(mnist_dir, tmp_path):
    ds = open_dataset(f"mnist:{mnist_dir}")
    first = reference.reference_classifier(ds)
    assert first.trained_now and first.path.parent == tmp_path / "home" / "reference"
    assert first.path.name.startswith("mnist-") and first.path.read_bytes()[:8] != b"\x80\x02\x8a\x0a"

    again = reference.reference_classifier(ds)
    assert not again.trained_now and again.path == first.path
    for name, t in first.net.state_dict().items():
        assert torch.equal(t, again.net.state_dict()[name]), name

    # One flipped byte in the tensor data (the end of the file) is detected and the classifier retrained.
    data = bytearray(first.path.read_bytes())
    data[-3] ^= 0xFF
    first.path.write_bytes(bytes(data))
    fixed = reference.reference_classifier(ds)
    assert fixed.trained_now
    assert not reference.reference_classifier(ds).trained_now  # the replaced file is valid again

    first.path.write_bytes(first.path.read_bytes()[:100])  # truncated
    assert reference.reference_classifier(ds).trained_now

    # Other training settings or other training data: another key.
    other = reference.reference_classifier(ds, settings=reference.ReferenceSettings(epochs=1, batch_size=20, max_steps=2))
    assert other.key != first.key and other.trained_now
