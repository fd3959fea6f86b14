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
    """BLAS on one thread: fits on ~100 rows are dominated by thread start-up and contention (10-100x slower on a
    loaded 2-core machine with the default thread pool)."""
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


class LinearModel(NamedTuple):
    basis: np.ndarray
    model: object

    def predict(self, x):
        return self.model.predict(np.asarray(x, dtype=np.float64) @ self.basis)

    def predict_proba(self, x):
        return self.model.predict_proba(np.asarray(x, dtype=np.float64) @ self.basis)


def fit_logistic(x: np.ndarray, y: np.ndarray, C: float) -> LinearModel:
    """L2 multinomial logistic regression (sklearn, lbfgs; intercept unpenalised) fitted in the row space of x."""
    basis = row_space(x)
    return LinearModel(basis, _logistic(C).fit(np.asarray(x, dtype=np.float64) @ basis, y))


def _fit_predict(x_fit, y_fit, x_eval, C):
    model = fit_logistic(x_fit, y_fit, C)
    return model.predict(x_eval), model.predict_proba(x_eval), model.model.classes_


def choose_c_cv(x: np.ndarray, y: np.ndarray, seed: int, grid: Sequence[float] = C_GRID, folds: int = 5) -> dict:
    """C by stratified k-fold cross-validation on the labelled rows alone.

    ``k = min(folds, smallest class count)``; with 10 labels per class that is 5 folds holding out 2 per class.
    The best mean accuracy wins; ties (frequent with 20 validation rows) go to the lower mean log-loss, then to
    the smaller C. With one row per class no fold is possible and the grid's median C is used.
    """
    from sklearn.model_selection import StratifiedKFold

    counts = np.unique(y, return_counts=True)[1]
    k = int(min(folds, counts.min()))
    if k < 2:
        return {"C": float(np.median(grid)), "cv_folds": 0}
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    accuracy = np.zeros(len(grid))
    logloss = np.zeros(len(grid))
    for fit_rows, val_rows in splitter.split(x, y):
        for j, C in enumerate(grid):
            pred, proba, classes = _fit_predict(x[fit_rows], y[fit_rows], x[val_rows], C)
            accuracy[j] += (pred == y[val_rows]).mean() / k
            col = np.searchsorted(classes, y[val_rows])
            logloss[j] -= np.log(np.clip(proba[np.arange(len(col)), col], 1e-12, None)).mean() / k
    best = min(range(len(grid)), key=lambda j: (-round(accuracy[j], 9), logloss[j], grid[j]))
    return {"C": float(grid[best]), "cv_folds": k, "cv_accuracy": float(accuracy[best])}


# --------------------------------------------------------------------------------------- protocols
def prepare_standardised(features_train: np.ndarray, features_test: np.ndarray) -> dict:
    """Standardise with the statistics of every train row (unlabelled rows included: no labels involved)."""
    standardize = Standardizer.fit(features_train)
    return {"train": standardize(features_train), "test": standardize(features_test),
            "standardizer": standardize}


def run_linear(features_train, labels_train, labelled_idx, features_test, seed, *, prepared=None, grid=C_GRID,
               folds: int = 5) -> ProtocolOutput:
    """Multinomial logistic regression on standardised features; C by cross-validation on the N labels."""
    prepared = prepared or prepare_standardised(features_train, features_test)
    x, y = prepared["train"][labelled_idx], np.asarray(labels_train)[labelled_idx]
    with _one_thread():
        choice = choose_c_cv(x, y, seed, grid, folds)
        model = fit_logistic(x, y, choice["C"])
    return ProtocolOutput(model.predict(prepared["test"]), choice)


def run_linear_heldout(features_train, labels_train, labelled_idx, features_test, seed, *, heldout_idx,
                       prepared=None, grid=C_GRID) -> ProtocolOutput:
    """ALI's protocol: C with the best accuracy on the labelled held-out rows ``heldout_idx`` (ties: smaller C)."""
    prepared = prepared or prepare_standardised(features_train, features_test)
    labels_train = np.asarray(labels_train)
    x, y = prepared["train"][labelled_idx], labels_train[labelled_idx]
    xv, yv = prepared["train"][heldout_idx], labels_train[heldout_idx]
    if (yv < 0).any():
        raise ValueError("linear-heldout needs the labels of its held-out rows")
    best_acc, best_model, best_c = -1.0, None, None
    with _one_thread():
        for C in grid:
            model = fit_logistic(x, y, C)
            acc = float((model.predict(xv) == yv).mean())
            if acc > best_acc:
                best_acc, best_model, best_c = acc, model, C
    return ProtocolOutput(best_model.predict(prepared["test"]),
                          {"C": float(best_c), "heldout": int(len(heldout_idx)), "heldout_accuracy": best_acc})


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
    x, y = prepared["linear"]["train"][labelled_idx], labels_train[labelled_idx]
    with _one_thread():
        fitted = fit_logistic(x, y, linear.details["C"])
    classes = fitted.model.classes_
    weight = torch.tensor((fitted.basis @ fitted.model.coef_.T).T, dtype=torch.float32)
    bias = torch.tensor(fitted.model.intercept_, dtype=torch.float32)
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


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    PROTOCOLS[protocol.name] = protocol
    return protocol


register_protocol(Protocol(
    name="linear",
    classifier="multinomial logistic regression (L2, lbfgs) on standardised features; C from "
               f"{len(C_GRID)} values in [1e-4, 1e3] by stratified 5-fold cross-validation on the labelled rows",
    run=run_linear,
    prepare=prepare_standardised,
    notes=("realistic: hyperparameters chosen with the N labelled rows alone",),
))
register_protocol(Protocol(
    name="linear-heldout",
    classifier="multinomial logistic regression (L2, lbfgs) on standardised features; C from "
               f"{len(C_GRID)} values in [1e-4, 1e3] by accuracy on a labelled validation set held out from the "
               "end of train (ALI's protocol)",
    run=run_linear_heldout,
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
        runs = []
        for s in seed_list:
            labelled = draws[s]
            visible = np.full(n_train, -1, dtype=np.int64)
            visible[labelled] = labels_train[labelled]
            if proto.uses_heldout_labels:
                visible[heldout_idx] = labels_train[heldout_idx]
            out = proto.run(features_train, visible, labelled, features_test, s, prepared=prepared, **extra)
            error = 100.0 * float((np.asarray(out.predictions) != labels_test).mean())
            runs.append({"seed": s, "error": error, "draw_sha256": draw_hash(labelled), **out.details})
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
