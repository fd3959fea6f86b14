"""What a training run measures on its validation slice (the last rows of the train split), and how
``--keep best`` chooses a snapshot: reconstruction fidelity per level, the collapse indicator, a few-label
linear error and, for a semi-supervised model, its classifier's error. Test rows are never read here.
"""

from __future__ import annotations

import numpy as np
import torch

from halitool.errors import BadInputError
from halitool.fidelity import class_kept, per_image_mse
from halitool.models import HALI
from halitool.models.hali import collapse_indicator

# The few-label watch number: labelled images per class in each draw from the validation slice, and the draws.
FEW_LABELS_PER_CLASS = 10
FEW_LABEL_DRAWS = 3


def default_val_size(n_train: int) -> int:
    """1,000 images, or a tenth of a smaller train split."""
    return min(1000, n_train // 10)


def validation_split(train_idx: np.ndarray, val_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows to train on, validation rows): the last ``val_size`` rows of the train split are held out
    (:func:`default_val_size` when None).

    Training, evaluation during training and snapshot selection read only these two sets, never another split.
    """
    if val_size is None:
        val_size = default_val_size(len(train_idx))
    if val_size >= len(train_idx):
        raise BadInputError(f"--val-size {val_size} leaves no training images of {len(train_idx)}")
    cut = len(train_idx) - val_size
    return train_idx[:cut], train_idx[cut:]


def validation_criterion(evaluation: dict) -> float:
    """What ``--keep best`` minimises: the pixel MSE of the top level's reconstruction on the validation slice.

    It reads no labels, so selecting by it leaks nothing into label-based evaluations (semisup with 100 labels);
    the top level is the one that must hold the image's content through the narrowest code. (The few-label
    linear error is logged beside it but is no criterion: an untrained network's random features already score
    well on it, so minimising it picks snapshots that have learnt nothing.)"""
    return list(evaluation["levels"].values())[-1]["mse"]  # levels in chain order: the last is the top


def few_label_linear_error(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float | None:
    """A watch number for the class structure of a level: the mean error over :data:`FEW_LABEL_DRAWS` seeded
    draws of a logistic regression (C = 1, features
    standardised on the slice) fitted on :data:`FEW_LABELS_PER_CLASS` images per class of the slice and scored on
    the rest; None when a class has too few images. The draws depend only on ``labels`` and ``seed``, so every
    evaluation of a run uses the same ones."""
    from sklearn.linear_model import LogisticRegression

    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.min() <= FEW_LABELS_PER_CLASS:
        return None
    x = (features - features.mean(axis=0)) / np.maximum(features.std(axis=0), 1e-8)
    errors = []
    for draw in range(FEW_LABEL_DRAWS):
        rng = np.random.default_rng([seed, draw])
        chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), FEW_LABELS_PER_CLASS, replace=False)
                                 for c in classes])
        rest = np.setdiff1d(np.arange(len(labels)), chosen)
        fit = LogisticRegression(C=1.0, max_iter=1000).fit(x[chosen], labels[chosen])
        errors.append(float((fit.predict(x[rest]) != labels[rest]).mean()))
    return float(np.mean(errors))


@torch.no_grad()
def evaluate(model: HALI, x_val: torch.Tensor, labels: np.ndarray | None, classifier, batch_size: int = 500,
             class_values: np.ndarray | None = None) -> dict:
    """Per level, on the validation images: pixel MSE and (with a classifier) the class kept by the
    posterior-mean reconstruction; each level's collapse indicator (spread and std of the posterior); and, with
    labels, the level's few-label linear error (:func:`few_label_linear_error`). A semi-supervised model with
    labels also gets ``classifier_error``, the % of images its own classifier gets wrong (``class_values``:
    the label of each of its K outputs); a class latent learnt without labels gets ``cluster_accuracy`` (%)."""
    was_training = model.training
    model.eval()
    mse = {level: 0.0 for level in model.level_names}
    predicted = {level: [] for level in model.level_names}
    posterior = {level: ([], []) for level in model.level_names}
    own = []  # the semi-supervised model's own predictions
    for i in range(0, len(x_val), batch_size):
        x = x_val[i: i + batch_size].to(model.device)
        stats = model.encode_stats(x)  # posterior means fed upward: what reconstruct() decodes from
        if model.config.class_outputs and labels is not None:
            means = {level: mean for level, (mean, _) in stats.items()}
            own.append(model.classify(x, means).argmax(dim=1).cpu().numpy())
        for level, (mean, logvar) in stats.items():
            posterior[level][0].append(mean.float().cpu())
            posterior[level][1].append(logvar.float().cpu())
        for level in model.level_names:
            x_rec = model.decode(level, stats[level][0])
            mse[level] += float(per_image_mse(x_rec, x).sum())
            if classifier is not None:
                predicted[level].append(classifier.predict(x_rec).cpu().numpy())
    model.train(was_training)
    out = {"images": int(len(x_val)), "levels": {}}
    if own and class_values is not None:
        out["classifier_error"] = 100.0 * float((class_values[np.concatenate(own)] != labels).mean())
    elif own:  # a class latent learnt without labels: its clusters against the classes (evaluation only)
        from halitool.clustering import cluster_accuracy

        out["cluster_accuracy"] = 100.0 * cluster_accuracy(np.concatenate(own), labels)[0]
    for level in model.level_names:
        means = torch.cat(posterior[level][0])
        spread, std = collapse_indicator(means, torch.cat(posterior[level][1]))
        out["levels"][level] = {
            "mse": mse[level] / max(1, len(x_val)),
            "class_kept": class_kept(np.concatenate(predicted[level]), labels) if classifier is not None else None,
            "spread": spread, "std": std,
            "few_label_error": (few_label_linear_error(means.flatten(1).numpy(), labels)
                                if labels is not None else None),
        }
    return out
