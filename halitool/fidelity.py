"""How faithfully a HALI model reconstructs through each level: pixel MSE, and the class a reference classifier
(:mod:`halitool.reference`) sees in the reconstruction (``class_kept``, ``agreement``); docs/fidelity.md.
"""

from __future__ import annotations

import numpy as np
import torch

from halitool.data import Dataset
from halitool.models import HALI, images_to_input
from halitool.progress import SILENT, Progress


@torch.no_grad()
def reconstruction_mse(model: HALI, images: torch.Tensor, batch_size: int = 500) -> dict[str, float]:
    """Mean squared pixel error (images in [0, 1]) of the posterior-mean reconstruction through each level."""
    was_training = model.training
    model.eval()
    totals = {level: 0.0 for level in model.level_names}
    for i in range(0, len(images), batch_size):
        x = images[i: i + batch_size].to(model.device)
        for level in model.level_names:
            totals[level] += float(per_image_mse(model.reconstruct(x, level), x).sum())
    model.train(was_training)
    return {level: total / max(1, len(images)) for level, total in totals.items()}


def per_image_mse(x_rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel error of each image [n] (float32)."""
    return ((x_rec.float() - x.float()) ** 2).flatten(1).mean(dim=1)


def class_kept(predicted: np.ndarray, true_labels: np.ndarray) -> float:
    """Fraction of reconstructions whose predicted class is the input's true class."""
    predicted, true_labels = np.asarray(predicted), np.asarray(true_labels)
    if predicted.shape != true_labels.shape:
        raise ValueError(f"{predicted.shape} predictions for {true_labels.shape} labels")
    return float((predicted == true_labels).mean()) if len(predicted) else float("nan")


@torch.no_grad()
def fidelity(model: HALI, ds: Dataset, idx: np.ndarray, classifier=None, batch_size: int = 500,
             progress: Progress = SILENT) -> dict:
    """Per level: pixel MSE and, with a ``classifier`` (see :mod:`halitool.reference`), ``class_kept``, the
    fraction of posterior-mean reconstructions assigned to the input's true class, and ``agreement``, the
    fraction assigned to the class the classifier gives the input itself. Also ``reference_accuracy``, the
    classifier's accuracy on the real images ``idx``. Without a classifier these are None.
    """
    levels = model.level_names
    mse = {level: 0.0 for level in levels}
    kept = {level: 0 for level in levels}
    agree = {level: 0 for level in levels}
    correct = 0
    device = model.device
    with progress.task("reconstructing", total=len(idx)) as task:
        for rows, images in ds.iter_batches(idx, batch_size):
            x = images_to_input(images, device)
            truth = torch.from_numpy(ds.labels[rows]).to(device) if classifier is not None else None
            if classifier is not None:
                on_input = classifier.predict(x)
                correct += int((on_input == truth).sum())
            for level in levels:
                x_rec = model.reconstruct(x, level)
                mse[level] += float(per_image_mse(x_rec, x).sum())
                if classifier is not None:
                    on_rec = classifier.predict(x_rec)
                    kept[level] += int((on_rec == truth).sum())
                    agree[level] += int((on_rec == on_input).sum())
            task.advance(len(rows))
    n = max(1, len(idx))
    has = classifier is not None
    return {
        "levels": {level: {"mse": mse[level] / n,
                           "class_kept": kept[level] / n if has else None,
                           "agreement": agree[level] / n if has else None} for level in levels},
        "reference_accuracy": correct / n if has else None,
    }
