"""The probe protocol in bounded memory (halitool.probe_streamed): the same answers as the in-memory path, the
memory it promises, and refusals before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from halitool import probe_streamed
from halitool.errors import UsageError
from halitool.features import open_features, write_features
from halitool.probe import fit_path_torch
from halitool.probe_features import probe_attributes
from halitool.standardize import Standardizer

from helpers import run_cli


def features_file(path: Path, n=(400, 120, 120), dims=(12, 5), seed=0, valid=True) -> Path:
    """z1 carries attribute 'a', z2 carries 'b', both with offsets and scales far from standard (the streamed
    statistics must not lose them); 'c' depends on both levels."""
    rng = np.random.default_rng(seed)
    split = np.repeat([0, 1, 2], n).astype(np.int8)
    if not valid:
        split[split == 1] = 0
    total = len(split)
    z1 = (rng.normal(size=(total, dims[0])) * 3 + 50).astype(np.float32)
    z2 = (rng.normal(size=(total, dims[1])) * 0.01 - 7).astype(np.float32)
    a = (z1[:, 0] - 50) / 3 + 0.3 * rng.logistic(size=total) > 0
    b = (z2[:, 1] + 7) / 0.01 + 0.3 * rng.logistic(size=total) > 0.3
    c = (z1[:, 2] - 50) / 3 + (z2[:, 0] + 7) / 0.01 + 0.3 * rng.logistic(size=total) > 0
    attr = np.stack([a, b, c], axis=1).astype(np.int8)
    return write_features(path, {"z1": z1, "z2": z2}, split, attributes=attr, attribute_names=["a", "b", "c"])


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few dozen rows: every accumulation crosses many chunk boundaries."""
    monkeypatch.setattr(probe_streamed, "CHUNK_BYTES", 4 * 17 * 40)


def test_streamed_rotation_and_weights_equal_the_in_memory_ones(tmp_path, small_chunks):
    path = features_file(tmp_path / "f.h5")
    Cs = [1e-2, 1e-1, 1.0]
    with open_features(path) as ff:
        train = ff.rows("train")
        Y = ff.attributes[train]
        reader = probe_streamed.FeatureSetReader(ff, ("z1", "z2"), {})
        assert reader.chunk_rows < len(train) // 5
        rotated, standardize = probe_streamed.rotated_training_rows(reader, train)
        X = np.concatenate([ff.read_level("z1", train), ff.read_level("z2", train)], axis=1)
    reference = Standardizer.fit(X)
    np.testing.assert_allclose(standardize.mean, reference.mean, rtol=1e-9)
    np.testing.assert_allclose(standardize.scale, reference.scale, rtol=1e-6)
    streamed = fit_path_torch(None, Y, Cs, rotated=rotated, tol=1e-7, max_iter=2000)
    in_memory = fit_path_torch(reference(X), Y, Cs, tol=1e-7, max_iter=2000)
    np.testing.assert_allclose(streamed.W, in_memory.W, atol=1e-4)
    np.testing.assert_allclose(streamed.b, in_memory.b, atol=1e-4)


def test_row_weights_fit_the_rows_of_weight_one_alone():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    Y = (X[:, :2] + 0.5 * rng.logistic(size=(300, 2)) > 0).astype(np.int8)
    keep = rng.random(300) > 0.3
    for class_weight in ("none", "balanced"):
        subset = fit_path_torch(X[keep], Y[keep], [0.1, 10.0], class_weight=class_weight, tol=1e-7, max_iter=2000)
        weighted = fit_path_torch(X, Y, [0.1, 10.0], class_weight=class_weight, tol=1e-7, max_iter=2000,
                                  row_weight=keep.astype(np.float32))
        np.testing.assert_allclose(weighted.W, subset.W, atol=1e-4)
        np.testing.assert_allclose(weighted.b, subset.b, atol=1e-4)


@pytest.mark.parametrize("valid", [True, False])
def test_the_streamed_path_gives_the_in_memory_answers(tmp_path, small_chunks, valid):
    path = features_file(tmp_path / "f.h5", dims=(40, 5), valid=valid)
    options = dict(c_grid="1e-3:1e1:5", pixel_baseline=False, device="cpu")
    in_memory = probe_attributes(path, **options, strategy="memory")
    streamed = probe_attributes(path, **options)
    assert in_memory["selection"] == streamed["selection"]
    for name in ("z1", "z2", "z1+z2"):
        assert in_memory["levels"][name]["memory"]["path"] == "memory"
        assert streamed["levels"][name]["memory"]["path"] == "streamed"
        for a, b in zip(in_memory["levels"][name]["attributes"], streamed["levels"][name]["attributes"]):
            assert a["name"] == b["name"] and a["C"] == b["C"]
            assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1 / 120 + 1e-9)  # at most one row differs
            if a["C"] is not None:
                assert a["auroc"] == pytest.approx(b["auroc"], abs=2e-3)
    # The fixture's structure is found by both: a in z1, b in z2, c only in the join.
    joined = {x["name"]: x for x in streamed["levels"]["z1+z2"]["attributes"]}
    assert joined["c"]["balanced_accuracy"] > 0.8


def test_the_in_memory_path_is_refused_when_it_does_not_fit(tmp_path):
    path = features_file(tmp_path / "f.h5", dims=(40, 5))
    with pytest.raises(UsageError, match="in-memory path"):
        probe_attributes(path, levels="z1", memory_budget=100_000, solver="sklearn", pixel_baseline=False)
    plan = probe_attributes(path, levels="z1", memory_budget=1 << 20, c_grid="1e-2:1:2",
                            pixel_baseline=False)["levels"]["z1"]["memory"]
    assert plan["path"] == "streamed" and plan["predicted_peak_bytes"] <= 1 << 20


def test_a_set_that_fits_neither_way_is_refused_naming_a_projection_that_fits(tmp_path):
    path = features_file(tmp_path / "f.h5", dims=(600, 5))
    with pytest.raises(UsageError) as info:
        probe_attributes(path, levels="z2,z1", memory_budget=8 << 20, pixel_baseline=False, device="cpu")
    message = str(info.value)
    assert "--levels z1" in message and "--memory-budget" in message and "--project 256" in message


def test_projection_is_recorded_seeded_and_keeps_a_low_rank_level_s_information(tmp_path):
    # z1: 64 columns spanning a 4-dimensional subspace. A Gaussian projection to 16 columns is one-to-one on it,
    # so every linear probe of z1 is still possible: with (almost) no regularisation, whose strength is what a
    # change of basis changes, the projected probes predict as the exact ones.
    rng = np.random.default_rng(5)
    split = np.repeat([0, 1, 2], [500, 150, 150]).astype(np.int8)
    latent = rng.normal(size=(800, 4))
    z1 = (latent @ rng.normal(size=(4, 64)) + rng.normal(size=64) * 10).astype(np.float32)
    z2 = rng.normal(size=(800, 3)).astype(np.float32)
    attr = np.stack([latent[:, 0] + 0.3 * rng.logistic(size=800) > 0,
                     latent[:, 1] - latent[:, 2] + 0.3 * rng.logistic(size=800) > 0], axis=1).astype(np.int8)
    path = write_features(tmp_path / "f.h5", {"z1": z1, "z2": z2}, split, attributes=attr, attribute_names=["a", "b"])
    options = dict(levels="z1,z2", c_grid="1e3:1e4:2", pixel_baseline=False, device="cpu")
    exact = probe_attributes(path, **options)
    first = probe_attributes(path, **options, project=16, seed=3)
    again = probe_attributes(path, **options, project=16, seed=3)
    other = probe_attributes(path, **options, project=16, seed=4)
    plan = first["levels"]["z1"]["memory"]
    assert plan["path"] == "streamed"
    assert plan["projection"] == {"z1": {"kind": "gaussian random projection of the standardised level",
                                         "from": 64, "to": 16, "seed": 3}}
    assert "projection" not in first["levels"]["z2"]["memory"]  # 3 columns: nothing to project
    assert first["levels"]["z1"]["attributes"] == again["levels"]["z1"]["attributes"]
    with open_features(path) as ff:
        train = ff.rows("train")
        m3, m3_again, m4 = (probe_streamed.fit_projection(ff, "z1", train, 16, seed).matrix for seed in (3, 3, 4))
    assert m3.shape == (64, 16) and np.array_equal(m3, m3_again) and not np.allclose(m3, m4)
    # Invariance, seen once more: another projection of the same subspace predicts the same.
    assert [a["accuracy"] for a in other["levels"]["z1"]["attributes"]] == pytest.approx(
        [a["accuracy"] for a in first["levels"]["z1"]["attributes"]], abs=1.5 / 150)
    for projected, reference in zip(first["levels"]["z1"]["attributes"], exact["levels"]["z1"]["attributes"]):
        assert reference["balanced_accuracy"] > 0.8
        assert projected["accuracy"] == pytest.approx(reference["accuracy"], abs=1.5 / 150)
        assert projected["auroc"] == pytest.approx(reference["auroc"], abs=2e-3)


def test_memory_budget_option(tmp_path):
    path = features_file(tmp_path / "f.h5")
    code, out, err = run_cli(["probe-attributes", str(path), "--memory-budget", "1GB", "--no-pixel-baseline",
                              "--format", "json", "--C-grid", "1e-2:1:3"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["memory_budget"] == 1 << 30 and doc["levels"]["z1"]["memory"]["path"] == "streamed"
    code, _, err = run_cli(["probe-attributes", str(path), "--memory-budget", "lots"])
    assert code == 2 and "--memory-budget 'lots'" in err


@pytest.mark.slow
def test_streamed_peak_rss_stays_within_twice_the_level(tmp_path):
    """A level of 40,000 x 768 float32 (117 MiB) streamed under a 300 MiB budget: the child's peak RSS above the
    same interpreter with the same modules and the file open stays below twice the level's bytes, while the
    in-memory path on the same file needs several times the level."""
    rng = np.random.default_rng(0)
    n, d = 40_000, 768
    split = np.repeat([0, 1, 2], [32_000, 4_000, 4_000]).astype(np.int8)
    z = rng.normal(size=(n, d)).astype(np.float32)
    attr = np.stack([z[:, k] + rng.logistic(size=n) > 0 for k in range(4)], axis=1).astype(np.int8)
    path = write_features(tmp_path / "big.h5", {"z1": z}, split, attributes=attr, attribute_names=list("abcd"))
    level_bytes = z.nbytes
    del z
    # VmHWM, the peak RSS of this program's own memory map: getrusage's ru_maxrss would also count the pytest
    # process this child was forked from, which it keeps across exec.
    script = f"""
import json, sys
from halitool.features import open_features
import halitool.probe_features as pf, torch
with open_features({str(path)!r}) as ff:
    ff.attributes
if sys.argv[1] != "baseline":
    strategy = "memory" if sys.argv[1] == "memory" else "auto"
    r = pf.probe_attributes({str(path)!r}, c_grid="1e-2:1:3", pixel_baseline=False, device="cpu",
                            memory_budget={300 << 20} if strategy == "auto" else None, strategy=strategy)
    print(json.dumps(r["levels"]["z1"]["memory"]))
else:
    print("{{}}")
print(next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(arg: str) -> tuple[dict, int]:
        out = subprocess.run([sys.executable, "-c", script, arg], capture_output=True, text=True, env=env,
                             timeout=600, check=True).stdout.splitlines()
        return json.loads(out[-2]), int(out[-1])

    _, baseline = run("baseline")
    plan, streamed = run("streamed")
    assert plan["path"] == "streamed"
    assert streamed - baseline < 2 * level_bytes, (streamed - baseline, level_bytes)
    plan, in_memory = run("memory")
    assert plan["path"] == "memory" and in_memory - baseline > 2 * level_bytes
