"""``halitool predict``: a semi-supervised checkpoint's classifier (its discriminator's class logits, or its
class latent's q(y | x)) over a split of a data set."""

from __future__ import annotations

import csv
import io
import time

import numpy as np
import torch

from halitool.errors import BadInputError, UsageError
from halitool.models import HALI, images_to_input

SPLITS = ("train", "valid", "test", "all")


@torch.no_grad()
def class_probabilities(model: HALI, ds, rows: np.ndarray, batch_size: int = 500, on_batch=None) -> np.ndarray:
    """Softmax of ``model``'s class logits for data-set ``rows``, in that order: float32 [len(rows), K]."""
    model.eval()
    out = np.empty((len(rows), model.config.class_outputs), dtype=np.float32)
    done = 0
    for chunk, images in ds.iter_batches(rows, batch_size):
        logits = model.classify(images_to_input(images, model.device))
        out[done: done + len(chunk)] = torch.softmax(logits.float(), dim=1).cpu().numpy()
        done += len(chunk)
        if on_batch:
            on_batch(len(chunk))
    return out


def predict(checkpoint: str, data_spec: str, *, split: str = "test", device: str = "auto", batch_size: int = 500,
            on_batch=None) -> dict:
    """Load ``checkpoint`` and ``data_spec``, then :func:`predict_loaded`."""
    from halitool.checkpoint import load_checkpoint
    from halitool.data import open_dataset
    from halitool.runtime import resolve_device

    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    start = time.perf_counter()
    loaded = load_checkpoint(checkpoint, resolve_device(device))
    result = predict_loaded(loaded, open_dataset(data_spec), split=split, batch_size=batch_size, on_batch=on_batch)
    return {**result, "data": data_spec, "seconds": round(time.perf_counter() - start, 3)}


def split_rows(loaded, ds, split: str) -> np.ndarray:
    """The rows of ``split`` of ``ds`` for the loaded checkpoint: BadInputError if its images are not the shape
    the model takes or the split is empty."""
    if tuple(ds.image_shape) != tuple(loaded.model.image_shape):
        raise BadInputError(f"{ds.root}: images are {tuple(ds.image_shape)} (C, H, W) but {loaded.path} expects "
                            f"{tuple(loaded.model.image_shape)}")
    rows = ds.indices(split)
    if len(rows) == 0:
        raise BadInputError(f"{ds.root}: the {split} split has no images")
    return rows


def predict_loaded(loaded, ds, *, split: str = "test", batch_size: int = 500, on_batch=None) -> dict:
    """Classify every image of ``split`` of the data set ``ds`` with the loaded checkpoint ``loaded``: sample ids,
    predicted class names, probabilities, and the accuracy where the data set has labels (None otherwise)."""
    if loaded.classifier is None:
        raise BadInputError(f"{loaded.path}: has no classifier (it was trained without --labels); "
                            "halitool semisup evaluates such a model's features")
    rows = split_rows(loaded, ds, split)
    probabilities = class_probabilities(loaded.model, ds, rows, batch_size, on_batch)
    section = loaded.classifier
    winner = probabilities.argmax(axis=1)
    predicted_values = np.asarray(section["class_values"])[winner]
    accuracy = None
    if ds.labels is not None:
        accuracy = float((predicted_values == ds.labels[rows]).mean())
    return {
        "checkpoint": str(loaded.path), "split": split, "n_images": int(len(rows)),
        "classes": list(section["classes"]), "sample_ids": ds.sample_ids[rows],
        "predicted": [section["classes"][k] for k in winner], "probabilities": probabilities,
        "accuracy": accuracy, "error": None if accuracy is None else 100.0 * (1.0 - accuracy),
        "labelled": section["labelled"],
    }


def predictions_csv(result: dict) -> str:
    """One row per image, in data-set order: ``sample_id``, ``class`` (the predicted name), ``p_<class>`` each."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["sample_id", "class", *(f"p_{name}" for name in result["classes"])])
    for sample_id, name, p in zip(result["sample_ids"], result["predicted"], result["probabilities"]):
        writer.writerow([int(sample_id), name, *(f"{v:.6g}" for v in p)])
    return buf.getvalue()
