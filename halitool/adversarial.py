"""``halitool semisup --protocol adversarial``: semi-supervised HALI, trained (or evaluated) per labelled draw.

Unlike the other protocols this one does not read frozen features: per seed it trains a model with
``halitool train --labels N --label-seed SEED`` (the joint discriminator learns K class logits, see
:mod:`halitool.models.hali`) and scores that model's own classifier on the test split. A SOURCE checkpoint that
was itself trained with labels is evaluated as it is, for the draw recorded in it.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Callable

from halitool.errors import BadInputError, UsageError
from halitool.progress import SILENT, Progress
from halitool.protocols import ADVERSARIAL, Protocol, summarise

# The recipe `semisup --protocol adversarial` trains when SOURCE is no checkpoint (docs/semisup.md).
ARCH = "mnist-mlp"
EPOCHS = 20


def check_asked_draw(loaded, n_labels: int, seeds: int, seed_base: int) -> None:
    """A labelled checkpoint answers for the one draw it was trained with: refuse (exit 2) any other."""
    recorded = loaded.classifier["labelled"]
    asked = {"labels": n_labels, "seeds": seeds, "seed-base": seed_base}
    wanted = {"labels": recorded["n"], "seeds": 1, "seed-base": recorded["seed"]}
    if asked != wanted:
        raise UsageError(f"{loaded.path}: was trained with the labelled draw of --labels {recorded['n']} --seed-base "
                         f"{recorded['seed']} (one seed); asked for " + ", ".join(f"--{k} {v}" for k, v in asked.items()))


def check_data_draw(loaded, ds) -> None:
    """Refuse (exit 3) a data set whose train labels give other images for the checkpoint's draw."""
    from halitool.draws import draw_hash, labelled_draw

    recorded = loaded.classifier["labelled"]
    positions = labelled_draw(ds.labels[ds.indices("train")], recorded["n"], recorded["seed"])
    if draw_hash(positions) != recorded["indices_sha256"]:
        raise BadInputError(f"{ds.root}: its train labels give another labelled draw than the one {loaded.path} "
                            "was trained with (another data set?)")


def evaluate_labelled(loaded, ds) -> dict:
    """One run: the checkpoint's classifier on the test split of ``ds`` (seed, error, the draw's hash)."""
    from halitool.predict import predict_loaded

    labelled = loaded.classifier["labelled"]
    return {"seed": int(labelled["seed"]), "error": predict_loaded(loaded, ds, split="test")["error"],
            "draw_sha256": labelled["indices_sha256"]}


def train_and_evaluate(data_spec: str, ds, n_labels: int, seed: int, *, epochs: float, device: str,
                       init_from: str | None, arch: str, n_levels: int,
                       progress: Progress = SILENT) -> dict:
    """One run: train the semi-supervised model for draw ``seed`` in a temporary folder, then its test error on
    ``ds`` (the data set ``data_spec`` opened)."""
    from halitool.checkpoint import load_checkpoint
    from halitool.train import SEMI_SUPERVISED_EMA, SEMI_SUPERVISED_LR, TrainOptions, train
    from halitool.training_state import MODEL_FILE

    with tempfile.TemporaryDirectory(prefix="halitool-adversarial-") as tmp:
        # The recipe of `halitool train --labels` (its default levers, learning rate and weight average); one
        # checkpoint, at the end, and no pictures.
        opts = TrainOptions(data=data_spec, out=Path(tmp) / "run", arch=arch, n_levels=n_levels, epochs=epochs,
                            lr=SEMI_SUPERVISED_LR, ema=SEMI_SUPERVISED_EMA, seed=seed, labels=n_labels,
                            label_seed=seed, device=device, init_from=init_from, sample_every=10**9,
                            checkpoint_every=10**9, command="halitool semisup --protocol adversarial")
        summary = train(opts, progress)
        run = evaluate_labelled(load_checkpoint(Path(tmp) / "run" / MODEL_FILE, device), ds)
    return {**run, "train_seconds": summary["seconds"], "steps": summary["steps"]}


# Described like every registered protocol, so that its result has the same keys (semisup.summarise).
PROTOCOL = Protocol(
    name=ADVERSARIAL,
    classifier="the joint discriminator's K class logits on (x, posterior means of every level), trained "
               "adversarially with the N labels (K+1-way, 'fake' fixed at 0; feature matching for the decoders)",
    run=train_and_evaluate,
    notes=("inductive: trained on the train split (N labelled, the rest unlabelled); test images are only "
           "classified",),
)

CLASS_LATENT_CLASSIFIER = ("the class latent's q(y | x) (the top encoder's K-way softmax), the N labelled images "
                           "taught by cross-entropy during adversarial training")


def adversarial(source: str | None, *, n_labels: int, seeds: int, seed_base: int, data: str | None, device: str,
                epochs: float | None, progress: Progress = SILENT, on_step: Callable[[str, int], None] | None = None,
                fetch_data: Callable[[], None] | None = None) -> dict:
    """The protocol over seeds ``seed_base ..``: the result dict of every other protocol (same keys).

    SOURCE: None (train the recipe's ``mnist-mlp`` model from scratch per seed), an unlabelled checkpoint
    (each run starts from its tensors, same architecture), or a labelled checkpoint (evaluated as it is).
    ``fetch_data`` (if given) makes sure the data set is there, once the options have been checked.
    """
    from halitool.checkpoint import load_checkpoint
    from halitool.data import open_dataset
    from halitool.runtime import resolve_device

    start = time.perf_counter()
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    if epochs is not None and not epochs > 0:
        raise UsageError(f"--epochs must be positive, not {epochs}")
    data = data or "mnist"
    device = str(resolve_device(device))
    loaded = load_checkpoint(source) if source is not None else None
    labelled = loaded is not None and loaded.classifier is not None
    if labelled:
        if epochs is not None:
            raise UsageError(f"{loaded.path}: is already trained with labels; --epochs applies to training a model")
        check_asked_draw(loaded, n_labels, seeds, seed_base)
    if fetch_data is not None:
        fetch_data()
    ds = open_dataset(data)
    if ds.labels is None:
        raise BadInputError(f"{data}: the adversarial protocol needs class labels, and this data set has none")
    if len(ds.indices("test")) == 0:
        raise BadInputError(f"{data}: no test images to measure the error on")
    if labelled:
        check_data_draw(loaded, ds)
        runs = [{**evaluate_labelled(loaded, ds), "train_seconds": loaded.training.get("seconds"),
                 "steps": loaded.training.get("steps"), "checkpoint_sha256": loaded.sha256}]
        if on_step:
            on_step(ADVERSARIAL, seed_base)
    else:
        arch, n_levels = (loaded.config.arch, loaded.config.n_levels) if loaded is not None else (ARCH, 2)
        runs = []
        for seed in range(seed_base, seed_base + seeds):
            runs.append(train_and_evaluate(data, ds, n_labels, seed, epochs=epochs or EPOCHS, device=device,
                                           init_from=None if loaded is None else str(loaded.path), arch=arch,
                                           n_levels=n_levels, progress=progress))
            if on_step:
                on_step(ADVERSARIAL, seed)
    proto = PROTOCOL
    if labelled and loaded.config.class_latent:  # the labels taught the class latent, not the discriminator
        proto = dataclasses.replace(PROTOCOL, classifier=CLASS_LATENT_CLASSIFIER)
    result = summarise(proto, runs, n_labels, time.perf_counter() - start)
    result.update(source=str(source) if source else None, features="x+" + "+".join(
        loaded.model.level_names if loaded is not None else ("z1", "z2")),
        splits={"train": int(len(ds.indices("train"))), "test": int(len(ds.indices("test")))})
    return result
