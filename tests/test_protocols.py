"""Semi-supervised protocols and draws: known answers on separable clusters, draw invariants, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from halitool import draws, protocols
from halitool.errors import BadInputError, UsageError

ARRAY_PROTOCOLS = ("linear", "linear-heldout", "spread")


def clusters(n_train=700, n_test=200, dim=5, spread=1.0, seed=0):
    """Ten well-separated Gaussian clusters: any sensible protocol classifies them perfectly with 10 labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim)) * 25
    y_train = rng.permutation(np.arange(n_train) % 10)
    y_test = rng.permutation(np.arange(n_test) % 10)
    x_train = centres[y_train] + rng.normal(size=(n_train, dim)) * spread
    x_test = centres[y_test] + rng.normal(size=(n_test, dim)) * spread
    return x_train.astype(np.float32), y_train, x_test.astype(np.float32), y_test


@pytest.mark.parametrize("protocol", ARRAY_PROTOCOLS)
def test_separable_clusters_give_zero_error_with_10_labels(protocol):
    x, y, xt, yt = clusters()
    result = protocols.evaluate(x, y, xt, yt, n_labels=10, protocol=protocol, seeds=2)
    assert result["error_mean"] == 0.0
    assert [r["error"] for r in result["runs"]] == [0.0, 0.0]
    assert result["protocol"] == protocol and result["labels"] == 10


def test_overlapping_clusters_give_errors():
    # The same code must be able to fail: labels independent of the features give chance-level error.
    x, _, xt, _ = clusters()
    rng = np.random.default_rng(1)
    y, yt = rng.permutation(np.arange(700) % 10), rng.permutation(np.arange(200) % 10)
    result = protocols.evaluate(x, y, xt, yt, n_labels=20, protocol="linear", seeds=2)
    assert result["error_mean"] > 60


def test_balanced_draw_exact_counts_and_errors():
    labels = np.repeat(np.arange(10), 30)
    idx = draws.balanced_draw(labels, 100, np.random.default_rng(0))
    assert len(idx) == 100 and len(np.unique(idx)) == 100
    assert np.bincount(labels[idx], minlength=10).tolist() == [10] * 10
    with pytest.raises(UsageError):
        draws.balanced_draw(labels, 15, np.random.default_rng(0))
    with pytest.raises(UsageError):
        draws.balanced_draw(labels, 0, np.random.default_rng(0))
    with pytest.raises(UsageError):
        draws.balanced_draw(labels, -10, np.random.default_rng(0))
    with pytest.raises(BadInputError):
        draws.balanced_draw(labels, 310, np.random.default_rng(0))


def test_draws_are_deterministic_per_seed_and_differ_across_seeds():
    labels = np.repeat(np.arange(10), 50)
    a = draws.balanced_draw(labels, 50, np.random.default_rng(3))
    b = draws.balanced_draw(labels, 50, np.random.default_rng(3))
    c = draws.balanced_draw(labels, 50, np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.fixture
def recorder(monkeypatch):
    """A protocol that records what it is given and predicts class 0."""
    calls = []

    def run(features_train, labels_train, labelled_idx, features_test, seed, *, prepared=None, **options):
        calls.append({"seed": seed, "labelled": labelled_idx.copy(), "visible": labels_train.copy(), **options})
        return protocols.ProtocolOutput(np.zeros(len(features_test), dtype=np.int64), {})

    for name, heldout in (("spy", False), ("spy-heldout", True)):
        monkeypatch.setitem(protocols.PROTOCOLS, name, protocols.Protocol(
            name=name, classifier="spy", run=run, uses_heldout_labels=heldout))
    return calls


def test_draws_come_from_train_outside_heldout_and_labels_are_masked(recorder):
    x, y, xt, yt = clusters(n_train=600)
    protocols.evaluate(x, y, xt, yt, n_labels=30, protocol="spy", seeds=3, seed_base=5)
    n_heldout = draws.heldout_size(600)
    assert n_heldout == 100
    assert [c["seed"] for c in recorder] == [5, 6, 7]
    for call in recorder:
        idx = call["labelled"]
        assert idx.max() < 600 - n_heldout  # train rows only, never the held-out block (test rows are separate)
        assert np.bincount(y[idx], minlength=10).tolist() == [3] * 10
        visible = call["visible"]
        assert np.array_equal(np.flatnonzero(visible >= 0), idx)  # no other train label is visible
        assert np.array_equal(visible[idx], y[idx])
    assert len({tuple(c["labelled"]) for c in recorder}) == 3


def test_heldout_protocol_sees_heldout_labels_and_the_same_draw(recorder):
    x, y, xt, yt = clusters(n_train=600)
    protocols.evaluate(x, y, xt, yt, n_labels=30, protocol="spy", seeds=1)
    protocols.evaluate(x, y, xt, yt, n_labels=30, protocol="spy-heldout", seeds=1)
    plain, heldout = recorder
    assert np.array_equal(plain["labelled"], heldout["labelled"])  # paired draws across protocols
    assert np.array_equal(heldout["heldout_idx"], np.arange(500, 600))
    assert np.array_equal(np.flatnonzero(heldout["visible"] >= 0), np.r_[heldout["labelled"], np.arange(500, 600)])


@pytest.mark.parametrize("protocol", ARRAY_PROTOCOLS)
def test_same_seed_same_result(protocol):
    x, y, xt, yt = clusters(spread=12.0)  # overlapping enough that errors vary with the draw
    a = protocols.evaluate(x, y, xt, yt, n_labels=20, protocol=protocol, seeds=2, seed_base=7)
    b = protocols.evaluate(x, y, xt, yt, n_labels=20, protocol=protocol, seeds=2, seed_base=7)
    assert a["runs"] == b["runs"]
    assert [r["seed"] for r in a["runs"]] == [7, 8]


def test_all_protocols_result_shape():
    x, y, xt, yt = clusters()
    result = protocols.evaluate(x, y, xt, yt, n_labels=10, protocol="all", seeds=1)
    assert set(result["protocols"]) == set(ARRAY_PROTOCOLS)
    assert result["protocols"]["spread"]["transductive"] is True
    assert result["protocols"]["linear-heldout"]["labels_used"] == 10 + draws.heldout_size(700)


def test_row_space_fit_matches_full_fit():
    rng = np.random.default_rng(0)
    x, y, xt = rng.normal(size=(60, 300)), np.arange(60) % 6, rng.normal(size=(200, 300))
    assert protocols.row_space(x).shape == (300, 60)
    full = protocols._logistic(0.05).fit(x, y)
    reduced = protocols.fit_logistic(x, y, 0.05, solver="sklearn")
    np.testing.assert_allclose(reduced.predict_proba(xt), full.predict_proba(xt), atol=1e-3)


def test_knn_graph_matches_brute_force():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    graph = protocols.knn_graph(x, 5, batch=64).toarray()
    _, nn = NearestNeighbors(n_neighbors=6).fit(x).kneighbors(x)
    expected = np.zeros((300, 300))
    for i, row in enumerate(nn):
        expected[i, row[1:]] = 1
    np.testing.assert_array_equal(graph, np.maximum(expected, expected.T))


def test_bad_evaluate_inputs():
    x, y, xt, yt = clusters()
    with pytest.raises(UsageError):
        protocols.evaluate(x, y, xt, yt, n_labels=10, protocol="nope")
    with pytest.raises(UsageError):
        protocols.evaluate(x, y, xt, yt, n_labels=10, seeds=0)
    with pytest.raises(BadInputError):
        protocols.evaluate(x, y, xt[:0], yt[:0], n_labels=10)


def test_spread_scores_solve_the_linear_system():
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    rng = np.random.default_rng(0)
    prepared = protocols.prepare_spread(rng.normal(size=(150, 8)), rng.normal(size=(50, 8)), components=4)
    S = prepared["S"]
    labels = np.r_[np.arange(150) % 3, np.full(50, -1)]
    labelled = np.array([0, 1, 2, 30, 31, 32])
    scores, classes = protocols.spread_scores(S, labels, labelled, alpha=0.9, tol=1e-10)
    y = np.zeros((200, 3))
    y[labelled, labels[labelled]] = 1
    expected = spsolve((sp.identity(200) - 0.9 * S).tocsc(), y)
    assert classes.tolist() == [0, 1, 2]
    np.testing.assert_allclose(scores, expected, atol=1e-8)


# ------------------------------------------------------------------- the batched solver vs scikit-learn
def logistic_problem(n, dim, classes, seed, spread=3.0, duplicates=False):
    """Overlapping Gaussian classes (not separable at small C, so every C gives a different optimum)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = rng.permutation(np.arange(n) % classes)
    x = centres[y] + rng.normal(size=(n, dim)) * spread
    if duplicates:
        x[n // 2 :] = x[: n - n // 2]  # repeated rows with (mostly) other labels
    y_test = rng.integers(0, classes, 400)
    return x, y, centres[y_test] + rng.normal(size=(400, dim)) * spread


def exact_sklearn(x, y, C):
    """scikit-learn's optimum of the same objective, solved tightly (Newton with Cholesky in the row space):
    the reference for the batched solver. Returns (coef [classes, D], intercept, model on x @ basis, basis)."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    basis = protocols.row_space(x)
    with warnings.catch_warnings(), protocols._one_thread():
        warnings.simplefilter("ignore")  # "did not converge" when already at float64 rounding
        model = LogisticRegression(C=C, tol=1e-12, max_iter=1000, solver="newton-cholesky").fit(x @ basis, y)
    coef, intercept = model.coef_ @ basis.T, model.intercept_
    if len(coef) == 1:  # binary: the symmetric pair of scores
        coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
    return coef, intercept, model, basis


@pytest.mark.parametrize("shape", [(80, 200, 10, 0, False), (90, 6, 4, 1, False), (50, 20, 2, 2, False),
                                   (60, 40, 5, 3, True)], ids=["wide", "narrow", "binary", "duplicates"])
def test_batched_logistic_matches_sklearn_optimum(shape):
    # wide: a cross-validation fold of the protocol (80 rows, more columns than rows); narrow: more rows than
    # columns (row space = every column); binary: scikit-learn's binary model; duplicates: rank below n - 1.
    *args, duplicates = shape
    x, y, x_test = logistic_problem(*args, duplicates=duplicates)
    grid = [1e-3, 0.1, 10.0, 1e3]
    fits = protocols.fit_logistic_grid([x], [y], grid)
    assert fits.converged.all() and fits.coef.shape == (1, 4, len(np.unique(y)), x.shape[1])
    for j, C in enumerate(grid):
        coef, intercept, model, basis = exact_sklearn(x, y, C)
        # Same predictions on unseen rows; probabilities and weights to the stopping rule's accuracy: a Newton step
        # moving no coefficient by more than XTOL (1e-4) of the largest, solved to CG_FORCING (10 %), leaves about
        # 1e-5 of the largest coefficient; 1e-3 allows for the reference's own rounding at C = 1e3.
        np.testing.assert_array_equal(fits.predict(0, x_test)[j], model.predict(x_test @ basis))
        np.testing.assert_allclose(fits.predict_proba(0, x_test)[j], model.predict_proba(x_test @ basis), atol=1e-3)
        scale = np.abs(coef).max()
        assert np.abs(fits.coef[0, j] - coef).max() <= 1e-3 * scale
        # intercepts up to a common shift (the cross-entropy cannot see one; both solvers keep their sum at 0)
        centred = fits.intercept[0, j] - fits.intercept[0, j].mean()
        assert np.abs(centred - (intercept - intercept.mean())).max() <= 1e-3 * max(1.0, np.abs(intercept).max())


def test_batched_logistic_is_not_a_fixed_answer():
    # The comparison above can fail: a different C, or stopping after one Newton step, gives other weights.
    x, y, _ = logistic_problem(80, 50, 5, 4)
    coef, *_ = exact_sklearn(x, y, 1.0)
    assert np.abs(protocols.fit_logistic_grid([x], [y], [0.1]).coef[0, 0] - coef).max() > 1e-2 * np.abs(coef).max()
    early = protocols.fit_logistic_grid([x], [y], [1.0], max_iter=1)
    assert not early.converged.any() and early.n_iter.tolist() == [[1]]
    assert np.abs(early.coef[0, 0] - coef).max() > 1e-2 * np.abs(coef).max()


def test_batched_groups_with_different_rows_classes_and_C():
    # Every group and C is its own problem: the batch equals the problems fitted one at a time, a group without
    # a class never predicts it, and a [groups, m] grid gives each group its own C values.
    a, ya, xt = logistic_problem(70, 30, 4, 5)
    b, yb, _ = logistic_problem(50, 30, 4, 6)
    keep = yb != 3
    b, yb = b[keep], yb[keep]  # group b has no class 3
    fits = protocols.fit_logistic_grid([a, b], [ya, yb], np.array([[0.1, 10.0], [1.0, 100.0]]))
    assert fits.classes.tolist() == [0, 1, 2, 3] and fits.converged.all()
    for g, (x, y, grid) in enumerate([(a, ya, [0.1, 10.0]), (b, yb, [1.0, 100.0])]):
        for j, C in enumerate(grid):
            alone = protocols.fit_logistic(x, y, C)
            present = np.searchsorted(fits.classes, alone.classes)
            np.testing.assert_allclose(fits.coef[g, j][present], alone.coef, atol=1e-5 * np.abs(alone.coef).max())
            np.testing.assert_array_equal(fits.predict(g, xt)[j], alone.predict(xt))
            _, _, model, basis = exact_sklearn(x, y, C)
            np.testing.assert_array_equal(fits.predict(g, xt)[j], model.predict(xt @ basis))
    assert not (fits.predict(1, xt) == 3).any() and np.isneginf(fits.intercept[1][:, 3]).all()
    with pytest.raises(ValueError, match="at least 2 classes"):
        protocols.fit_logistic_grid([a], [np.zeros(len(a), dtype=int)], [1.0])


def test_stratified_folds_match_sklearn():
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(60):
        n = int(rng.integers(10, 150))
        labels = rng.choice(rng.permutation(40)[: rng.integers(2, 11)] * 3 - 7, size=n)  # any integers, any order
        k = int(min(rng.integers(2, 7), np.unique(labels, return_counts=True)[1].min()))
        if k < 2:
            continue
        seed = int(rng.integers(0, 10_000))
        expected = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), labels))
        ours = protocols.stratified_folds(labels, k, seed)
        assert len(ours) == k
        for (fit_a, val_a), (fit_b, val_b) in zip(expected, ours):
            np.testing.assert_array_equal(fit_a, fit_b)
            np.testing.assert_array_equal(val_a, val_b)
        checked += 1
    assert checked > 30


@pytest.fixture
def exact_reference(monkeypatch):
    """The scikit-learn path with lbfgs run to the optimum (its default tol=1e-4 stops large-C fits early)."""
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setattr(protocols, "_logistic", lambda C: LogisticRegression(C=C, max_iter=20_000, tol=1e-10))


def hard_features(seed=0, n_train=1200, n_test=600, dim=120):
    """Ten overlapping classes in a few informative columns plus noise columns: C matters, errors are far from 0."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n_train + n_test) % 10)
    x = rng.normal(size=(len(y), dim))
    x[:, :8] += rng.normal(size=(10, 8))[y] * 1.5
    return x[:n_train].astype(np.float32), y[:n_train], x[n_train:].astype(np.float32), y[n_train:]


@pytest.mark.parametrize("protocol", ["linear", "linear-heldout"])
def test_linear_protocols_match_the_exact_sklearn_reference(protocol, exact_reference):
    x, y, xt, yt = hard_features()
    kwargs = {"n_labels": 50, "protocol": protocol, "seeds": 3}
    ours = protocols.evaluate(x, y, xt, yt, **kwargs)
    ref = protocols.evaluate(x, y, xt, yt, **kwargs, options={protocol: {"solver": "sklearn"}})
    assert 20 < ours["error_mean"] < 90  # a problem where C matters, not a trivial one
    assert [r["C"] for r in ours["runs"]] == [r["C"] for r in ref["runs"]]
    assert abs(ours["error_mean"] - ref["error_mean"]) <= 0.2
    assert max(abs(a["error"] - b["error"]) for a, b in zip(ours["runs"], ref["runs"])) <= 0.5
    accuracy_key = "cv_accuracy" if protocol == "linear" else "heldout_accuracy"
    np.testing.assert_allclose([r[accuracy_key] for r in ours["runs"]], [r[accuracy_key] for r in ref["runs"]])


def test_seeds_batched_equal_seeds_one_by_one():
    x, y, xt, _ = hard_features(1)
    prepared = protocols.prepare_standardised(x, xt)
    draws_ = [draws.labelled_draw(y, 30, s) for s in (3, 4)]
    visible = []
    for idx in draws_:
        v = np.full(len(y), -1)
        v[idx] = y[idx]
        visible.append(v)
    batched = protocols.run_linear_seeds(x, visible, draws_, xt, [3, 4], prepared=prepared)
    for out, v, idx, seed in zip(batched, visible, draws_, (3, 4)):
        alone = protocols.run_linear(x, v, idx, xt, seed, prepared=prepared)
        assert out.details == alone.details
        np.testing.assert_array_equal(out.predictions, alone.predictions)


def test_standardised_rows_on_demand_equal_standardising_everything():
    x, _, xt, _ = hard_features(2)
    prepared = protocols.prepare_standardised(x, xt)
    rows = np.array([5, 0, 77, 1199])
    np.testing.assert_array_equal(protocols.standardised_train_rows(prepared, rows), prepared["standardizer"](x)[rows])


def test_unknown_solver_is_refused():
    x, y, xt, yt = clusters()
    with pytest.raises(ValueError, match="unknown solver"):
        protocols.evaluate(x, y, xt, yt, n_labels=10, seeds=1, options={"linear": {"solver": "lbfgs"}})
