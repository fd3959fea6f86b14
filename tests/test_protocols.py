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
