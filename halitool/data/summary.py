"""What a data set holds (``halitool data info``), and a check that every image of it decodes."""

from __future__ import annotations

import os

from halitool.data.base import Dataset, open_dataset, parse_spec
from halitool.progress import SILENT, Progress


def check_images(ds: Dataset, progress: Progress = SILENT, batch_size: int = 256) -> int:
    """Decode every image of ``ds`` (threads, bounded look-ahead); the first bad file raises BadInputError."""
    workers = min(8, os.cpu_count() or 1)
    checked = 0
    with progress.task("decoding images", total=len(ds)) as task:
        for rows, _ in ds.iter_batches(ds.indices("all"), batch_size, workers=workers):
            checked += len(rows)
            task.advance(len(rows))
    return checked


def dataset_summary(spec: str, check: bool = False, progress: Progress = SILENT) -> dict:
    """``halitool data info``: samples per split, image shape, classes, attribute rates; with ``check``, every
    image decoded once (from the files themselves, never a cache of them)."""
    ds = open_dataset(spec, **({"cache": False} if check and parse_spec(spec)[0] == "celeba" else {}))
    checked = check_images(ds, progress) if check else None
    attributes = []
    if ds.attributes is not None and len(ds):
        rates = ds.attributes.mean(axis=0)
        attributes = [{"name": n, "positive_rate": float(r)} for n, r in zip(ds.attribute_names, rates)]
    classes = None
    if ds.labels is not None:
        counts = {name: int((ds.labels == i).sum()) for i, name in enumerate(ds.class_names or [])}
        classes = {"count": len(counts), "names": list(counts), "samples_per_class": counts}
    return {
        "kind": ds.kind,
        "root": str(ds.root.resolve()),
        "n_samples": len(ds),
        "splits": ds.split_counts(),
        "image_shape": list(ds.image_shape),
        "classes": classes,
        "attributes": attributes,
        "preprocessing": ds.preprocessing,
        **({"images_checked": checked} if check else {}),
    }
