"""Semi-supervised classification protocols with few labels: pure functions over feature arrays.

A *protocol* turns frozen features (or, for ``finetune``, a model and images) plus a handful of labels into
predictions for the test rows. Every protocol is registered in :data:`PROTOCOLS` under its name and has the
signature ``run(features_train, labels_train, labelled_idx, features_test, seed, *, prepared=None, **options)
-> ProtocolOutput``. ``labels_train`` is masked by the caller: ``-1`` everywhere except the labelled draw
(and, for ``linear-heldout`` only, the held-out validation rows), so a protocol cannot see labels it is not
entitled to. ``prepared`` is the seed-independent work (standardisation, PCA, the kNN graph) from the protocol's
``prepare(features_train, features_test)``, computed once and shared by every seed.

:func:`evaluate` runs protocols over seeds and returns the result dict of ``halitool semisup``; the pipeline
that resolves its SOURCE and data is :mod:`halitool.semisup`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

from halitool.draws import draw_hash, heldout_size, labelled_draw
from halitool.errors import BadInputError, UsageError
from halitool.standardize import Standardizer

# Logistic-regression inverse regularisation strengths tried by the linear protocols (half decades).
C_GRID = tuple(float(c) for c in np.logspace(-4, 3, 15))
SPREAD_ALPHA = 0.99  # Zhou et al. 2004: how much of a node's score comes from its neighbours
SPREAD_NEIGHBOURS = 10
SPREAD_COMPONENTS = 50


class ProtocolOutput(NamedTuple):
    """Predicted class of every test row, and what the protocol chose (e.g. ``{"C": 0.1}``)."""

    predictions: np.ndarray
    details: dict


# ----------------------------------------------------------------------------------------- helpers
def _one_thread():
    """BLAS on one thread for the scikit-learn fits: fits on ~100 rows are dominated by thread start-up and
    contention (10-100x slower on a loaded 2-core machine with the default thread pool). scikit-learn (and the
    BLAS that scipy's lbfgs uses) is imported first: threadpoolctl limits only the libraries already loaded."""
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _logistic(C: float):
    from sklearn.linear_model import LogisticRegression

    # lbfgs minimises the multinomial cross-entropy (sklearn's default for > 2 classes).
    return LogisticRegression(C=C, max_iter=2000, tol=1e-4)


def row_space(x: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``[D, r]`` (r <= n) of the span of the rows of ``x``.

    With an L2 penalty the logistic weights lie in the span of the training rows (representer theorem), so a
    fit on ``x @ basis`` (n x r) has the same optimum, predictions and loss as a fit on ``x`` (n x D): with
    100 labels and 848-wide features that is 8x fewer columns and the same answer.
    """
    _, s, vt = np.linalg.svd(np.asarray(x, dtype=np.float64), full_matrices=False)
    return vt[s > s.max() * 1e-10].T if s.size and s.max() > 0 else np.zeros((x.shape[1], 0))


SOLVERS = ("torch", "sklearn")


def _check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose {', '.join(SOLVERS)}")


class LinearModel(NamedTuple):
    """A fitted linear classifier: class scores ``x @ coef.T + intercept`` (``coef`` [classes, D]), the
    prediction is ``classes[argmax]``. Two classes are kept as the symmetric pair of score rows."""

    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray

    def decision_function(self, x):
        return _scores(x, self.coef, self.intercept)

    def predict(self, x):
        return self.classes[self.decision_function(x).argmax(axis=1)]

    def predict_proba(self, x):
        return _softmax(self.decision_function(x))


def fit_logistic(x: np.ndarray, y: np.ndarray, C: float, solver: str = "torch") -> LinearModel:
    """L2 multinomial logistic regression (intercept unpenalised) fitted in the row space of x.

    ``solver="torch"``: :func:`fit_logistic_grid` (the optimum of scikit-learn's objective); ``"sklearn"``:
    scikit-learn's lbfgs (tol 1e-4) on ``x @ row_space(x)``, the reference implementation kept for tests and
    benchmarks.
    """
    _check_solver(solver)
    if solver == "torch":
        fits = fit_logistic_grid([x], [y], [C])
        return LinearModel(fits.coef[0, 0], fits.intercept[0, 0], fits.classes)
    basis = row_space(x)
    model = _logistic(C).fit(np.asarray(x, dtype=np.float64) @ basis, y)
    coef, intercept = model.coef_ @ basis.T, model.intercept_
    if len(coef) == 1:  # binary: one score w.x + b, i.e. the pair -(w.x + b)/2, (w.x + b)/2
        coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
    return LinearModel(coef, intercept, model.classes_)


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's ``StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y)``, without importing it:
    the same (fit rows, validation rows) pairs in the same order (tests compare the two).

    Classes are numbered by first appearance; the per-class fold sizes come from dealing the sorted labels round
    robin over the k folds; each class's fold numbers are shuffled by one ``RandomState(seed)`` in that order.
    """
    y = np.asarray(y)
    _, first, inverse = np.unique(y, return_index=True, return_inverse=True)
    encoded = np.argsort(np.argsort(first))[inverse.ravel()]
    n_classes = len(first)
    order = np.sort(encoded)
    allocation = np.asarray([np.bincount(order[i::k], minlength=n_classes) for i in range(k)])
    rng = np.random.RandomState(seed)
    test_folds = np.empty(len(y), dtype=np.int64)
    for c in range(n_classes):
        folds_for_class = np.arange(k).repeat(allocation[:, c])
        rng.shuffle(folds_for_class)
        test_folds[encoded == c] = folds_for_class
    return [(np.flatnonzero(test_folds != i), np.flatnonzero(test_folds == i)) for i in range(k)]


def _cv_splits(y: np.ndarray, seed: int, folds: int) -> list:
    """The stratified folds of :func:`choose_c_cv` (none when a class has a single row)."""
    k = int(min(folds, np.unique(y, return_counts=True)[1].min()))
    return stratified_folds(y, k, seed) if k >= 2 else []


def _cv_choice(accuracy: np.ndarray, logloss: np.ndarray, grid: Sequence[float], k: int) -> dict:
    best = min(range(len(grid)), key=lambda j: (-round(accuracy[j], 9), logloss[j], grid[j]))
    return {"C": float(grid[best]), "cv_folds": k, "cv_accuracy": float(accuracy[best])}


def choose_c_cv(x: np.ndarray, y: np.ndarray, seed: int, grid: Sequence[float] = C_GRID, folds: int = 5,
                solver: str = "torch") -> dict:
    """C by stratified k-fold cross-validation on the labelled rows alone.

    ``k = min(folds, smallest class count)``; with 10 labels per class that is 5 folds holding out 2 per class.
    The best mean accuracy wins; ties (frequent with 20 validation rows) go to the lower mean log-loss, then to
    the smaller C. With one row per class no fold is possible and the grid's median C is used.
    """
    return choose_c_cv_seeds([x], [y], [seed], grid, folds, solver)[0]


def choose_c_cv_seeds(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], seeds: Sequence[int],
                      grid: Sequence[float] = C_GRID, folds: int = 5, solver: str = "torch") -> list[dict]:
    """:func:`choose_c_cv` for several draws (rows ``xs[i]``, labels ``ys[i]``, fold seed ``seeds[i]``); with the
    torch solver every draw x fold x C is fitted at once."""
    _check_solver(solver)
    splits = [_cv_splits(np.asarray(y), seed, folds) for y, seed in zip(ys, seeds)]
    scores = []  # per draw and fold: (predictions [len(grid), rows], probabilities [len(grid), rows, classes], classes)
    if solver == "torch":
        groups = [(i, fit_rows) for i, folds_i in enumerate(splits) for fit_rows, _ in folds_i]
        fits = fit_logistic_grid([xs[i][rows] for i, rows in groups], [ys[i][rows] for i, rows in groups],
                                 grid) if groups else None
        g = 0
        for i, folds_i in enumerate(splits):
            scores.append([])
            for _, val_rows in folds_i:
                decision = fits.decision_function(g, xs[i][val_rows])
                scores[-1].append((fits.classes[decision.argmax(-1)], _softmax(decision), fits.classes))
                g += 1
    else:
        with _one_thread():
            for i, folds_i in enumerate(splits):
                scores.append([])
                for fit_rows, val_rows in folds_i:
                    fold = [fit_logistic(xs[i][fit_rows], ys[i][fit_rows], C, "sklearn") for C in grid]
                    scores[-1].append((np.stack([m.predict(xs[i][val_rows]) for m in fold]),
                                       np.stack([m.predict_proba(xs[i][val_rows]) for m in fold]), fold[0].classes))
    choices = []
    for i, folds_i in enumerate(splits):
        k = len(folds_i)
        if k == 0:
            choices.append({"C": float(np.median(grid)), "cv_folds": 0})
            continue
        accuracy = np.zeros(len(grid))
        logloss = np.zeros(len(grid))
        for (_, val_rows), (pred, proba, classes) in zip(folds_i, scores[i]):
            y_val = ys[i][val_rows]
            accuracy += (pred == y_val).mean(axis=1) / k
            col = np.searchsorted(classes, y_val)
            logloss -= np.log(np.clip(proba[:, np.arange(len(col)), col], 1e-12, None)).mean(axis=1) / k
        choices.append(_cv_choice(accuracy, logloss, grid, k))
    return choices


# ------------------------------------------------------------------------------- batched logistic solver
# Every (group of rows, C) problem is solved by one inexact Newton method, all problems at once in torch (float64).
# A problem stops after a Newton step that moves no coefficient by more than XTOL x the largest one: the step
# solved the Newton system to CG_FORCING, so about CG_FORCING x XTOL (1e-5) of the largest coefficient is left
# (measured against scikit-learn's tight optimum: docs/semisup.md), or when every gradient entry of the mean
# objective is below GTOL. scikit-learn's lbfgs stops at 1e-4 on that gradient, which leaves large-C fits short
# of their optimum (at C = 1e3 weights about 20 % off, probabilities up to 0.08: docs/semisup.md).
XTOL = 1e-4
GTOL = 1e-9
NEWTON_MAX_ITER = 100
CG_FORCING = 0.1  # each Newton direction solves H d = -g to 10 % (finer or adaptive forcing cost more work)
CG_MAX_ITER = 250
ARMIJO = 1e-4
MAX_BACKTRACKS = 30
COMPACT = 0.75  # the conjugate gradients drop finished columns once a quarter of the batch's columns are done
PROBLEMS_PER_BATCH = 75  # problems per batched solve: 5 folds x 15 C, [5, 80, 10, 15] float64 tensors


class LogisticFits(NamedTuple):
    """L2 multinomial logistic regressions for every (group, C): group ``g``'s model at ``C = grid[j]`` gives a
    row x the class scores ``x @ coef[g, j].T + intercept[g, j]``; the prediction is ``classes[argmax]``.
    ``n_iter`` counts Newton iterations, ``converged`` says whether a stopping test was met (not the iteration
    limit, nor a line search that found no decrease)."""

    coef: np.ndarray  # [groups, len(grid), classes, D]
    intercept: np.ndarray  # [groups, len(grid), classes]
    classes: np.ndarray
    n_iter: np.ndarray  # [groups, len(grid)]
    converged: np.ndarray  # [groups, len(grid)]

    def decision_function(self, g: int, x: np.ndarray) -> np.ndarray:
        """Scores ``[len(grid), rows, classes]`` of group ``g``'s models on rows ``x``."""
        m, K, D = self.coef[g].shape
        scores = _scores(x, self.coef[g].reshape(m * K, D), self.intercept[g].reshape(m * K))
        return scores.reshape(len(scores), m, K).transpose(1, 0, 2)

    def predict(self, g: int, x: np.ndarray) -> np.ndarray:
        return self.classes[self.decision_function(g, x).argmax(axis=-1)]

    def predict_proba(self, g: int, x: np.ndarray) -> np.ndarray:
        return _softmax(self.decision_function(g, x))


def _scores(x: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """``x @ coef.T + intercept`` in float64, with torch on one thread: numpy's threaded BLAS took 17 ms for a
    20 x 848 x 150 product on the loaded 2-core machine (docs/benchmarks.md)."""
    import torch

    with _torch_threads(1):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
        return torch.addmm(torch.from_numpy(np.asarray(intercept, dtype=np.float64)), x,
                           torch.from_numpy(np.asarray(coef, dtype=np.float64)).T).numpy()


def _softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _torch_threads(n: int):
    """torch on ``n`` intra-op threads inside the block (restored after): the batched fits are thousands of small
    operations, and on a loaded 2-core machine two OpenMP threads made them 30x slower (docs/benchmarks.md)."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def limit():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return limit()


def _centred_bases(xs: Sequence[np.ndarray]):
    """Per group: the mean row [G, D], an orthonormal basis V [G, D, r] of the span of the centred rows, and the
    rows' coordinates Z = (x - mean) V [G, n, r] (padded to the largest group with zero rows and columns)."""
    import torch

    n = max(len(x) for x in xs)
    xc = torch.zeros(len(xs), n, np.asarray(xs[0]).shape[1], dtype=torch.float64)
    means = torch.zeros(len(xs), xc.shape[2], dtype=torch.float64)
    for g, x in enumerate(xs):
        x = torch.from_numpy(np.asarray(x, dtype=np.float64))
        means[g] = x.mean(0)
        xc[g, : len(x)] = x - means[g]
    # Householder QR of the transposed rows, then the SVD of the small triangle: an exactly orthonormal basis
    # for a third of the cost of the SVD of the n x D rows.
    q, r = torch.linalg.qr(xc.transpose(1, 2))  # xc^T = q r
    ur, s, vrh = torch.linalg.svd(r.transpose(1, 2), full_matrices=False)  # xc = ur diag(s) (q vr)^T
    keep = s > s[:, :1] * 1e-10  # row_space's threshold
    rank = int(keep.sum(1).max()) if s.numel() else 0
    s, ur, keep = s[:, :rank], ur[:, :, :rank], keep[:, :rank]
    basis = (q @ vrh.transpose(1, 2)[:, :, :rank]) * keep[:, None, :]
    return means, basis, ur * (s * keep)[:, None, :]


def _newton_cg(z, onehot, weight, lam, gtol: float, xtol: float, max_iter: int):
    """Minimise sum_i w_i CE(softmax(z_i theta), y_i) + 1/2 sum lam theta^2 for every group and column at once.

    ``z`` [G, n, p] float64 (padded rows have weight 0), ``onehot`` [G, n, K, 1], ``weight`` [G, n, 1, 1],
    ``lam`` [G, p, 1, m] (0 on unpenalised rows); the parameters ``theta`` are [G, p, K, m]: column j of group g
    is one problem. Inexact Newton: directions from :func:`_newton_direction`, then Armijo backtracking; a
    problem stops at the step test (``xtol``) or the gradient test (``gtol`` x its number of rows on the sum
    objective's gradient), and a column leaves the batch once every group is done with it.
    Returns theta, Newton iterations [G, m] and converged [G, m].
    """
    import torch

    G, n, p = z.shape
    K, m = onehot.shape[2], lam.shape[-1]
    zt = z.transpose(1, 2)
    z2t = (z * z).transpose(1, 2)
    limit = gtol * weight.sum((1, 2, 3))[:, None]
    theta = z.new_zeros(G, p, K, m)
    iters = torch.zeros(G, m, dtype=torch.long)
    converged = torch.zeros(G, m, dtype=torch.bool)
    done = torch.zeros(G, m, dtype=torch.bool)
    cols = torch.arange(m)
    th, logits, lam_c = theta.clone(), z.new_zeros(G, n, K, m), lam

    def cross_entropy(scores):  # [G, c]
        shifted = scores - scores.amax(2, keepdim=True)
        lse = shifted.exp().sum(2, keepdim=True).log()
        return (weight * (lse - (shifted * onehot).sum(2, keepdim=True))).sum((1, 2))

    for _ in range(max_iter):
        shifted = logits - logits.amax(2, keepdim=True)
        prob = shifted.exp()
        total = prob.sum(2, keepdim=True)
        prob /= total
        grad = (zt @ (weight * (prob - onehot)).reshape(G, n, -1)).view(th.shape).addcmul_(lam_c, th)
        small = grad.abs().amax((1, 2)) <= limit
        converged[:, cols] |= small
        done[:, cols] |= small
        active = ~done[:, cols]
        alive = active.any(0)
        if not alive.all():  # retire the columns every group is done with
            theta[..., cols[~alive]] = th[..., ~alive]
            cols = cols[alive]
            th, logits, lam_c, prob, grad, active, shifted, total = (
                t[..., alive] for t in (th, logits, lam_c, prob, grad, active, shifted, total))
            if not len(cols):
                break
        iters[:, cols] += active
        d = _newton_direction(z, zt, z2t, weight, prob, lam_c, grad, active)
        tiny_step = active & (d.abs().amax((1, 2)) <= xtol * th.abs().amax((1, 2)))
        # Armijo backtracking for every problem at once (inactive ones have d = 0); the scores along the step are
        # logits + t q, and the penalty is a quadratic in t
        q = (z @ d.reshape(G, p, -1)).view(logits.shape)
        slope = torch.linalg.vecdot(grad.flatten(1, 2), d.flatten(1, 2), dim=1)
        pen = 0.5 * (lam_c * th * th).sum((1, 2))
        f0 = (weight * (total.log() - (shifted * onehot).sum(2, keepdim=True))).sum((1, 2)) + pen
        pen_th_d, pen_d_d = (lam_c * th * d).sum((1, 2)), 0.5 * (lam_c * d * d).sum((1, 2))
        t = torch.ones_like(f0)
        ok = ~active
        for _ in range(MAX_BACKTRACKS):
            f1 = cross_entropy(logits + t[:, None, None, :] * q) + pen + t * pen_th_d + t * t * pen_d_d
            ok |= f1 <= f0 + ARMIJO * t * slope
            if ok.all():
                break
            t = torch.where(ok, t, 0.5 * t)
        t = torch.where(ok, t, 0.0)  # no decrease found (float64 rounding): stop there
        converged[:, cols] |= tiny_step & ok
        done[:, cols] |= tiny_step | ~ok
        th.addcmul_(t[:, None, None, :], d)
        logits.addcmul_(t[:, None, None, :], q)
    theta[..., cols] = th
    return theta, iters, converged


def _newton_direction(z, zt, z2t, weight, prob, lam, grad, active):
    """An approximate Newton direction d, H d = -g to :data:`CG_FORCING` of |g|, for every active problem.

    Preconditioned conjugate gradients on every problem at once; a column leaves the batch as soon as all its
    problems are done. The preconditioner is the Hessian's diagonal, projected onto the directions whose sum
    over the classes is zero: the optimum lies there (adding one vector to every class leaves the cross-entropy
    unchanged and only raises the penalty; the intercepts' sum is free and stays 0), and so do the gradient and
    every Hessian product.
    """
    import torch

    G, n, p = z.shape
    wprob = weight * prob
    inv_diag = ((z2t @ (wprob * (1 - prob)).reshape(G, n, -1)).view(grad.shape) + lam).clamp_min_(1e-12).reciprocal_()
    out = torch.zeros_like(grad)

    def dot(a, b):  # [G, c]
        return torch.linalg.vecdot(a.flatten(1, 2), b.flatten(1, 2), dim=1)

    def precondition(r):
        u = r * inv_diag
        return u.sub_(u.mean(2, keepdim=True))

    r = -grad * active[:, None, None, :]
    u = precondition(r)
    ru = dot(r, u)
    stop = CG_FORCING ** 2 * ru  # on the preconditioned residual norm r.M^-1.r
    fallback, active_all = u, active
    d = torch.zeros_like(r)
    direction = u.clone()
    cc = torch.arange(grad.shape[-1])
    for _ in range(CG_MAX_ITER):
        go = (ru > stop) & active
        keep = go.any(0)
        if keep.sum() <= COMPACT * len(cc):  # the columns whose every problem is done leave the batch
            out[..., cc[~keep]] = d[..., ~keep]
            cc = cc[keep]
            d, r, direction, ru, stop, go, active, wprob, prob, lam, inv_diag = (
                t[..., keep] for t in (d, r, direction, ru, stop, go, active, wprob, prob, lam, inv_diag))
            if not len(cc):
                break
        q = (z @ direction.reshape(G, p, -1)).view(G, n, *direction.shape[2:])
        q.sub_(torch.linalg.vecdot(prob, q, dim=2).unsqueeze(2)).mul_(wprob)
        hd = (zt @ q.reshape(G, n, -1)).view(direction.shape).addcmul_(lam, direction)
        step = torch.where(go, ru / dot(direction, hd).clamp_min(1e-300), 0.0)[:, None, None, :]
        d.addcmul_(step, direction)
        r.addcmul_(step, hd, value=-1.0)
        u = precondition(r)
        ru_new = dot(r, u)
        beta = torch.where(go, ru_new / ru.clamp_min(1e-300), 0.0)[:, None, None, :]
        direction.mul_(beta).add_(u)
        ru = ru_new
    out[..., cc] = d
    # a direction that is not downhill (rounding on a badly conditioned system) falls back to the
    # preconditioned steepest descent direction, which is
    uphill = (dot(out, grad) >= 0) & active_all
    return torch.where(uphill[:, None, None, :], fallback, out) if uphill.any() else out


def fit_logistic_grid(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], grid: Sequence[float] | np.ndarray,
                      *, gtol: float = GTOL, xtol: float = XTOL,
                      max_iter: int = NEWTON_MAX_ITER) -> LogisticFits:
    """scikit-learn's L2 multinomial logistic regression (``LogisticRegression(C)``: sum of cross-entropies +
    ||W||^2 / (2 C), intercept unpenalised) for every group of rows ``xs[g]`` (labels ``ys[g]``) at every C of
    ``grid``, all fitted at once in torch (float64).

    ``grid`` is one sequence of m C values for every group, or an array ``[groups, m]`` (a row per group). Each
    group is fitted in the span of its centred rows (as in :func:`row_space`: the optimal weights lie there, so
    a fit has at most n_g columns; the intercept absorbs the centring) by an inexact Newton method
    (:func:`_newton_cg`, stopping rules :data:`XTOL`, :data:`GTOL`). ``classes`` is the union of the labels; a
    group without some class never predicts it (score -inf), as scikit-learn fitted on that group alone. With
    two classes in a group the result is scikit-learn's binary logistic regression (the symmetric two-class model
    at C / 2 has the same scores). The intercepts are defined up to a common shift; here they sum to 0.
    """
    ys = [np.asarray(y) for y in ys]
    if len(xs) != len(ys) or not len(xs):
        raise ValueError("fit_logistic_grid needs one label array per group and at least one group")
    classes = np.unique(np.concatenate(ys))
    grid = np.asarray(grid, dtype=np.float64)
    grid = np.broadcast_to(grid, (len(xs), grid.shape[-1])) if grid.ndim == 1 else grid
    by_classes: dict[tuple, list[int]] = {}
    for g, y in enumerate(ys):
        by_classes.setdefault(tuple(np.unique(y)), []).append(g)
    if any(len(present) < 2 for present in by_classes):
        raise ValueError("logistic regression needs at least 2 classes in every group")
    if len(by_classes) == 1:  # the usual case: every group holds every class
        coef, intercept, n_iter, converged = _fit_groups(xs, ys, classes, grid, gtol, xtol, max_iter)
        return LogisticFits(coef, intercept, classes, n_iter, converged)
    G, m, D = len(xs), grid.shape[1], np.asarray(xs[0]).shape[1]
    coef = np.zeros((G, m, len(classes), D))
    intercept = np.full((G, m, len(classes)), -np.inf)
    n_iter = np.zeros((G, m), dtype=np.int64)
    converged = np.zeros((G, m), dtype=bool)
    for present, members in by_classes.items():
        cols = np.searchsorted(classes, present)
        part = _fit_groups([xs[g] for g in members], [ys[g] for g in members], np.asarray(present),
                           grid[members], gtol, xtol, max_iter)
        for i, g in enumerate(members):
            coef[g][:, cols] = part[0][i]
            intercept[g][:, cols] = part[1][i]
            n_iter[g], converged[g] = part[2][i], part[3][i]
    return LogisticFits(coef, intercept, classes, n_iter, converged)


def _fit_groups(xs, ys, classes, grid, gtol, xtol, max_iter):
    """:func:`fit_logistic_grid` for groups that all hold exactly ``classes``, about :data:`PROBLEMS_PER_BATCH`
    problems per batched solve: (coef, intercept, n_iter, converged) as numpy arrays."""
    parts = []
    per_batch = max(1, PROBLEMS_PER_BATCH // grid.shape[1])
    with _torch_threads(1):
        for start in range(0, len(xs), per_batch):
            rows = slice(start, start + per_batch)
            parts.append(_fit_batch(xs[rows], ys[rows], classes, grid[rows], gtol, xtol, max_iter))
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def _fit_batch(xs, ys, classes, grid, gtol, xtol, max_iter):
    import torch

    means, basis, z = _centred_bases(xs)
    G, n, rank = z.shape
    K = len(classes)
    z = torch.cat([z, torch.zeros(G, n, 1, dtype=z.dtype)], dim=2)  # the intercept's column
    onehot = torch.zeros(G, n, K, 1, dtype=z.dtype)
    weight = torch.zeros(G, n, 1, 1, dtype=z.dtype)
    for g, y in enumerate(ys):
        rows = torch.arange(len(y))
        z[g, rows, rank] = 1.0
        onehot[g, rows, torch.from_numpy(np.searchsorted(classes, y)), 0] = 1.0
        weight[g, rows] = 1.0
    # 1 / C on the coefficients, 0 on the intercept; binary: the symmetric pair at C / 2 is scikit-learn's binary fit
    lam = torch.from_numpy((2.0 if K == 2 else 1.0) / np.asarray(grid))[:, None, None, :].repeat(1, rank + 1, 1, 1)
    lam[:, rank] = 0.0
    theta, iters, converged = _newton_cg(z, onehot, weight, lam, gtol, xtol, max_iter)
    # back to the original columns: coef [G, m, K, D]; the intercept absorbs the centring
    coef = torch.einsum("gdr,grkm->gmkd", basis, theta[:, :rank])
    intercept = theta[:, rank].permute(0, 2, 1) - torch.einsum("gmkd,gd->gmk", coef, means)
    return coef.numpy(), intercept.numpy(), iters.numpy(), converged.numpy()


# --------------------------------------------------------------------------------------- protocols
def prepare_standardised(features_train: np.ndarray, features_test: np.ndarray) -> dict:
    """Standardise with the statistics of every train row (unlabelled rows included: no labels involved).

    The test rows are standardised here; train rows on demand by :func:`standardised_train_rows` (a protocol
    reads its labelled rows and, for ``linear-heldout``, the held-out block: standardising every train row
    would cost more than the fits).
    """
    standardize = Standardizer.fit(features_train)
    return {"standardizer": standardize, "features_train": features_train, "test": standardize(features_test)}


def standardised_train_rows(prepared: dict, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the standardised train features of :func:`prepare_standardised` (float32, the same values
    as standardising every row and indexing)."""
    return prepared["standardizer"](prepared["features_train"][rows])


def _fit_each(xs, ys, Cs, solver: str) -> list[LinearModel]:
    """One model per draw i: rows ``xs[i]``, labels ``ys[i]``, ``C = Cs[i]`` (torch: one batched solve)."""
    if solver == "sklearn":
        with _one_thread():
            return [fit_logistic(x, y, C, "sklearn") for x, y, C in zip(xs, ys, Cs)]
    fits = fit_logistic_grid(xs, ys, np.asarray(Cs, dtype=np.float64)[:, None])
    return [LinearModel(fits.coef[g, 0], fits.intercept[g, 0], fits.classes) for g in range(len(xs))]


def _predict_each(models: Sequence[LinearModel], x: np.ndarray) -> list[np.ndarray]:
    """Every model's predictions on the rows ``x``: one matrix product for all (a pass over ``x`` per model
    costs more than the products when ``x`` is 10,000 x 848)."""
    if len({len(model.classes) for model in models}) > 1:
        return [model.predict(x) for model in models]
    K = len(models[0].classes)
    scores = _scores(x, np.concatenate([model.coef for model in models]),
                     np.concatenate([model.intercept for model in models]))
    winners = scores.reshape(len(scores), len(models), K).argmax(axis=2)
    return [model.classes[winners[:, i]] for i, model in enumerate(models)]


def run_linear(features_train, labels_train, labelled_idx, features_test, seed, *, prepared=None, grid=C_GRID,
               folds: int = 5, solver: str = "torch") -> ProtocolOutput:
    """Multinomial logistic regression on standardised features; C by cross-validation on the N labels."""
    return run_linear_seeds(features_train, [labels_train], [labelled_idx], features_test, [seed],
                            prepared=prepared, grid=grid, folds=folds, solver=solver)[0]


def run_linear_seeds(features_train, labels_train, labelled_idx, features_test, seeds, *, prepared=None,
                     grid=C_GRID, folds: int = 5, solver: str = "torch") -> list[ProtocolOutput]:
    """:func:`run_linear` for several draws at once (``labels_train[i]``, ``labelled_idx[i]`` are seed
    ``seeds[i]``'s). With the torch solver every draw x fold x C of the cross-validation is one batched fit and
    the draws' final fits another; ``solver="sklearn"`` fits them one by one with scikit-learn (the reference)."""
    _check_solver(solver)
    prepared = prepared or prepare_standardised(features_train, features_test)
    xs = [standardised_train_rows(prepared, idx).astype(np.float64) for idx in labelled_idx]
    ys = [np.asarray(labels)[idx] for labels, idx in zip(labels_train, labelled_idx)]
    choices = choose_c_cv_seeds(xs, ys, seeds, grid, folds, solver)
    models = _fit_each(xs, ys, [choice["C"] for choice in choices], solver)
    return [ProtocolOutput(pred, choice) for pred, choice in zip(_predict_each(models, prepared["test"]), choices)]


def run_linear_heldout(features_train, labels_train, labelled_idx, features_test, seed, *, heldout_idx,
                       prepared=None, grid=C_GRID, solver: str = "torch") -> ProtocolOutput:
    """ALI's protocol: C with the best accuracy on the labelled held-out rows ``heldout_idx`` (ties: smaller C)."""
    return run_linear_heldout_seeds(features_train, [labels_train], [labelled_idx], features_test, [seed],
                                    heldout_idx=heldout_idx, prepared=prepared, grid=grid, solver=solver)[0]


def run_linear_heldout_seeds(features_train, labels_train, labelled_idx, features_test, seeds, *, heldout_idx,
                             prepared=None, grid=C_GRID, solver: str = "torch") -> list[ProtocolOutput]:
    """:func:`run_linear_heldout` for several draws at once (torch: every draw x C in one batched fit)."""
    _check_solver(solver)
    prepared = prepared or prepare_standardised(features_train, features_test)
    xs = [standardised_train_rows(prepared, idx).astype(np.float64) for idx in labelled_idx]
    ys = [np.asarray(labels)[idx] for labels, idx in zip(labels_train, labelled_idx)]
    yvs = [np.asarray(labels)[heldout_idx] for labels in labels_train]
    if any((yv < 0).any() for yv in yvs):
        raise ValueError("linear-heldout needs the labels of its held-out rows")
    xv = standardised_train_rows(prepared, heldout_idx).astype(np.float64)
    if solver == "sklearn":
        with _one_thread():
            per_draw = [[fit_logistic(x, y, C, "sklearn") for C in grid] for x, y in zip(xs, ys)]
    else:
        fits = fit_logistic_grid(xs, ys, grid)
        per_draw = [[LinearModel(fits.coef[g, j], fits.intercept[g, j], fits.classes) for j in range(len(grid))]
                    for g in range(len(xs))]
    best = []
    for models, yv in zip(per_draw, yvs):
        accuracy = [float((pred == yv).mean()) for pred in _predict_each(models, xv)]
        j = int(np.argmax(accuracy))  # the first best: the smaller C on ties
        best.append((models[j], {"C": float(grid[j]), "heldout": int(len(heldout_idx)),
                                 "heldout_accuracy": accuracy[j]}))
    predictions = _predict_each([model for model, _ in best], prepared["test"])
    return [ProtocolOutput(pred, details) for pred, (_, details) in zip(predictions, best)]


def knn_graph(points: np.ndarray, k: int, batch: int = 1024):
    """Symmetric sparse kNN graph (scipy CSR, weights 1) over the rows of ``points``; never an N x N dense matrix.

    Exact neighbours by squared Euclidean distance, computed block by block with torch (``batch`` rows x N at a
    time, one fused ``|x_j|^2 - 2 x_i.x_j`` product: ``|x_i|^2`` is constant along a row and cannot change its
    ranking). An edge i-j exists when j is among i's k nearest or i among j's.
    """
    import scipy.sparse as sp
    import torch

    x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    sq = (x * x).sum(1)
    n = len(x)
    k = min(k, n - 1)
    cols = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, batch):
        block = x[start : start + batch]
        dist = torch.addmm(sq[None, :], block, x.T, alpha=-2)
        dist[torch.arange(len(block)), torch.arange(start, start + len(block))] = float("inf")  # no self-loops
        cols[start : start + len(block)] = dist.topk(k, dim=1, largest=False).indices.numpy()
    rows = np.repeat(np.arange(n), k)
    a = sp.csr_matrix((np.ones(n * k, dtype=np.float64), (rows, cols.ravel())), shape=(n, n))
    return a.maximum(a.T).tocsr()


def spread_scores(S, labels_train, labelled_idx, alpha: float = SPREAD_ALPHA, tol: float = 1e-6,
                  max_iter: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Scores F [n, classes] solving (I - alpha S) F = Y, and the classes (sorted labels of the labelled rows).

    Y is one-hot at the labelled rows (row ``i`` of Y is row ``i`` of the graph). Conjugate gradients for all
    classes at once (one sparse x dense product per iteration instead of one per class); the system is
    symmetric positive definite since S's eigenvalues lie in [-1, 1]. Stops when every column's residual is
    below ``tol`` times its right-hand side's norm.
    """
    labels_train = np.asarray(labels_train)
    classes = np.unique(labels_train[labelled_idx])
    n = S.shape[0]
    b = np.zeros((n, len(classes)))
    b[labelled_idx, np.searchsorted(classes, labels_train[labelled_idx])] = 1.0
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = (r * r).sum(axis=0)
    stop = (tol * np.linalg.norm(b, axis=0)) ** 2
    for _ in range(max_iter):
        if (rr <= stop).all():
            break
        ap = p - alpha * (S @ p)
        step = rr / np.maximum((p * ap).sum(axis=0), 1e-300)
        x += step * p
        r -= step * ap
        rr_new = (r * r).sum(axis=0)
        p = r + (rr_new / np.maximum(rr, 1e-300)) * p
        rr = rr_new
    return x, classes


def prepare_spread(features_train, features_test, *, components: int = SPREAD_COMPONENTS,
                   neighbours: int = SPREAD_NEIGHBOURS) -> dict:
    """Standardise (train statistics), project on the top principal components of train + test, build the
    normalised kNN graph S = D^-1/2 W D^-1/2 over train + test rows."""
    import scipy.sparse as sp

    x = Standardizer.fit(features_train)(np.concatenate([features_train, features_test]), dtype=np.float64)
    if x.shape[1] > components:
        x = x - x.mean(axis=0)
        # Top right singular vectors of the centred data via the (D x D) covariance: exact and deterministic.
        cov = x.T @ x
        _, vecs = np.linalg.eigh(cov)
        x = x @ vecs[:, ::-1][:, :components]
    w = knn_graph(x, neighbours)
    d = np.asarray(w.sum(axis=1)).ravel()
    inv = sp.diags(1.0 / np.sqrt(d))
    return {"S": (inv @ w @ inv).tocsr(), "n_train": len(features_train),
            "components": int(x.shape[1]), "neighbours": int(neighbours)}


def run_spread(features_train, labels_train, labelled_idx, features_test, seed, *, prepared=None,
               alpha: float = SPREAD_ALPHA, tol: float = 1e-6) -> ProtocolOutput:
    """Label spreading (Zhou et al. 2004) on a kNN graph of train + test: F = (1 - alpha) (I - alpha S)^-1 Y.

    Solved by :func:`spread_scores` (the constant 1 - alpha does not change the argmax). Transductive: the test
    rows are nodes of the graph.
    """
    prepared = prepared or prepare_spread(features_train, features_test)
    n_train = prepared["n_train"]
    scores, classes = spread_scores(prepared["S"], labels_train, labelled_idx, alpha, tol)
    return ProtocolOutput(classes[scores[n_train:].argmax(axis=1)],
                          {"alpha": alpha, "neighbours": prepared["neighbours"], "components": prepared["components"]})


def prepare_finetune(features_train, features_test) -> dict:
    """The pseudo-labelling graph over train rows only (finetune stays inductive: test rows are never nodes)."""
    return {"graph": prepare_spread(features_train, features_train[:0]), "linear": prepare_standardised(
        features_train, features_test)}


def pseudo_labels(prepared_graph: dict, labels_train, labelled_idx, n_max: int, alpha: float = SPREAD_ALPHA):
    """Rows and classes of the ``n_max`` most confident unlabelled train rows under label spreading on train.

    Confidence is the winning class's share of a row's spread scores; the pick is balanced (``n_max / classes`` per
    predicted class) so that an easy class cannot crowd out the others.
    """
    scores, classes = spread_scores(prepared_graph["S"], labels_train, labelled_idx, alpha)
    scores = np.clip(scores, 0, None)
    confidence = scores.max(axis=1) / np.maximum(scores.sum(axis=1), 1e-12)
    winner = scores.argmax(axis=1)
    unlabelled = np.setdiff1d(np.arange(len(scores)), labelled_idx)
    rows = []
    for j in range(len(classes)):
        mine = unlabelled[winner[unlabelled] == j]
        rows.append(mine[np.argsort(-confidence[mine], kind="stable")[: n_max // len(classes)]])
    rows = np.sort(np.concatenate(rows)).astype(np.int64)
    return rows, classes[winner[rows]]


def run_finetune(features_train, labels_train, labelled_idx, features_test, seed, *, model, images_train,
                 images_test, levels: Sequence[str], prepared=None, epochs: int = 2, max_unlabelled: int = 10_000,
                 batch_size: int = 128, lr: float = 1e-4, device: str = "cpu") -> ProtocolOutput:
    """Fine-tune the inference network as a classifier with the N labels plus pseudo-labelled unlabelled rows.

    The network is a copy of ``model``'s encoder chain (posterior means of ``levels``, flattened and joined as
    in the features) followed by the fixed train standardisation and a linear head initialised with the
    ``linear`` protocol's solution for this draw, so it starts where ``linear`` ends. Pseudo-labels: the
    ``max_unlabelled`` most confident unlabelled train rows under label spreading on a train-only kNN graph
    (:func:`pseudo_labels`). Each step takes ``batch_size`` pseudo-labelled images and up to ``batch_size``
    labelled ones (cross-entropy on both, equal weight), Adam with ``lr`` for the encoders and 10x ``lr``
    for the head, ``epochs`` passes over the pseudo-labelled rows; BatchNorm statistics stay frozen (eval
    mode). ``images_*`` are uint8 [n, C, H, W] arrays (or any object with ``__getitem__`` over row arrays).
    """
    import copy

    import torch

    from halitool.models import images_to_input

    prepared = prepared or prepare_finetune(features_train, features_test)
    labels_train = np.asarray(labels_train)
    linear = run_linear(features_train, labels_train, labelled_idx, features_test, seed, prepared=prepared["linear"])
    y = labels_train[labelled_idx]
    fitted = fit_logistic(standardised_train_rows(prepared["linear"], labelled_idx), y, linear.details["C"])
    classes = fitted.classes
    weight = torch.tensor(fitted.coef, dtype=torch.float32)
    bias = torch.tensor(fitted.intercept, dtype=torch.float32)
    standardize = prepared["linear"]["standardizer"]

    pseudo_rows, pseudo_y = pseudo_labels(prepared["graph"], labels_train, labelled_idx, max_unlabelled)
    class_index = {c: i for i, c in enumerate(classes)}
    dev = torch.device(device)
    torch.manual_seed(seed)
    net = copy.deepcopy(model).to(dev).eval()
    head = torch.nn.Linear(weight.shape[1], weight.shape[0]).to(dev)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    shift = torch.tensor(standardize.mean, dtype=torch.float32, device=dev)
    scale = torch.tensor(standardize.scale, dtype=torch.float32, device=dev)

    def logits(images: np.ndarray):
        x01 = images_to_input(np.asarray(images), dev)
        zs = net.encode(x01, mode="mean")
        feats = torch.cat([zs[name].flatten(1) for name in levels], dim=1)
        return head((feats - shift) / scale)

    encoder_params = [p for name, p in net.named_parameters() if name.startswith("encoders.")]
    optimiser = torch.optim.Adam([{"params": encoder_params, "lr": lr}, {"params": head.parameters(), "lr": lr * 10}])
    gen = np.random.default_rng(seed)
    targets_l = torch.tensor([class_index[c] for c in y], device=dev)
    targets_p = torch.tensor([class_index[c] for c in pseudo_y], device=dev, dtype=torch.long)
    steps = 0
    for _ in range(epochs):
        order = gen.permutation(len(pseudo_rows))
        for start in range(0, len(order), batch_size):
            batch = np.sort(order[start : start + batch_size])  # sorted rows: cheap reads from any array-like
            pick = np.sort(gen.choice(len(labelled_idx), size=min(batch_size, len(labelled_idx)), replace=False))
            loss = torch.nn.functional.cross_entropy(logits(images_train[pseudo_rows[batch]]), targets_p[batch]) \
                + torch.nn.functional.cross_entropy(logits(images_train[labelled_idx[pick]]), targets_l[pick])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
    predictions = []
    with torch.no_grad():
        for start in range(0, len(images_test), 1024):
            rows = np.arange(start, min(start + 1024, len(images_test)))
            predictions.append(logits(images_test[rows]).argmax(1).cpu().numpy())
    return ProtocolOutput(classes[np.concatenate(predictions)],
                          {"C": linear.details["C"], "pseudo_labelled": int(len(pseudo_rows)), "epochs": epochs,
                           "steps": steps})


@dataclass(frozen=True)
class Protocol:
    """A registered protocol: how to run it and what a reader of its numbers must know."""

    name: str
    classifier: str
    run: Callable[..., ProtocolOutput]
    prepare: Callable[[np.ndarray, np.ndarray], dict] | None = None
    transductive: bool = False
    uses_heldout_labels: bool = False
    needs_checkpoint: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Optional: every seed at once, ``run_seeds(features_train, [labels_train per seed], [labelled_idx per seed],
    # features_test, seeds, *, prepared, **options) -> [ProtocolOutput per seed]``, with the same results as ``run``.
    run_seeds: Callable[..., list[ProtocolOutput]] | None = None


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    PROTOCOLS[protocol.name] = protocol
    return protocol


register_protocol(Protocol(
    name="linear",
    classifier="multinomial logistic regression (L2, unpenalised intercept) on standardised features; C from "
               f"{len(C_GRID)} values in [1e-4, 1e3] by stratified 5-fold cross-validation on the labelled rows",
    run=run_linear,
    run_seeds=run_linear_seeds,
    prepare=prepare_standardised,
    notes=("realistic: hyperparameters chosen with the N labelled rows alone",),
))
register_protocol(Protocol(
    name="linear-heldout",
    classifier="multinomial logistic regression (L2, unpenalised intercept) on standardised features; C from "
               f"{len(C_GRID)} values in [1e-4, 1e3] by accuracy on a labelled validation set held out from the "
               "end of train (ALI's protocol)",
    run=run_linear_heldout,
    run_seeds=run_linear_heldout_seeds,
    prepare=prepare_standardised,
    uses_heldout_labels=True,
    notes=("uses more labels than N: the held-out validation rows' labels choose C (ALI's protocol)",),
))
register_protocol(Protocol(
    name="spread",
    classifier=f"label spreading (alpha {SPREAD_ALPHA}) on a symmetric {SPREAD_NEIGHBOURS}-NN graph of train + test "
               f"features (standardised, top {SPREAD_COMPONENTS} principal components)",
    run=run_spread,
    prepare=prepare_spread,
    transductive=True,
    notes=("transductive: the unlabelled test features are part of the graph (their labels are never used)",),
))

register_protocol(Protocol(
    name="finetune",
    classifier="the checkpoint's inference network + a linear head (started from the linear protocol's fit), "
               "fine-tuned with cross-entropy on the N labels and on pseudo-labels from label spreading over "
               "a train-only kNN graph",
    run=run_finetune,
    prepare=prepare_finetune,
    needs_checkpoint=True,
    notes=("inductive: test images are only classified; unlabelled train images enter through pseudo-labels",),
))


# The protocol that trains a model per seed instead of reading frozen features (halitool.adversarial); never
# part of ``all``, which evaluates one set of features.
ADVERSARIAL = "adversarial"


def evaluated_protocols(name: str, options: Mapping[str, Mapping] | None = None) -> list[Protocol]:
    """The protocols :func:`evaluate` runs for ``name``: one, or for ``all`` every registered protocol whose
    inputs are there (those that need a model only when ``options`` give them one)."""
    protocols = get_protocols(name)
    if name == "all":
        protocols = [p for p in protocols if not p.needs_checkpoint or "model" in (options or {}).get(p.name, {})]
    return protocols


def get_protocols(name: str) -> list[Protocol]:
    """One protocol by name, or every registered protocol for ``all``."""
    if name == "all":
        return list(PROTOCOLS.values())
    if name not in PROTOCOLS:
        raise UsageError(f"unknown protocol {name!r}; choose all, {', '.join(PROTOCOLS)}, {ADVERSARIAL}")
    return [PROTOCOLS[name]]


# -------------------------------------------------------------------------------------------- runs
def evaluate(
    features_train: np.ndarray,
    labels_train: np.ndarray,
    features_test: np.ndarray,
    labels_test: np.ndarray,
    *,
    n_labels: int,
    protocol: str = "linear",
    seeds: int = 10,
    seed_base: int = 0,
    on_step: Callable[[str, int], None] | None = None,
    options: Mapping[str, Mapping] | None = None,
) -> dict:
    """Run one protocol (or ``all``) for seeds ``seed_base .. seed_base + seeds - 1``; error on every test row.

    The labelled draw of a seed depends only on the seed and the labels (:func:`halitool.draws.labelled_draw`,
    the same draw ``halitool train --labels`` makes), so every protocol sees the same draw for the same seed
    and the held-out rows (the last :func:`heldout_size` rows of train) are never in it. Errors are percentages; ``error_std`` is the sample standard deviation
    (ddof 1; 0 for one seed). ``on_step(protocol, seed)`` is called after each run (progress bars).
    ``options`` maps a protocol name to extra keyword arguments of its ``run`` (``finetune`` needs ``model``,
    ``images_train``, ``images_test``, ``levels``; with ``all`` it is skipped when they are absent).

    Returns the single protocol's result dict, or ``{"protocols": {name: result}}`` for ``all``.
    """
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    labels_train = np.asarray(labels_train)
    labels_test = np.asarray(labels_test)
    if len(features_test) == 0:
        raise BadInputError("no test rows to measure the error on")
    options = options or {}
    protocols = evaluated_protocols(protocol, options)
    n_train = len(labels_train)
    n_heldout = heldout_size(n_train)
    heldout_idx = np.arange(n_train - n_heldout, n_train)
    seed_list = [seed_base + k for k in range(seeds)]
    draws = {s: labelled_draw(labels_train, n_labels, s) for s in seed_list}

    results = {}
    for proto in protocols:
        if proto.needs_checkpoint and "model" not in options.get(proto.name, {}):
            raise UsageError(f"protocol {proto.name} needs a checkpoint SOURCE (a model to fine-tune), not features alone")
        start = time.perf_counter()
        prepared = proto.prepare(features_train, features_test) if proto.prepare else None
        extra = dict(options.get(proto.name, {}))
        if proto.uses_heldout_labels:
            extra["heldout_idx"] = heldout_idx
        visible = {}
        for s in seed_list:
            visible[s] = np.full(n_train, -1, dtype=np.int64)
            visible[s][draws[s]] = labels_train[draws[s]]
            if proto.uses_heldout_labels:
                visible[s][heldout_idx] = labels_train[heldout_idx]
        if proto.run_seeds is not None:
            outputs = proto.run_seeds(features_train, [visible[s] for s in seed_list], [draws[s] for s in seed_list],
                                      features_test, seed_list, prepared=prepared, **extra)
        else:
            outputs = (proto.run(features_train, visible[s], draws[s], features_test, s, prepared=prepared, **extra)
                       for s in seed_list)
        runs = []
        for s, out in zip(seed_list, outputs):
            error = 100.0 * float((np.asarray(out.predictions) != labels_test).mean())
            runs.append({"seed": s, "error": error, "draw_sha256": draw_hash(draws[s]), **out.details})
            if on_step:
                on_step(proto.name, s)
        results[proto.name] = summarise(proto, runs, n_labels, time.perf_counter() - start,
                                        n_heldout if proto.uses_heldout_labels else 0)
    if protocol == "all":
        return {"protocols": results}
    return results[protocols[0].name]


def summarise(proto: Protocol, runs: list[dict], n_labels: int, seconds: float, n_heldout: int = 0) -> dict:
    """The result dict of one protocol: the documented JSON keys (docs/semisup.md) plus what a reader must know about the numbers."""
    errors = np.array([r["error"] for r in runs])
    return {
        "labels": n_labels,
        "labels_used": n_labels + n_heldout,
        "protocol": proto.name,
        "classifier": proto.classifier,
        "transductive": proto.transductive,
        "notes": list(proto.notes),
        "error_mean": float(errors.mean()),
        "error_std": float(errors.std(ddof=1)) if len(errors) > 1 else 0.0,
        "runs": runs,
        "seconds": round(seconds, 3),
    }
