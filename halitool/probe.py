"""Linear attribute probes: metrics, solvers and the selection protocol, as pure functions over arrays.

Every probe is an L2-regularised logistic regression with an unpenalised intercept, in scikit-learn's
parametrisation: minimise ``C * sum_i s_i * loss_i + 0.5 * ||w||^2`` (``s_i`` are class weights, 1 without
them), which has the same optimum as ``mean_i s_i * loss_i + lambda / 2 * ||w||^2`` with ``lambda = 1 / (C n)``.

Solvers (registry :data:`SOLVERS`) fit every attribute at every C of a grid and return the weights in the
standardised feature space; :func:`probe_arrays` runs the protocol (standardise on train, select C per attribute
on the selection rows, evaluate on test once). See docs/probes.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from halitool.choices import CLASS_WEIGHTS, DEFAULT_C_GRID, PROBE_METRICS as METRICS  # noqa: F401  (with the CLI's)
from halitool.errors import UsageError
from halitool.standardize import Standardizer
from halitool.runtime import resolve_device

HOLDOUT_FRACTION = 0.15


# metrics ----------------------------------------------------------------------------------------------
def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of predictions equal to the truth (NaN for no rows)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else math.nan


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition; NaN for no rows)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recalls = [np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]
    return float(np.mean(recalls)) if recalls else math.nan


def auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve for 0/1 ``y_true``; tied scores count one half. NaN when a class is absent."""
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(y_true.sum())
    n_neg = len(y_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(scores)
    # Mann-Whitney U: the sum of the positives' ranks less its minimum, over all positive-negative pairs.
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
}


# options --------------------------------------------------------------------------------------------
def parse_c_grid(text: str) -> np.ndarray:
    """``"1e-4:1e2:10"`` (10 log-spaced values from 1e-4 to 1e2) or ``"0.01,0.1,1"``; sorted, unique, > 0."""
    text = text.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            low, high, count = float(parts[0]), float(parts[1]), int(parts[2])
            if low <= 0 or high < low or count < 1:
                raise ValueError
            grid = np.geomspace(low, high, count)
        else:
            grid = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise UsageError(f"--C-grid {text!r}: expected LOW:HIGH:COUNT (log grid) or a comma list of positive numbers") from None
    if len(grid) == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise UsageError(f"--C-grid {text!r}: values must be positive and finite")
    return np.unique(grid)


def stratify_key(attributes: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """The key a stratified draw keeps proportional: the class label when there is one, else the rarest
    non-constant attribute (the one a random draw is most likely to leave without positives)."""
    if labels is not None:
        return np.asarray(labels)
    attributes = np.asarray(attributes)
    rates = attributes.mean(axis=0) if len(attributes) else np.zeros(attributes.shape[1])
    minority = np.minimum(rates, 1 - rates)
    if attributes.shape[1] == 0 or minority.max() == 0:
        return np.zeros(len(attributes), dtype=np.int64)
    minority[minority == 0] = np.inf
    return attributes[:, int(np.argmin(minority))]


def stratified_subset(key: np.ndarray, n_select: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n_select`` rows drawn without replacement, each value of ``key`` in proportion."""
    key = np.asarray(key)
    n = len(key)
    n_select = int(min(max(n_select, 0), n))
    values, inverse = np.unique(key, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(values))
    # Largest-remainder apportionment: exact total, every stratum within one row of its share.
    exact = counts * n_select / max(n, 1)
    take = np.floor(exact).astype(int)
    short = n_select - take.sum()
    take[np.argsort(-(exact - take), kind="stable")[:short]] += 1
    chosen = [rng.choice(np.flatnonzero(inverse == v), size=k, replace=False) for v, k in enumerate(take) if k]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


# solvers ---------------------------------------------------------------------------------------------
@dataclass
class PathFit:
    """Weights of every attribute at every C, in the standardised feature space: ``scores = x @ W[c, a] + b[c, a]``."""

    Cs: np.ndarray  # [nC]
    W: np.ndarray  # [nC, A, D] float32
    b: np.ndarray  # [nC, A] float32
    iterations: np.ndarray  # [nC, A] solver iterations spent on each sub-problem
    info: dict = field(default_factory=dict)


def class_weights(Y: np.ndarray, class_weight: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-attribute weights of positives and negatives; ``balanced`` is scikit-learn's n / (2 * n_class)."""
    Y = np.asarray(Y)
    n, A = Y.shape
    if class_weight == "none":
        return np.ones(A), np.ones(A)
    if class_weight != "balanced":
        raise UsageError(f"unknown class weight {class_weight!r}; choose {', '.join(CLASS_WEIGHTS)}")
    n_pos = Y.sum(axis=0).astype(np.float64)
    n_neg = n - n_pos
    with np.errstate(divide="ignore"):
        return np.where(n_pos > 0, n / (2 * n_pos), 0.0), np.where(n_neg > 0, n / (2 * n_neg), 0.0)


def fit_path_sklearn(X: np.ndarray, Y: np.ndarray, Cs: Sequence[float], *, class_weight: str = "none",
                     device: str = "cpu", on_step: Callable[[int], None] | None = None, **_ignored) -> PathFit:
    """The reference: one scikit-learn ``LogisticRegression(solver="lbfgs")`` per attribute and C."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y)
    Cs = np.asarray(Cs, dtype=np.float64)
    n, D = X.shape
    A = Y.shape[1]
    W = np.zeros((len(Cs), A, D), dtype=np.float32)
    b = np.zeros((len(Cs), A), dtype=np.float32)
    iterations = np.zeros((len(Cs), A), dtype=np.int64)
    for c, C in enumerate(Cs):
        for a in range(A):
            model = LogisticRegression(C=float(C), solver="lbfgs", max_iter=1000, tol=1e-4,
                                       class_weight=None if class_weight == "none" else class_weight)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X, Y[:, a])
            W[c, a], b[c, a], iterations[c, a] = model.coef_[0], model.intercept_[0], int(model.n_iter_[0])
        if on_step:
            on_step(1)
    return PathFit(Cs, W, b, iterations, {"solver": "sklearn"})


@dataclass
class RotatedFeatures:
    """Features rotated onto the eigenvectors of their Gram matrix: what every torch fit on the same rows shares.

    Computing it (a float64 Gram matrix, its eigenvectors, the rotation) costs more than the L-BFGS iterations of
    a warm-started refit (docs/benchmarks.md), so the fits on the same rows compute it once.
    """

    V: Any  # [D, D] eigenvectors (torch float32)
    Z: Any  # [n, D] = X V

    @classmethod
    def of(cls, X: np.ndarray, device="cpu") -> "RotatedFeatures":
        import torch

        device = device if isinstance(device, torch.device) else resolve_device(device)
        X_t = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
        # The Gram matrix in float64: its small eigenvalues set the preconditioner of weakly regularised fits.
        X64 = X_t.double()
        _, V64 = torch.linalg.eigh((X64.T @ X64) / X_t.shape[0])
        del X64
        V = V64.float()
        return cls(V, X_t @ V)


def fit_path_torch(X: np.ndarray, Y: np.ndarray, Cs: Sequence[float], *, class_weight: str = "none",
                   device: str = "cpu", tol: float = 1e-4, max_iter: int = 500, memory: int = 10,
                   init: tuple[np.ndarray, np.ndarray] | None = None,
                   rotated: RotatedFeatures | None = None, row_weight: np.ndarray | None = None,
                   on_step: Callable[[int], None] | None = None) -> PathFit:
    """Every attribute at every C from one shared float32 matrix, each sub-problem converging on its own.

    The features are rotated once onto the eigenvectors of their Gram matrix (the L2 penalty is invariant under
    rotations, so the optimum is the same). The C path runs from strong to weak regularisation, each C warm-started
    from the previous one; at each C all attributes run a batched L-BFGS whose every column has its own
    curvature history, its own step length and its own stopping test (max |gradient| <= ``tol`` on the
    mean-loss objective, as scikit-learn's lbfgs uses), preconditioned by the diagonal of its own Hessian in the
    rotated basis. A column that has converged leaves the batch. ``init`` = (W [A, D], b [A]) starts the first C.
    ``rotated`` = :meth:`RotatedFeatures.of` ``(X)`` computed once for several fits on the same ``X`` (``X`` may
    then be None). ``row_weight`` (0 or 1 per row) fits on the rows of weight 1 alone, without copying them out
    of ``Z``: the objective is that of those rows (their mean loss, their class weights).
    """
    import torch

    device = resolve_device(device)
    Cs = np.asarray(Cs, dtype=np.float64)
    if rotated is None:
        rotated = RotatedFeatures.of(X, device)
    V, Z = rotated.V, rotated.Z
    D = Z.shape[1]
    Y_t = torch.as_tensor(np.asarray(Y, dtype=np.float32), device=device)
    A = Y_t.shape[1]
    fitted_rows = slice(None) if row_weight is None else np.asarray(row_weight) > 0
    n = int(len(Y)) if row_weight is None else int(fitted_rows.sum())
    w_pos, w_neg = (torch.as_tensor(w, dtype=torch.float32, device=device)
                    for w in class_weights(np.asarray(Y)[fitted_rows], class_weight))
    weight = None if row_weight is None else torch.as_tensor(np.asarray(row_weight, dtype=np.float32),
                                                              device=device)[:, None]
    U = torch.zeros(D, A, device=device)
    b = torch.zeros(A, device=device)
    if init is not None:
        U = V.T @ torch.as_tensor(np.asarray(init[0], dtype=np.float32), device=device).T
        b = torch.as_tensor(np.asarray(init[1], dtype=np.float32), device=device).clone()
    W_out = np.zeros((len(Cs), A, D), dtype=np.float32)
    b_out = np.zeros((len(Cs), A), dtype=np.float32)
    iterations = np.zeros((len(Cs), A), dtype=np.int64)
    order = np.argsort(Cs)  # strong regularisation (small C) first: each fit warm-starts the next
    state = None
    for c in order:
        lam = torch.full((A,), 1.0 / (Cs[c] * n), device=device)
        U, b, its, state = _lbfgs_columns(Z, Y_t, w_pos, w_neg, lam, U, b, state=state, tol=tol,
                                          max_iter=max_iter, memory=memory, row_weight=weight, n=n)
        W_out[c] = (V @ U).T.cpu().numpy()
        b_out[c] = b.cpu().numpy()
        iterations[c] = its
        if on_step:
            on_step(1)
    return PathFit(Cs, W_out, b_out, iterations, {"solver": "torch", "device": str(device)})


def _objective(M, Y, S, U, lam, n):
    """Per-column mean weighted logistic loss + lambda/2 ||U||^2 at margins M."""
    import torch

    loss = torch.nn.functional.softplus(M) - Y * M
    return (S * loss).sum(0) / n + 0.5 * lam * (U * U).sum(0)


# The two products of every solver iteration with the tall rotated features Z [n, D] and K thin columns. The
# BLAS kernels chosen for other memory layouts of the same products are several times slower on the CPU, and
# they were most of the solver's time (the measurements are in docs/benchmarks.md).
def _tall_product(Z, U):
    """``Z @ U`` for ``U [D, K]``, with ``U`` column-major (a faster kernel than for row-major ``U``)."""
    return Z @ U.T.contiguous().T


def _transposed_product(Z, R):
    """``Z.T @ R`` for ``R [n, K]``, computed as ``(R.T @ Z).T`` (a faster kernel than ``Z.T @ R``)."""
    return (R.T @ Z).T


def _squared_transposed_product(Z, R, rows: int = 2048):
    """``(Z * Z).T @ R`` a block of rows at a time: the preconditioner's product without a second n x D copy."""
    out = None
    for start in range(0, Z.shape[0], rows):
        block = Z[start: start + rows]
        part = _transposed_product(block * block, R[start: start + rows])
        out = part if out is None else out + part
    return out


class _History:
    """The last ``memory`` curvature pairs (s, y) of every active column, for L-BFGS's two-loop recursion with the
    initial inverse Hessian ``gamma * diag(1 / p)`` (p: the diagonal preconditioner)."""

    def __init__(self, memory: int, D: int, K: int, device):
        import torch

        self.memory, self.slot, self.filled = memory, 0, 0
        self.sU = torch.zeros(memory, D, K, device=device)
        self.sb = torch.zeros(memory, K, device=device)
        self.yU = torch.zeros(memory, D, K, device=device)
        self.yb = torch.zeros(memory, K, device=device)
        self.rho = torch.zeros(memory, K, device=device)
        self.gamma = torch.ones(K, device=device)

    def keep(self, columns) -> None:
        """Drop the columns that left the batch (``columns``: a mask of those that stay)."""
        self.sU, self.sb = self.sU[:, :, columns], self.sb[:, columns]
        self.yU, self.yb = self.yU[:, :, columns], self.yb[:, columns]
        self.rho, self.gamma = self.rho[:, columns], self.gamma[columns]

    def direction(self, gU, gb, pU, pb):
        """-H g by the two-loop recursion: newest pair first, then oldest first."""
        qU, qb = gU.clone(), gb.clone()
        alphas = []
        for j in range(self.filled):
            k = (self.slot - 1 - j) % self.memory
            alpha = self.rho[k] * ((self.sU[k] * qU).sum(0) + self.sb[k] * qb)
            qU -= alpha * self.yU[k]
            qb -= alpha * self.yb[k]
            alphas.append((k, alpha))
        rU, rb = self.gamma * qU / pU, self.gamma * qb / pb
        for k, alpha in reversed(alphas):
            beta = self.rho[k] * ((self.yU[k] * rU).sum(0) + self.yb[k] * rb)
            rU += (alpha - beta) * self.sU[k]
            rb += (alpha - beta) * self.sb[k]
        return -rU, -rb

    def forget(self, columns) -> None:
        """Restart the history of ``columns`` (a mask): their pairs no longer give a descent direction."""
        self.rho[:, columns] = 0

    def push(self, sU, sb, yU, yb, pU, pb) -> None:
        """Record one step's pair; a pair without positive curvature is stored with weight 0 (skipped)."""
        import torch

        sy = (sU * yU).sum(0) + sb * yb
        good = sy > 1e-12
        k = self.slot
        self.sU[k], self.sb[k], self.yU[k], self.yb[k] = sU, sb, yU, yb
        self.rho[k] = torch.where(good, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        yHy = ((yU * yU) / pU).sum(0) + yb * yb / pb
        self.gamma = torch.where(good, sy / yHy.clamp_min(1e-30), self.gamma)
        self.slot = (self.slot + 1) % self.memory
        self.filled = min(self.filled + 1, self.memory)


def _lbfgs_start(Z, Y, S, U, b, n: int, state):
    """What does not depend on lambda at the starting point: margins ``Z U + b``, the data part of the gradient
    (``Z^T r``, ``sum r``) and of the diagonal preconditioner; reused from ``state`` along the C path."""
    import torch

    if state is not None:
        return tuple(t.clone() for t in state)
    M = _tall_product(Z, U) + b
    P = torch.sigmoid(M)
    R = S * (P - Y) / n
    # Preconditioner: the diagonal of each column's Hessian in the rotated basis, at the starting point.
    curv = S * P * (1 - P) / n
    return (M, _transposed_product(Z, R), R.sum(0), _squared_transposed_product(Z, curv),
            curv.sum(0).clamp_min(1e-12))


def _line_search(M, Md, Y, S, U, dU, lam, n: int, f, slope, tries: int = 30):
    """Backtracking (Armijo) step lengths per column; margins are linear in the step, so a trial costs
    elementwise work only. Returns (t, f at the step, stalled): a stalled column found no decrease that float32
    resolves (its t is 0)."""
    import torch

    t = torch.ones_like(f)
    for _ in range(tries):
        f_new = _objective(M + t * Md, Y, S, U + t * dU, lam, n)
        ok = f_new <= f + 1e-4 * t * slope
        if bool(ok.all()):
            break
        t = torch.where(ok, t, 0.5 * t)
    stalled = ~ok
    return torch.where(stalled, torch.zeros_like(t), t), torch.where(stalled, f, f_new), stalled


def _lbfgs_columns(Z, Y, w_pos, w_neg, lam, U0, b0, *, state=None, tol, max_iter, memory, row_weight=None,
                   n: int | None = None):
    """Batched L-BFGS over independent columns; returns (U, b, iterations per column, state).

    A column leaves the batch when its largest gradient entry is at most ``tol``, after ``max_iter`` iterations, or
    when float32 resolves no further decrease. ``state`` carries what a warm start along the C path can reuse
    instead of recomputing (three matrix products per C): see :func:`_lbfgs_start`. ``row_weight`` [n, 1] (0/1)
    and ``n`` (the number of rows of weight 1) restrict the objective to some rows of ``Z``.
    """
    import torch

    n = Z.shape[0] if n is None else n
    D = Z.shape[1]
    K = Y.shape[1]
    dev = Z.device
    U_out, b_out = U0.clone(), b0.clone()
    its_out = np.zeros(K, dtype=np.int64)
    cols = torch.arange(K, device=dev)  # which original columns are still active
    S = Y * w_pos + (1 - Y) * w_neg  # per-sample weight of each column
    if row_weight is not None:
        S = S * row_weight
    U, b = U0.clone(), b0.clone()
    M, ZtR, gb, pU_data, pb = _lbfgs_start(Z, Y, S, U, b, n, state)
    gU = ZtR + lam * U
    pU = (pU_data + lam).clamp_min(1e-12)
    f = _objective(M, Y, S, U, lam, n)
    M_out, ZtR_out, gb_out, pU_out, pb_out = torch.empty_like(M), torch.empty_like(gU), gb.clone(), pU_data, pb
    history = _History(memory, D, K, dev)
    its = torch.zeros(K, dtype=torch.long, device=dev)
    stop = torch.zeros(K, dtype=torch.bool, device=dev)
    for _ in range(max_iter + 1):
        done = (torch.maximum(gU.abs().amax(0), gb.abs()) <= tol) | (its >= max_iter) | stop
        if bool(done.any()):  # finished columns: record their result and warm-start state, drop them
            idx = cols[done]
            U_out[:, idx], b_out[idx] = U[:, done], b[done]
            M_out[:, idx], ZtR_out[:, idx], gb_out[idx] = M[:, done], gU[:, done] - lam[done] * U[:, done], gb[done]
            its_out[idx.cpu().numpy()] = its[done].cpu().numpy()
            keep = ~done
            if not bool(keep.any()):
                break
            cols, Y, S, lam, U, b, M, gU, gb, f = (
                cols[keep], Y[:, keep], S[:, keep], lam[keep], U[:, keep], b[keep], M[:, keep],
                gU[:, keep], gb[keep], f[keep])
            pU, pb, its, stop = pU[:, keep], pb[keep], its[keep], stop[keep]
            history.keep(keep)
        dU, db = history.direction(gU, gb, pU, pb)
        slope = (gU * dU).sum(0) + gb * db
        bad = slope >= 0  # a direction that does not descend (a stale history): restart along -H0 g
        if bool(bad.any()):
            dU = torch.where(bad, -gU / pU, dU)
            db = torch.where(bad, -gb / pb, db)
            slope = (gU * dU).sum(0) + gb * db
            history.forget(bad)
        Md = _tall_product(Z, dU) + db
        t, f, stop = _line_search(M, Md, Y, S, U, dU, lam, n, f, slope)
        sU, sb = t * dU, t * db
        U, b, M = U + sU, b + sb, M + t * Md
        R = S * (torch.sigmoid(M) - Y) / n
        gU_new, gb_new = _transposed_product(Z, R) + lam * U, R.sum(0)
        history.push(sU, sb, gU_new - gU, gb_new - gb, pU, pb)
        gU, gb = gU_new, gb_new
        its = its + 1
    return U_out, b_out, its_out, (M_out, ZtR_out, gb_out, pU_out, pb_out)


SOLVERS: dict[str, Callable[..., PathFit]] = {"torch": fit_path_torch, "sklearn": fit_path_sklearn}


# protocol --------------------------------------------------------------------------------------------
def probe_arrays(
    X_train: np.ndarray, Y_train: np.ndarray, X_valid: np.ndarray, Y_valid: np.ndarray,
    X_test: np.ndarray, Y_test: np.ndarray, *, names: Sequence[str], Cs: Sequence[float],
    metric: str = "accuracy", class_weight: str = "none", solver: str = "torch", device: str = "cpu",
    seed: int = 0, stratify: np.ndarray | None = None, on_step: Callable[[int], None] | None = None,
) -> dict:
    """The probe protocol for one feature set; returns the level's result dict (the keys of docs/probes.md) plus ``selection``.

    1. Standardise with the statistics of the training rows.
    2. Fit every non-constant attribute at every C on the training rows. When there are no valid rows, a
       stratified ``HOLDOUT_FRACTION`` of train (drawn with ``seed``, stratified on ``stratify``) is held out
       first and the fits use the rest.
    3. Per attribute, choose the C whose ``metric`` is best on the valid rows (or the hold-out); ties go to the
       smaller C (stronger regularisation).
    4. With valid rows, the train fit at the chosen C is the final model (it was fitted on all of train). With a
       hold-out, refit on all of train at the chosen C.
    5. Evaluate on the test rows once: accuracy, balanced accuracy, AUROC.
    An attribute constant in train is predicted as that constant (AUROC NaN, C None), never fitted.
    Test rows enter only step 5.
    """
    if metric not in METRIC_FUNCTIONS:
        raise UsageError(f"unknown metric {metric!r}; choose {', '.join(METRICS)}")
    if solver not in SOLVERS:
        raise UsageError(f"unknown solver {solver!r}; choose {', '.join(SOLVERS)}")
    fit_path = SOLVERS[solver]
    Y_train, Y_valid, Y_test = (np.asarray(Y, dtype=np.int8) for Y in (Y_train, Y_valid, Y_test))
    Cs = np.sort(np.asarray(Cs, dtype=np.float64))
    n_train, A = Y_train.shape
    standardize = Standardizer.fit(X_train)
    Xtr = standardize(X_train)
    fit_rows, X_sel, Y_sel, selection = _selection_set(Xtr, Y_train, standardize(X_valid), Y_valid, seed, stratify)

    rate_fit = Y_train[fit_rows].mean(axis=0) if len(fit_rows) else np.zeros(A)
    fitted = np.flatnonzero((rate_fit > 0) & (rate_fit < 1))
    chosen = np.full(A, -1)
    W_final = np.zeros((A, Xtr.shape[1]), dtype=np.float32)
    b_final = np.zeros(A, dtype=np.float32)
    if len(fitted):
        path = fit_path(Xtr[fit_rows], Y_train[fit_rows][:, fitted], Cs, class_weight=class_weight,
                        device=device, on_step=on_step)
        chosen[fitted] = _choose_c(path, X_sel, Y_sel[:, fitted], METRIC_FUNCTIONS[metric])
        columns = np.arange(len(fitted))
        W_final[fitted], b_final[fitted] = path.W[chosen[fitted], columns], path.b[chosen[fitted], columns]
        if selection["split"] == "train_holdout":
            _refit_on_train(Xtr, Y_train, fitted, chosen, Cs, W_final, b_final, fit_path, class_weight, device,
                            solver)

    test_scores = standardize(X_test) @ W_final.T + b_final
    fallback = [int(round(r)) if len(fit_rows) else 0 for r in rate_fit]
    result = summarize([_test_metrics(name, Y_test[:, a], test_scores[:, a], Cs[chosen[a]] if chosen[a] >= 0 else None,
                                      fallback[a]) for a, name in enumerate(names)])
    result["selection"] = selection
    return result


def _selection_set(Xtr, Y_train, X_valid, Y_valid, seed: int, stratify):
    """(rows of train the path is fitted on, features and labels that choose C, the ``selection`` record): the
    valid rows when there are some, else a stratified ``HOLDOUT_FRACTION`` of train held out with ``seed``."""
    n_train = len(Y_train)
    if len(Y_valid):
        return np.arange(n_train), X_valid, Y_valid, {"split": "valid", "n": int(len(Y_valid))}
    key = stratify if stratify is not None else stratify_key(Y_train)
    held = stratified_subset(key, int(round(HOLDOUT_FRACTION * n_train)), np.random.default_rng(seed))
    selection = {"split": "train_holdout", "n": int(len(held)), "fraction": HOLDOUT_FRACTION, "seed": seed}
    return np.setdiff1d(np.arange(n_train), held), Xtr[held], Y_train[held], selection


def _choose_c(path: PathFit, X_sel, Y_sel, score_fn) -> np.ndarray:
    """Per fitted column, the index of the C whose metric on the selection rows is best."""
    return choose_from_scores(np.stack([X_sel @ path.W[:, j].T + path.b[:, j] for j in range(Y_sel.shape[1])],
                                       axis=1), Y_sel, score_fn)


def choose_from_scores(scores: np.ndarray, Y_sel: np.ndarray, score_fn) -> np.ndarray:
    """``scores`` [n_sel, A, nC] of the selection rows: per attribute, the index of the C whose metric is best
    (the first maximum: the smallest C, the strongest regularisation)."""
    chosen = np.empty(Y_sel.shape[1], dtype=np.int64)
    for j in range(Y_sel.shape[1]):
        values = [score_fn(Y_sel[:, j], (scores[:, j, c] > 0).astype(np.int8)) for c in range(scores.shape[2])]
        chosen[j] = int(np.argmax(values))
    return chosen


def _refit_on_train(Xtr, Y_train, fitted, chosen, Cs, W_final, b_final, fit_path, class_weight, device, solver):
    """After a hold-out choice: refit on all of train at each attribute's chosen C, warm-started from the hold-out
    fit, one fit per group of attributes sharing a C (in place). An attribute that varies on the fitting rows
    varies on all of train, so every group can be fitted."""
    rotated = RotatedFeatures.of(Xtr, device) if solver == "torch" else None  # shared by the groups
    for c in np.unique(chosen[fitted]):
        group = fitted[chosen[fitted] == c]
        extra = {"init": (W_final[group], b_final[group]), "rotated": rotated} if solver == "torch" else {}
        refit = fit_path(Xtr, Y_train[:, group], Cs[c: c + 1], class_weight=class_weight, device=device, **extra)
        W_final[group], b_final[group] = refit.W[0], refit.b[0]


def _test_metrics(name: str, y, scores, C: float | None, constant: int) -> dict:
    """One attribute's test numbers: of its probe, or (``C`` None: constant in train) of predicting ``constant``."""
    if C is not None:
        pred = (scores > 0).astype(np.int8)
        area, C = auroc(y, scores), float(C)
    else:
        pred = np.full(len(y), constant, dtype=np.int8)
        area = math.nan
    return {"name": name, "accuracy": accuracy(y, pred), "balanced_accuracy": balanced_accuracy(y, pred),
            "auroc": area, "C": C, "positive_rate": float(y.mean()) if len(y) else math.nan}


def summarize(attributes: list[dict]) -> dict:
    """Means over attributes (NaN entries such as a constant attribute's AUROC are left out of the mean)."""
    def mean(key):
        values = [a[key] for a in attributes if a[key] is not None and math.isfinite(a[key])]
        return float(np.mean(values)) if values else math.nan

    return {"mean_accuracy": mean("accuracy"), "mean_balanced_accuracy": mean("balanced_accuracy"),
            "mean_auroc": mean("auroc"), "attributes": attributes}


def majority_baseline(Y_train: np.ndarray, Y_test: np.ndarray, names: Sequence[str]) -> dict:
    """Predict each attribute's majority class in train (ties: 0); the same metrics as the probes."""
    Y_train, Y_test = np.asarray(Y_train), np.asarray(Y_test)
    rates = Y_train.mean(axis=0) if len(Y_train) else np.zeros(Y_train.shape[1])
    attributes = []
    for a, name in enumerate(names):
        y = Y_test[:, a]
        pred = np.full(len(y), int(rates[a] > 0.5), dtype=np.int8)
        attributes.append({"name": name, "accuracy": accuracy(y, pred), "balanced_accuracy": balanced_accuracy(y, pred),
                           "auroc": math.nan, "C": None, "positive_rate": float(y.mean()) if len(y) else math.nan})
    return summarize(attributes)
