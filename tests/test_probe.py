"""Known-answer tests of the probe metrics, solvers and protocol (pure functions over arrays)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from halitool.errors import UsageError
from halitool.probe import (
    accuracy, auroc, balanced_accuracy, fit_path_sklearn, fit_path_torch, parse_c_grid, probe_arrays,
    stratified_subset,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted(n: int, dim: int, n_attributes: int, seed: int, scale: float = 3.0):
    """Features, labels drawn from logistic models along known directions, and the true probabilities."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    directions = rng.normal(size=(dim, n_attributes)) * scale / np.sqrt(dim)
    offsets = np.linspace(-2.5, 0, n_attributes)
    logits = X @ directions + offsets
    Y = (logits + rng.logistic(size=logits.shape) > 0).astype(np.int8)
    return X, Y, 1 / (1 + np.exp(-logits))


# metrics ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.2 + 0.1 * seed).astype(np.int8)
    pred = (rng.random(300) < 0.4).astype(np.int8)
    scores = np.round(rng.normal(size=300) + y, 1)  # rounding makes many ties
    assert accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert balanced_accuracy(y, pred) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert auroc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores))


def test_metrics_hand_cases():
    y = np.array([0, 0, 0, 1])
    assert accuracy(y, [0, 0, 0, 0]) == 0.75
    assert balanced_accuracy(y, [0, 0, 0, 0]) == 0.5
    assert balanced_accuracy(y, [0, 1, 0, 1]) == pytest.approx((2 / 3 + 1) / 2)
    assert auroc(y, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc(y, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert auroc(y, [1, 1, 1, 1]) == 0.5  # all tied: one half per pair
    assert auroc(y, [0.1, 0.5, 0.2, 0.5]) == pytest.approx((1 + 0.5 + 1) / 3)
    assert math.isnan(auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert balanced_accuracy([1, 1], [1, 0]) == 0.5


def test_c_grid_parsing():
    assert parse_c_grid("1e-2:1e0:3") == pytest.approx([0.01, 0.1, 1.0])
    assert parse_c_grid("1, 0.1,1") == pytest.approx([0.1, 1.0])
    for bad in ("", "a:b:c", "1:0.1:3", "0,1", "1e-3:1:0", "1:2"):
        with pytest.raises(UsageError):
            parse_c_grid(bad)


def test_stratified_subset_keeps_proportions():
    key = np.repeat([0, 1, 2], [900, 90, 10])
    idx = stratified_subset(key, 100, np.random.default_rng(0))
    assert len(idx) == len(np.unique(idx)) == 100
    assert np.bincount(key[idx]).tolist() == [90, 9, 1]
    assert np.array_equal(idx, stratified_subset(key, 100, np.random.default_rng(0)))


# solvers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("class_weight", ["none", "balanced"])
def test_torch_solver_matches_sklearn(class_weight):
    X, Y, _ = planted(3000, 20, 5, seed=1)
    Xte, Yte, _ = planted(3000, 20, 5, seed=1)  # same directions (same seed), new rows below
    rng = np.random.default_rng(9)
    Xte = rng.normal(size=Xte.shape).astype(np.float32)
    Cs = [1e-3, 1e-2, 1e-1, 10.0]
    fast = fit_path_torch(X, Y, Cs, class_weight=class_weight)
    ref = fit_path_sklearn(X, Y, Cs, class_weight=class_weight)
    for c in range(len(Cs)):
        acc_fast = ((Xte @ fast.W[c].T + fast.b[c]) > 0).mean(axis=0)
        acc_ref = ((Xte @ ref.W[c].T + ref.b[c]) > 0).mean(axis=0)
        assert np.abs(acc_fast - acc_ref).max() <= 0.005
        # The same optimum, not only the same accuracy: weights agree closely.
        assert np.abs(fast.W[c] - ref.W[c]).max() <= 2e-2 * max(1.0, np.abs(ref.W[c]).max())


def test_torch_solver_reaches_a_lower_or_equal_objective_than_sklearn():
    X, Y, _ = planted(2000, 10, 3, seed=2)
    C = 1.0
    fast = fit_path_torch(X, Y, [C])
    ref = fit_path_sklearn(X, Y, [C])

    def objective(W, b):
        M = X.astype(np.float64) @ W.T.astype(np.float64) + b
        return C * (np.logaddexp(0, M) - Y * M).sum(0) + 0.5 * (W.astype(np.float64) ** 2).sum(1)

    assert np.all(objective(fast.W[0], fast.b[0]) <= objective(ref.W[0], ref.b[0]) * (1 + 1e-6))


# protocol ----------------------------------------------------------------------------------------------
def split3(X, Y, n_train, n_valid):
    a, b = n_train, n_train + n_valid
    return X[:a], Y[:a], X[a:b], Y[a:b], X[b:], Y[b:]


def test_planted_attributes_reach_bayes_accuracy():
    X, Y, prob = planted(4000 + 1000 + 20000, 10, 4, seed=3)
    result = probe_arrays(*split3(X, Y, 4000, 1000), names=list("abcd"), Cs=parse_c_grid("1e-3:1e1:5"))
    bayes = ((prob[5000:] > 0.5) == Y[5000:]).mean(axis=0)  # the true model's accuracy on the same test rows
    for attr, best in zip(result["attributes"], bayes):
        assert attr["accuracy"] >= best - 0.01
        assert 0.5 < attr["auroc"] <= 1
    assert result["selection"] == {"split": "valid", "n": 1000}


def test_constant_attribute_is_reported_not_fitted():
    X, Y, _ = planted(1500, 5, 2, seed=4)
    Y = np.concatenate([Y, np.zeros((len(Y), 1), np.int8), np.ones((len(Y), 1), np.int8)], axis=1)
    result = probe_arrays(*split3(X, Y, 1000, 200), names=["a", "b", "zeros", "ones"], Cs=[0.1, 1.0])
    zeros, ones = result["attributes"][2], result["attributes"][3]
    assert zeros["accuracy"] == ones["accuracy"] == 1.0
    assert zeros["C"] is None and math.isnan(zeros["auroc"]) and ones["positive_rate"] == 1.0
    assert result["attributes"][0]["C"] in (0.1, 1.0)


@pytest.mark.parametrize("with_valid", [True, False])
def test_leakage_guard_test_labels_never_reach_selection(with_valid):
    X, Y, _ = planted(3200, 8, 4, seed=5, scale=1.0)
    n_valid = 600 if with_valid else 0
    X, Y = (np.concatenate([a[:2000 + n_valid], a[2600:]]) for a in (X, Y))  # 600 test rows either way
    parts = list(split3(X, Y, 2000, n_valid))
    Cs = parse_c_grid("1e-4:1e1:6")
    honest = probe_arrays(*parts, names=list("abcd"), Cs=Cs, seed=1)
    parts[5] = 1 - parts[5]  # every test label flipped
    corrupted = probe_arrays(*parts, names=list("abcd"), Cs=Cs, seed=1)
    assert [a["C"] for a in honest["attributes"]] == [a["C"] for a in corrupted["attributes"]]
    for h, c in zip(honest["attributes"], corrupted["attributes"]):
        assert c["accuracy"] == pytest.approx(1 - h["accuracy"])  # same predictions, scored on flipped labels
    if not with_valid:
        assert honest["selection"]["split"] == "train_holdout" and honest["selection"]["n"] == 300


def test_selection_depends_on_the_selection_labels():
    """The guard above can fail: corrupting the rows that do select C changes the choice."""
    X, Y, _ = planted(3200, 8, 4, seed=5, scale=1.0)
    parts = list(split3(X, Y, 2000, 600))
    Cs = parse_c_grid("1e-4:1e1:6")
    honest = probe_arrays(*parts, names=list("abcd"), Cs=Cs)
    parts[3] = 1 - parts[3]
    flipped = probe_arrays(*parts, names=list("abcd"), Cs=Cs)
    assert [a["C"] for a in honest["attributes"]] != [a["C"] for a in flipped["attributes"]]


def test_holdout_protocol_with_both_solvers_agrees():
    X, Y, _ = planted(2500, 6, 3, seed=6)
    parts = split3(X, Y, 1500, 0)
    Cs = [1e-2, 1.0]
    kwargs = dict(names=list("abc"), Cs=Cs, metric="balanced_accuracy", class_weight="balanced", seed=2)
    fast = probe_arrays(*parts, solver="torch", **kwargs)
    ref = probe_arrays(*parts, solver="sklearn", **kwargs)
    for f, r in zip(fast["attributes"], ref["attributes"]):
        # Every attribute varies, so both fit it and choose a C of the grid. They reach the same optimum at each C,
        # so only a near tie of the hold-out metric can tip them apart, and then to neighbouring Cs.
        assert f["C"] in Cs and r["C"] in Cs, (f, r)
        assert abs(Cs.index(f["C"]) - Cs.index(r["C"])) <= 1, (f, r)
        # The same C: the same model. Neighbouring Cs of a near tie: models of nearly the same quality (here the
        # two Cs' test metrics differ by at most 0.003 for either solver).
        tolerance = 0.005 if f["C"] == r["C"] else 0.02
        for key in ("balanced_accuracy", "auroc"):
            assert abs(f[key] - r[key]) <= tolerance, (key, f, r)
