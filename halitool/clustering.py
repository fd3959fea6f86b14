"""Cluster accuracy: how well a model's class latent, learnt without labels, finds the data set's classes.

The model assigns every image to the most probable y of q(y | x) (:meth:`~halitool.models.hali.HALI.class_probabilities`);
clusters have no names, so the accuracy is that of the best one-to-one matching of clusters to classes (the
Hungarian algorithm on the contingency table; Yang et al. 2010, the measure unsupervised clustering of MNIST is
reported with, e.g. InfoGAN's 95 %). With more clusters than classes the unmatched clusters count as errors.
"""

from __future__ import annotations

import time

import numpy as np

from halitool.errors import BadInputError


def contingency(clusters: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The table [K, C] of how many images of cluster k (rows: the distinct clusters) have class c (columns)."""
    cluster_ids, k = np.unique(np.asarray(clusters), return_inverse=True)
    class_ids, c = np.unique(np.asarray(labels), return_inverse=True)
    table = np.zeros((len(cluster_ids), len(class_ids)), dtype=np.int64)
    np.add.at(table, (k, c), 1)
    return table, cluster_ids, class_ids


def cluster_accuracy(clusters: np.ndarray, labels: np.ndarray) -> tuple[float, dict[int, int]]:
    """(accuracy in [0, 1], {cluster: class}) of the best one-to-one matching of ``clusters`` to ``labels``."""
    from scipy.optimize import linear_sum_assignment

    clusters, labels = np.asarray(clusters).ravel(), np.asarray(labels).ravel()
    if len(clusters) != len(labels) or len(labels) == 0:
        raise ValueError(f"need as many cluster assignments as labels, at least one ({len(clusters)} and {len(labels)})")
    table, cluster_ids, class_ids = contingency(clusters, labels)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = {int(cluster_ids[r]): int(class_ids[c]) for r, c in zip(rows, cols)}
    return float(table[rows, cols].sum() / len(labels)), mapping


def cluster(checkpoint: str, data_spec: str, *, split: str = "test", device: str = "auto", batch_size: int = 500,
            on_batch=None) -> dict:
    """``halitool cluster``: assign every image of ``split`` to its most probable class-latent value and score
    the clusters against the data set's labels (cluster accuracy, normalised mutual information); a model
    trained with labels also gets its classifier's error (its y values have names then)."""
    from sklearn.metrics import normalized_mutual_info_score

    from halitool.checkpoint import load_checkpoint
    from halitool.data import open_dataset
    from halitool.predict import class_probabilities, split_rows
    from halitool.runtime import resolve_device

    start = time.perf_counter()
    loaded = load_checkpoint(checkpoint, resolve_device(device))
    k = loaded.model.config.class_latent
    if not k:
        raise BadInputError(f"{loaded.path}: the model has no class latent (train with --class-latent K)")
    ds = open_dataset(data_spec)
    rows = split_rows(loaded, ds, split)
    if ds.labels is None:
        raise BadInputError(f"{ds.root}: the data set has no labels to score the clusters against")
    assigned = class_probabilities(loaded.model, ds, rows, batch_size, on_batch).argmax(axis=1)
    labels = ds.labels[rows]
    accuracy, mapping = cluster_accuracy(assigned, labels)
    result = {
        "schema_version": 1, "command": "cluster", "checkpoint": str(loaded.path), "sha256": loaded.sha256,
        "data": data_spec, "split": split, "n_images": int(len(rows)), "clusters": k,
        "clusters_used": int(len(np.unique(assigned))),
        "cluster_accuracy": 100.0 * accuracy,
        "nmi": float(normalized_mutual_info_score(labels, assigned)),
        "matching": {str(c): v for c, v in sorted(mapping.items())},
        "cluster_sizes": [int(n) for n in np.bincount(assigned, minlength=k)],
        "classifier_error": None,
    }
    if loaded.classifier is not None:  # trained with labels: y's values are the classes, in class_values' order
        values = np.asarray(loaded.classifier["class_values"])
        result["classifier_error"] = 100.0 * float((values[assigned] != labels).mean())
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result
