"""MIG and MIG-sup: known answers in the style of disentanglement_lib's tests, agreement with a plain per-pair
implementation (numpy's histogram and scikit-learn's mutual_info_score), and `halitool disentanglement` end to
end on small features files in the real format."""

from __future__ import annotations

import csv
import io
import json

import h5py
import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from halitool.disentanglement import (
    ConstantFactorError, disentanglement_scores, histogram_codes, mig, mig_sup, mutual_information,
)
from halitool.features import write_features
from helpers import run_cli

N = 10_000


def scores(latents, factors, discrete=None, bins=20):
    factors = np.asarray(factors, dtype=np.float64)
    discrete = [False] * factors.shape[1] if discrete is None else discrete
    result = disentanglement_scores(np.asarray(latents, dtype=np.float32), factors, discrete, bins)
    return result["mig"]["score"], result["mig_sup"]["score"], result


def independent_factors(n=N, seed=0):
    """Two continuous factors and one discrete (5 values), independent of each other."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(size=n), rng.normal(size=n), rng.integers(0, 5, size=n)], axis=1)


# ------------------------------------------------------------------------------------------- known answers
def test_latents_that_are_the_factors_score_one():
    factors = independent_factors()
    mig_score, sup_score, result = scores(factors, factors, [False, False, True])
    # Below 1 only by the plug-in estimate's bias for the second-best (independent) dimension: ~ (20 - 1)^2 /
    # (2 N) nats of ~3 nats of entropy.
    assert mig_score > 0.98 and sup_score > 0.98
    np.testing.assert_array_equal(result["mig"]["top"], [0, 1, 2])
    # I(z_k; v_k) = H(v_k) exactly: the same codes.
    np.testing.assert_allclose(np.diag(result["mutual_information"]), result["entropies"], rtol=1e-12)


def test_constant_latents_score_zero():
    factors = independent_factors()
    mig_score, sup_score, result = scores(np.zeros((N, 4)), factors, [False, False, True])
    assert mig_score == 0.0 and sup_score == 0.0
    assert not result["mig_sup"]["active"].any()  # nothing varies: MIG-sup has no dimension to average


def test_a_factor_copied_into_two_dimensions_has_no_mig_gap_but_full_mig_sup():
    v = independent_factors()[:, :2]
    latents = np.stack([v[:, 0], v[:, 0], v[:, 1]], axis=1)
    mig_score, sup_score, result = scores(latents, v)
    # MIG penalises the redundancy: factor 0 is equally in dimensions 0 and 1 (gap 0), factor 1 alone in 2.
    assert result["mig"]["gaps"][0] == 0.0 and result["mig"]["gaps"][1] > 0.98
    assert 0.49 < mig_score < 0.5
    # MIG-sup does not: each dimension still informs about one factor only.
    assert sup_score > 0.98


def test_a_dimension_that_holds_two_factors_has_a_low_mig_sup_but_full_mig():
    rng = np.random.default_rng(1)
    v = rng.integers(0, 4, size=(N, 2))
    both = 4 * v[:, 0] + v[:, 1]  # one dimension from which both factors can be read
    latents = np.stack([both, rng.normal(size=N)], axis=1)
    mig_score, sup_score, result = scores(latents, v, [True, True])
    assert result["mig_sup"]["active"].all()
    # Dimension 0 tells all of each factor: its normalised MIs are 1 and 1, a gap of 0; dimension 1 tells none.
    assert result["mig_sup"]["gaps"][0] < 1e-9 and sup_score < 0.01
    # MIG cannot see it: each factor's best dimension (0) beats the next (1) by its whole entropy.
    assert mig_score > 0.99


def test_scores_do_not_depend_on_the_order_of_dimensions():
    rng = np.random.default_rng(2)
    v = independent_factors(seed=3)
    latents = np.concatenate([v[:, :2] + 0.3 * rng.normal(size=(N, 2)), rng.normal(size=(N, 5))], axis=1)
    order = rng.permutation(latents.shape[1])
    mig_a, sup_a, a = scores(latents, v, [False, False, True])
    mig_b, sup_b, b = scores(latents[:, order], v, [False, False, True])
    assert mig_a == pytest.approx(mig_b, abs=1e-12) and sup_a == pytest.approx(sup_b, abs=1e-12)
    np.testing.assert_array_equal(a["mutual_information"][:, order], b["mutual_information"])
    np.testing.assert_array_equal(order[b["mig"]["top"]], a["mig"]["top"])  # the same dimension, renamed


def test_a_factor_with_a_single_value_is_refused():
    with pytest.raises(ConstantFactorError) as caught:
        scores(np.zeros((10, 2)), np.stack([np.arange(10), np.ones(10)], axis=1))
    assert caught.value.index == 1


def test_too_few_dimensions_or_factors_leave_the_gap_undefined():
    mi, entropies = np.ones((3, 1)), np.ones(3)
    assert mig(mi, entropies) is None and mig_sup(mi, entropies)["score"] == 0.0
    assert mig_sup(np.ones((1, 4)), np.ones(1)) is None and mig(np.ones((1, 4)), np.ones(1))["score"] == 0.0


# ------------------------------------------------------------------------- agreement with a plain reference
def reference_codes(column, bins):
    """disentanglement_lib's discretiser, one column at a time: codes 0..bins-1."""
    return np.digitize(column, np.histogram(column, bins)[1][:-1]) - 1


def reference_scores(latents, factors, discrete, bins):
    """MIG and MIG-sup the plain way: one scikit-learn mutual_info_score per (dimension, factor) pair."""
    z = [reference_codes(latents[:, j], bins) for j in range(latents.shape[1])]
    v = [factors[:, k] if discrete[k] else reference_codes(factors[:, k], bins) for k in range(factors.shape[1])]
    mi = np.array([[mutual_info_score(vk, zj) for zj in z] for vk in v])
    h = np.array([mutual_info_score(vk, vk) for vk in v])
    ordered = np.sort(mi, axis=1)[:, ::-1]
    mig_score = np.mean((ordered[:, 0] - ordered[:, 1]) / h)
    normalised = np.sort(mi / h[:, None], axis=0)[::-1]
    active = latents.var(axis=0) > 1e-2
    sup_score = np.mean((normalised[0] - normalised[1])[active])
    return mi, mig_score, sup_score


def test_agrees_with_a_per_pair_reference_to_1e6():
    rng = np.random.default_rng(4)
    n = 3000
    v = independent_factors(n, seed=5)
    latents = np.concatenate([
        v[:, :1] + 0.2 * rng.normal(size=(n, 1)),  # mostly factor 0
        np.tanh(v[:, 1:2]) * 3 + v[:, 2:3],  # factors 1 and 2 mixed
        np.round(rng.normal(size=(n, 2)), 1),  # values repeated, many on bin edges
        rng.standard_cauchy(size=(n, 2)),  # outliers stretch the range: most values in few bins
        np.full((n, 1), 7.0),  # constant: one code
    ], axis=1).astype(np.float32)
    for bins in (20, 7):
        mi, mig_score, sup_score = reference_scores(latents, v, [False, False, True], bins)
        got_mig, got_sup, result = scores(latents, v, [False, False, True], bins)
        np.testing.assert_allclose(result["mutual_information"], mi, atol=1e-6, rtol=0)
        assert got_mig == pytest.approx(mig_score, abs=1e-6) and got_sup == pytest.approx(sup_score, abs=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_histogram_codes_are_numpys_bins(dtype):
    rng = np.random.default_rng(6)
    edges = np.linspace(-1.3, 2.9, 21)
    columns = [rng.normal(size=500) * 10, np.tile(edges, 25)[:500], np.full(500, 3.0),
               rng.integers(-3, 4, size=500), rng.exponential(size=500) ** 3]
    values = np.stack(columns, axis=1).astype(dtype)
    expected = np.stack([reference_codes(values[:, j], 20) for j in range(values.shape[1])], axis=1)
    np.testing.assert_array_equal(histogram_codes(values, 20), expected)


def test_mutual_information_matrix_matches_scikit_learn_on_the_same_codes():
    rng = np.random.default_rng(7)
    latent_codes = rng.integers(0, 6, size=(800, 9)).astype(np.uint8)
    factor_codes = np.stack([latent_codes[:, 2] // 2, rng.integers(0, 4, size=800)], axis=1).astype(np.int64)
    mi = mutual_information(latent_codes, 6, factor_codes, [3, 4])
    expected = [[mutual_info_score(factor_codes[:, k], latent_codes[:, j]) for j in range(9)] for k in range(2)]
    np.testing.assert_allclose(mi, expected, atol=1e-12)


# ---------------------------------------------------------------------------------------------- the command
def small_features(path, factors=True, labels=True, n=(300, 0, 300)):
    """z1 [2, 2, 2] whose dimension 5 is factor 'size'; z2 [3] whose dimension 1 is 'angle'; class 0-2."""
    rng = np.random.default_rng(0)
    split = np.repeat([0, 1, 2], n).astype(np.int8)
    total = len(split)
    size, angle = rng.uniform(size=total), rng.normal(size=total)
    z1 = rng.normal(size=(total, 2, 2, 2)).astype(np.float32)
    z1[:, 1, 0, 1] = size
    z2 = rng.normal(size=(total, 3)).astype(np.float32)
    z2[:, 1] = angle
    kwargs = {}
    if factors:
        kwargs.update(factors=np.stack([size, angle], axis=1), factor_names=["size", "angle"])
    if labels:
        kwargs.update(labels=np.arange(total) % 3)
    return write_features(path, {"z1": z1, "z2": z2}, split, **kwargs)


def test_json_result_names_what_it_measured(tmp_path):
    path = small_features(tmp_path / "f.h5")
    code, out, err = run_cli(["disentanglement", str(path), "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["command"] == "disentanglement" and doc["split"] == "test" and doc["rows"] == 300
    assert [f["name"] for f in doc["factors"]] == ["size", "angle", "class"]
    assert [f["discrete"] for f in doc["factors"]] == [False, False, True]
    assert [f["codes"] for f in doc["factors"]] == [20, 20, 3]
    assert doc["discretization"]["method"] == "histogram" and doc["discretization"]["bins"] == 20
    assert doc["units"] == "nats" and set(doc["levels"]) == {"z1", "z2"}
    z1, z2 = doc["levels"]["z1"], doc["levels"]["z2"]
    assert z1["shape"] == [2, 2, 2] and z1["dimensions"] == 8 and z2["dimensions"] == 3
    assert {"mig", "mig_sup", "active_dimensions", "factors"} <= set(z1) and "mutual_information" not in z1
    by_name = {f["name"]: f for f in z1["factors"]}
    # Dimension (1, 0, 1) is size. Its gap is below 1 by the plug-in estimate's bias on 300 rows: an independent
    # dimension still shows about (20 - 1)^2 / (2 x 300) = 0.6 nats of size's 3.
    assert by_name["size"]["top_dimension"] == 5 and 0.7 < by_name["size"]["mig"] < 0.9
    assert {f["name"]: f for f in z2["factors"]}["angle"]["top_dimension"] == 1
    assert 0 <= z1["mig"] <= 1 and 0 <= z1["mig_sup"] <= 1 and doc["seconds"] >= 0


def test_levels_factors_bins_and_split_options(tmp_path):
    path = small_features(tmp_path / "f.h5")
    code, out, err = run_cli(["disentanglement", str(path), "--levels", "z1+z2", "--factors", "angle,size",
                              "--bins", "10", "--split", "all", "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc["levels"]) == ["z1+z2"] and doc["levels"]["z1+z2"]["dimensions"] == 11
    assert [f["name"] for f in doc["factors"]] == ["angle", "size"] and doc["rows"] == 600
    assert doc["discretization"]["bins"] == 10
    tops = {f["name"]: f["top_dimension"] for f in doc["levels"]["z1+z2"]["factors"]}
    assert tops == {"angle": 9, "size": 5}  # z2's dimension 1 follows z1's 8 in the joined set


def test_csv_result_and_mutual_information_csv(tmp_path):
    path = small_features(tmp_path / "f.h5")
    code, out, err = run_cli(["disentanglement", str(path), "--format", "csv", "--mi-csv", str(tmp_path / "mi.csv")])
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["level"], r["factor"]) for r in rows] == [(lv, f) for lv in ("z1", "z2") for f in ("size", "angle",
                                                                                                  "class")]
    assert {"level_mig", "level_mig_sup", "entropy", "mig", "top_dimension", "second_mi"} <= set(rows[0])
    matrix = list(csv.DictReader((tmp_path / "mi.csv").open()))
    assert list(matrix[0]) == ["level", "dimension", "size", "angle", "class"]
    assert [(r["level"], int(r["dimension"])) for r in matrix] == [("z1", j) for j in range(8)] + [
        ("z2", j) for j in range(3)]
    size = [float(r["size"]) for r in matrix if r["level"] == "z1"]
    assert int(np.argmax(size)) == 5 and all(v >= 0 for v in size)


def test_outputs_are_not_overwritten_without_force(tmp_path):
    path = small_features(tmp_path / "f.h5")
    for option in ("-o", "--mi-csv"):
        target = tmp_path / f"exists{option}.txt"
        target.write_text("precious")
        code, out, err = run_cli(["disentanglement", str(path), option, str(target)])
        assert code == 2 and "--force" in err and out == "" and target.read_text() == "precious"
        code, _, err = run_cli(["disentanglement", str(path), option, str(target), "--force"])
        assert code == 0, err
        assert target.read_text() != "precious"


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("Error:")]


@pytest.mark.parametrize("args, code, mentions", [
    (["--factors", "size,weight"], 2, ["--factors", "'weight'", "size, angle, class"]),
    (["--levels", "z3"], 2, ["--levels", "'z3'"]),
    (["--bins", "1"], 2, ["--bins"]),
], ids=["unknown-factor", "unknown-level", "one-bin"])
def test_bad_options_are_usage_errors_on_one_line(tmp_path, args, code, mentions):
    path = small_features(tmp_path / "f.h5")
    got, out, err = run_cli(["disentanglement", str(path), *args])
    lines = _error_lines(err)
    assert got == code and out == "" and len(lines) == 1 and "Traceback" not in err, err
    assert all(m in lines[0] for m in mentions), lines[0]


def test_a_file_without_factors_or_classes_is_bad_input_naming_it(tmp_path):
    path = small_features(tmp_path / "bare.h5", factors=False, labels=False)
    code, out, err = run_cli(["disentanglement", str(path)])
    lines = _error_lines(err)
    assert code == 3 and out == "" and len(lines) == 1, err
    assert "bare.h5" in lines[0] and "no factors" in lines[0]


def test_an_older_file_without_factors_is_measured_against_its_class(tmp_path):
    path = small_features(tmp_path / "old.h5", factors=False)
    code, out, err = run_cli(["disentanglement", str(path), "--format", "json"])
    assert code == 0, err
    assert [f["name"] for f in json.loads(out)["factors"]] == ["class"]
    # One factor: MIG-sup, a gap between factors, is undefined; MIG is still there.
    level = json.loads(out)["levels"]["z1"]
    assert level["mig_sup"] is None and level["mig"] is not None


def test_a_factor_with_one_value_on_the_rows_is_bad_input(tmp_path):
    path = small_features(tmp_path / "f.h5")
    with h5py.File(path, "a") as h5:
        h5["labels/factors"][300:, 1] = 0.5  # angle is constant on the test rows
    code, out, err = run_cli(["disentanglement", str(path)])
    lines = _error_lines(err)
    assert code == 3 and len(lines) == 1 and "'angle'" in lines[0] and "--factors" in lines[0], err
    code, _, err = run_cli(["disentanglement", str(path), "--factors", "size,class", "--format", "json"])
    assert code == 0, err


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = small_features(tmp_path / "f.h5")
    png = tmp_path / "mi.png"
    code, _, err = run_cli(["disentanglement", str(path), "--plot", str(png), "--format", "json"])
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_one_line_exit_2(tmp_path, no_matplotlib):
    path = small_features(tmp_path / "f.h5")
    png = tmp_path / "mi.png"
    code, out, err = run_cli(["disentanglement", str(path), "--plot", str(png)])
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and "matplotlib" in lines[0] and out == "", err
    assert not png.exists()
