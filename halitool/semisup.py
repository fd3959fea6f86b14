"""``halitool semisup``: resolve SOURCE (a features file, a checkpoint or the shipped model) to frozen features,
run the protocols of :mod:`halitool.protocols` over seeds, and add provenance to their result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from halitool.data.fetch import ensure_mnist
from halitool.errors import BadInputError, UsageError
from halitool.levels import parse_feature_set
from halitool.progress import SILENT, Progress
from halitool.protocols import ADVERSARIAL, evaluate, evaluated_protocols, get_protocols


class Features(NamedTuple):
    """Train and test rows of one feature choice, with their class labels."""

    train: np.ndarray
    labels_train: np.ndarray
    test: np.ndarray
    labels_test: np.ndarray
    levels: tuple[str, ...]
    ids_train: np.ndarray  # sample ids of the rows (to find their images in the data set)
    ids_test: np.ndarray


def load_features(path, levels: str | None = None) -> Features:
    """Read the train and test rows of ``levels`` (concatenated in the order given) and the class labels.

    Rows of a ``valid`` split are not used. BadInputError when the file has no class labels or no train or test rows.
    """
    from halitool.features import open_features

    with open_features(path) as f:
        labels = f.labels
        if labels is None:
            raise BadInputError(f"{f.path}: has no class labels (labels/class); semisup needs them")
        chosen = parse_feature_set(levels, f.levels, "--features") if levels else tuple(f.levels)
        train, test = f.rows("train"), f.rows("test")
        for name, rows in (("train", train), ("test", test)):
            if len(rows) == 0:
                raise BadInputError(f"{f.path}: has no {name} rows")
        parts = [[f.read_level(lv, rows) for lv in chosen] for rows in (train, test)]
        ids = f.sample_ids
        return Features(np.concatenate(parts[0], axis=1), labels[train], np.concatenate(parts[1], axis=1),
                        labels[test], chosen, ids[train], ids[test])


def is_features_file(path) -> bool:
    """True for an HDF5 file (by its signature), the only kind of features file there is."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89HDF\r\n\x1a\n"


def cached_features(checkpoint: str, data_spec: str, *, device: str = "auto", progress: Progress = SILENT) -> Path:
    """The features file of ``checkpoint`` on ``data_spec``, extracted once into the cache and reused.

    Cache: ``data_home()/features/<checkpoint sha256[:16]>-<key>.h5`` where key hashes the data set root and the
    extraction options (all splits, every level, posterior mean, seed 0), so a retrained checkpoint or another data
    folder never reuses a stale file.
    """
    import hashlib
    import json

    from halitool.checkpoint import resolve_checkpoint
    from halitool.data import data_home, parse_spec
    from halitool.extract import extract_features
    from halitool.fileio import require_file, sha256_file

    path = require_file(resolve_checkpoint(checkpoint), "checkpoint")
    sha = sha256_file(path)
    kind, root = parse_spec(data_spec)
    options = {"dataset": kind, "root": str(root.resolve()), "split": "all", "levels": None, "latent": "mean", "seed": 0}
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    cache = data_home() / "features" / f"{sha[:16]}-{kind}-{key}.h5"
    if cache.exists():
        try:
            from halitool.features import open_features

            with open_features(cache) as f:
                if f.attrs.get("checkpoint_sha256") in (sha, None, ""):
                    return cache
        except BadInputError:
            pass  # a damaged cache entry is rebuilt below
    cache.parent.mkdir(parents=True, exist_ok=True)
    extract_features(str(path), f"{kind}:{root}", cache, split="all", levels=None, latent="mean", seed=0,
                     device=device, force=True, progress=progress)
    return cache


def semisup(
    source: str | None,
    *,
    n_labels: int,
    protocol: str = "linear",
    levels: str | None = None,
    seeds: int = 10,
    seed_base: int = 0,
    data: str | None = None,
    device: str = "auto",
    progress: Progress = SILENT,
    epochs: float | None = None,
    max_unlabelled: int = 10_000,
) -> dict:
    """``halitool semisup``: resolve SOURCE to a features file, run :func:`evaluate`, add provenance.

    ``finetune`` (alone or in ``all``) needs a checkpoint SOURCE: the model is loaded on ``device`` and the
    images come from the data set; ``epochs`` (default 2) and ``max_unlabelled`` bound its cost.
    ``adversarial`` trains a semi-supervised model per seed (``epochs`` of training), or evaluates a labelled
    checkpoint SOURCE, through :func:`halitool.adversarial.adversarial`.

    SOURCE is a features file (HDF5), a checkpoint path or shipped name (features extracted once into the cache by
    :func:`cached_features`), or None: the shipped ``hali-mnist`` on MNIST (``data`` or the default root, fetched
    when the folder lacks the files).
    """
    start = time.perf_counter()
    if protocol != ADVERSARIAL:
        get_protocols(protocol)  # an unknown name fails before any extraction
    _check_source_exists(source)
    if protocol == ADVERSARIAL:
        return _adversarial(source, n_labels=n_labels, levels=levels, seeds=seeds, seed_base=seed_base, data=data,
                            device=device, epochs=epochs, progress=progress)
    features_path, checkpoint, data = _features_file(source, data, device, progress)
    feats = load_features(features_path, levels)
    options = {}
    wants_model = protocol == "all" or get_protocols(protocol)[0].needs_checkpoint
    if checkpoint is not None and wants_model:
        options["finetune"] = _finetune_options(checkpoint, data, feats, device, epochs, max_unlabelled)
    n_runs = max(seeds, 0) * (len(evaluated_protocols(protocol, options)))
    with progress.task("semisup", total=n_runs) as task:
        result = evaluate(feats.train, feats.labels_train, feats.test, feats.labels_test, n_labels=n_labels,
                          protocol=protocol, seeds=seeds, seed_base=seed_base, options=options,
                          on_step=lambda name, seed: task.advance(1, info=f"{name} seed {seed}"))
    provenance = {"source": str(source) if source else "hali-mnist", "features_file": str(features_path),
                  "features": "+".join(feats.levels),
                  "splits": {"train": int(len(feats.train)), "test": int(len(feats.test))}}
    if "protocols" in result:
        for entry in result["protocols"].values():
            entry["features"] = provenance["features"]
        best = min(result["protocols"], key=lambda name: result["protocols"][name]["error_mean"])
        result = {"labels": n_labels, "protocol": "all", "best": best, **provenance, **result}
    else:
        result = {**result, **provenance}
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def _adversarial(source: str | None, *, n_labels: int, levels: str | None, seeds: int, seed_base: int,
                 data: str | None, device: str, epochs: float | None, progress: Progress) -> dict:
    """The adversarial protocol (:mod:`halitool.adversarial`): it reads images, not frozen features."""
    from halitool.adversarial import adversarial

    if source is not None and is_features_file(source):
        raise UsageError(f"{source}: the adversarial protocol trains on images; give a checkpoint or no SOURCE")
    if levels is not None:
        raise UsageError("--features does not apply to the adversarial protocol (its classifier sees x and every level)")
    # The default data set is fetched when missing, as for hali-mnist (after the options are checked).
    fetch = (lambda: ensure_mnist("mnist")) if data is None else None
    with progress.task("semisup", total=max(seeds, 0)) as task:
        return adversarial(source, n_labels=n_labels, seeds=seeds, seed_base=seed_base, data=data,
                           device=device, epochs=epochs, progress=progress, fetch_data=fetch,
                           on_step=lambda name, seed: task.advance(1, info=f"{name} seed {seed}"))


def _features_file(source: str | None, data: str | None, device: str, progress: Progress
                   ) -> tuple[Path, str | None, str | None]:
    """(features file, checkpoint or None, data SPEC or None) of SOURCE: a features file as it is, a checkpoint
    through the features cache, None as the shipped model on MNIST (fetched when the folder lacks the files)."""
    if source is not None and is_features_file(source):
        if data is not None:
            raise UsageError("--data applies to a checkpoint SOURCE; a features file already holds its data set")
        return Path(source), None, None
    checkpoint = source or "hali-mnist"
    data = data or "mnist"
    if source is None:
        from halitool.checkpoint import resolve_checkpoint

        resolve_checkpoint(checkpoint)  # a missing shipped model fails before any download
        ensure_mnist(data)
    return cached_features(checkpoint, data, device=device, progress=progress), checkpoint, data


def _finetune_options(checkpoint: str, data: str, feats: Features, device: str, epochs: float | None,
                      max_unlabelled: int) -> dict:
    """The model, images and budget the ``finetune`` protocol needs (``epochs`` default 2, whole passes)."""
    epochs = 2 if epochs is None else epochs
    if epochs < 0 or max_unlabelled < 0:
        raise UsageError("--epochs and --max-unlabelled must be 0 or more")
    if epochs != int(epochs):
        raise UsageError(f"--epochs {epochs}: finetune makes whole passes over the images")
    return {**finetune_inputs(checkpoint, data, feats, device), "epochs": int(epochs),
            "max_unlabelled": max_unlabelled}


def _check_source_exists(source: str | None) -> None:
    """A SOURCE that is neither a file nor a shipped model: one line saying what SOURCE may be."""
    if source is None or Path(source).is_file():
        return
    from halitool.checkpoint import resolve_checkpoint

    try:
        if resolve_checkpoint(source).is_file():
            return
    except BadInputError:
        pass
    raise BadInputError(f"{source}: not found (SOURCE is a features file, a checkpoint file or the name of a "
                        "shipped model)")


def finetune_inputs(checkpoint: str, data_spec: str, feats: Features, device: str) -> dict:
    """The model and the train/test images (uint8, in the features' row order) that ``finetune`` needs."""
    from halitool.checkpoint import load_checkpoint
    from halitool.data import open_dataset

    from halitool.runtime import resolve_device

    device = str(resolve_device(device))
    loaded = load_checkpoint(checkpoint, device)
    ds = open_dataset(data_spec)
    order = np.argsort(ds.sample_ids)
    images = {}
    for name, ids in (("train", feats.ids_train), ("test", feats.ids_test)):
        pos = np.searchsorted(ds.sample_ids, ids, sorter=order)
        rows = order[np.clip(pos, 0, len(order) - 1)]
        if not np.array_equal(ds.sample_ids[rows], ids):
            raise BadInputError(f"{ds.root}: the cached features' sample ids are not all in this data set")
        images[name] = ds.images(rows)
    return {"model": loaded.model, "images_train": images["train"], "images_test": images["test"],
            "levels": feats.levels, "device": device}
