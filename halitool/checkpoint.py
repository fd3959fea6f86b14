"""Checkpoint format v1: one safetensors file with every model tensor and string metadata.

Metadata keys: ``format`` = ``halitool-checkpoint``, ``format_version`` = ``1``, ``config`` (JSON of
:class:`ModelConfig`), ``levels`` (JSON {name: shape}, checked against the rebuilt model), ``preprocessing``,
``training`` and ``metrics`` (JSON objects). Loading rebuilds the model from ``config`` alone and loads the
tensors strictly.

Optional classifier section (a semi-supervised model: ``config.n_classes`` K > 0, always; a class latent of K
values, ``config.class_latent``, when it was trained with labels): metadata ``classifier``, a JSON object with
``classes`` (K names, in logit order), ``class_values`` (the data set's label of each) and ``labelled`` (the draw
the model was trained with: ``n``, ``seed``, ``indices_sha256``). Its tensors are the discriminator's (the last
layer of ``discriminator.out`` gives the K class logits) or, with a class latent, the top encoder's (documented in
:mod:`halitool.models.hali`). A checkpoint without the section loads as before; one whose section and config
disagree is refused. Plain PyTorch state dicts (``.pt``) are read only through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from halitool import settings
from halitool.errors import BadInputError
from halitool.fileio import require_file, sha256_file
from halitool.tensorfile import read_tensors, write_tensors
from halitool.models import HALI, ModelConfig, build_model

FORMAT = "halitool-checkpoint"
FORMAT_VERSION = "1"
SUFFIX = ".safetensors"
# The source tree's pretrained/; an installed halitool carries the same files as package data, halitool.pretrained
# (pyproject.toml maps the folder there). shipped_model_dirs() says which one this halitool uses.
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


@dataclass
class LoadedCheckpoint:
    model: HALI
    config: ModelConfig
    path: Path
    sha256: str
    preprocessing: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    classifier: dict | None = None  # the classifier section of a semi-supervised model


def level_shapes_json(model: HALI) -> dict[str, list[int]]:
    return {name: list(shape) for name, shape in model.level_shapes.items()}


def save_checkpoint(path: Path, model: HALI, *, preprocessing: dict, training: dict, metrics: dict,
                    classifier: dict | None = None) -> Path:
    """Write ``model`` and its provenance to ``path`` atomically (replacing an existing file); a semi-supervised
    model needs its ``classifier`` section."""
    path = Path(path)
    check_classifier_section(path, model.config, classifier)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "levels": json.dumps(level_shapes_json(model)),
        "preprocessing": json.dumps(preprocessing),
        "training": json.dumps(training),
        "metrics": json.dumps(metrics),
        **({"classifier": json.dumps(classifier)} if classifier is not None else {}),
    }
    return write_tensors(path, model.state_dict(), metadata)


def shipped_model_dirs() -> list[Path]:
    """Where this halitool's shipped models are: the source tree's pretrained/ when it runs from a source tree (a
    checkout, or an editable install of one), else the installed package data ``halitool.pretrained``.

    The source tree comes first so that a checkout on PYTHONPATH uses its own files even when another tree's
    editable install provides a ``halitool.pretrained``. Empty when neither exists.
    """
    if (PRETRAINED_DIR.parent / "pyproject.toml").is_file() and PRETRAINED_DIR.is_dir():
        return [PRETRAINED_DIR]
    from importlib import resources

    try:
        folder = resources.files("halitool.pretrained")
    except ModuleNotFoundError:
        return []
    # A plain install gives a folder; models inside a zip archive could not be memory-mapped and are not looked up.
    return [folder] if isinstance(folder, Path) else []


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A path passes through; a bare name (``hali-mnist``) is looked up in $HALITOOL_PRETRAINED, then among the
    shipped models (:func:`shipped_model_dirs`)."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists() or os.sep in text or path.suffix in (SUFFIX, ".pt", ".pth"):
        return path
    places = [p for p in [settings.pretrained_override()] if p] + shipped_model_dirs()
    for folder in places:
        candidate = folder / f"{text}{SUFFIX}"
        if candidate.is_file():
            return candidate
    raise BadInputError(
        f"{text}: no such checkpoint file, and no shipped model of that name in "
        f"{', '.join(map(str, places)) or 'this install (it has no shipped models)'}"
    )


def _json_field(path: Path, metadata: dict, key: str, required: bool = True) -> dict:
    if key not in metadata:
        if required:
            raise BadInputError(f"{path}: checkpoint metadata has no {key!r}")
        return {}
    try:
        value = json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: checkpoint metadata {key!r} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise BadInputError(f"{path}: checkpoint metadata {key!r} is not a JSON object")
    return value


def _config(path: Path, d: dict) -> ModelConfig:
    try:
        return ModelConfig.from_dict(d)
    except BadInputError as exc:
        raise BadInputError(f"{path}: {exc}") from None


def check_classifier_section(path: Path, config: ModelConfig, section: dict | None) -> None:
    """A classifier section exactly when the model is semi-supervised (a model with a class latent has one when it
    was trained with labels), with one class name and value per logit."""
    k = config.class_outputs
    if section is None:
        if config.n_classes:
            raise BadInputError(f"{path}: the model has {k} class logits but the checkpoint no classifier section")
        return
    if not k:
        raise BadInputError(f"{path}: a classifier section, but the model config has no class logits (n_classes 0)")
    classes, values = section.get("classes"), section.get("class_values")
    if not (isinstance(classes, list) and isinstance(values, list) and len(classes) == len(values) == k):
        raise BadInputError(f"{path}: the classifier section must list {k} classes and class_values (one per logit)")
    labelled = section.get("labelled")
    if not (isinstance(labelled, dict) and {"n", "seed", "indices_sha256"} <= set(labelled)):
        raise BadInputError(f"{path}: the classifier section lacks its labelled draw (n, seed, indices_sha256)")


def load_state_strict(path: Path, model: HALI, tensors: dict[str, torch.Tensor], assign: bool = False) -> None:
    """Load ``tensors`` into ``model``; any missing, unexpected or wrongly shaped name is a BadInputError.

    ``assign=True`` makes the (dtype-converted) tensors the model's own instead of copying them into it: the way
    to fill a model built on the meta device.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = sorted(
        f"{k} {tuple(tensors[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(tensors)
        if tensors[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected: {', '.join(unexpected)}")
        if shapes:
            parts.append(f"wrong shape: {', '.join(shapes)}")
        raise BadInputError(
            f"{path}: tensors do not match architecture {model.config.arch!r} with {model.config.n_levels} levels; "
            + "; ".join(parts)
        )
    if assign:
        tensors = {k: v.to(expected[k].dtype) for k, v in tensors.items()}
    model.load_state_dict(tensors, strict=True, assign=assign)


def _read_pt(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A ``.pt`` file: ``{"config": {...}, "state_dict": {...}}`` or a bare state dict; never full unpickling."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  weights_only refuses arbitrary objects with several error types
        raise BadInputError(
            f"{path}: refused: not a plain PyTorch state dict (torch.load with weights_only=True failed: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    if not isinstance(obj, dict):
        raise BadInputError(f"{path}: a .pt checkpoint must hold a dict, not {type(obj).__name__}")
    metadata: dict = {}
    if "state_dict" in obj:
        if "config" in obj:
            metadata["config"] = json.dumps(obj["config"])
        obj = obj["state_dict"]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        raise BadInputError(f"{path}: the state dict holds values that are not tensors")
    return metadata, tensors


def _not_a_checkpoint(path: Path, metadata: dict) -> str:
    """Why a safetensors file is not a checkpoint, pointing to the right file when it is a run's training state."""
    from halitool.training_state import STATE_METADATA_KEY

    if STATE_METADATA_KEY in metadata:
        return (f"{path}: this is the training state of a `halitool train` run (for --resume), not a checkpoint; "
                f"the run's checkpoint is {path.parent / 'model.safetensors'}")
    if metadata.get("format"):
        return f"{path}: not a halitool checkpoint (its metadata says format {metadata['format']!r})"
    return f"{path}: not a halitool checkpoint (a safetensors file without halitool's metadata)"


def load_checkpoint(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
                    config: ModelConfig | None = None) -> LoadedCheckpoint:
    """Load a checkpoint (path or shipped name) into a model in eval mode on ``device``.

    ``config`` is needed only for a bare ``.pt`` state dict, which carries none.
    """
    path = require_file(resolve_checkpoint(name_or_path), "checkpoint")
    if path.suffix in (".pt", ".pth"):
        metadata, tensors = _read_pt(path)
        if config is None:
            if "config" not in metadata:
                raise BadInputError(f"{path}: a bare .pt state dict carries no model config; save it as "
                                    "{'config': {...}, 'state_dict': {...}} or convert it to a halitool checkpoint")
            config = _config(path, _json_field(path, metadata, "config"))
    else:
        metadata, tensors = read_tensors(path)
        if metadata.get("format") != FORMAT:
            raise BadInputError(_not_a_checkpoint(path, metadata))
        if metadata.get("format_version") != FORMAT_VERSION:
            raise BadInputError(f"{path}: checkpoint format version {metadata.get('format_version')!r} is not "
                                f"supported (this halitool reads version {FORMAT_VERSION})")
        config = _config(path, _json_field(path, metadata, "config"))
    with torch.device("meta"):  # no random initialisation to pay for: every tensor comes from the file
        model = build_model(config)
    recorded = _json_field(path, metadata, "levels", required=False)
    if recorded and recorded != level_shapes_json(model):
        raise BadInputError(f"{path}: recorded level shapes {recorded} differ from those of the rebuilt model "
                            f"{level_shapes_json(model)}")
    classifier = _json_field(path, metadata, "classifier", required=False) or None
    check_classifier_section(path, config, classifier)
    load_state_strict(path, model, tensors, assign=True)
    model.to(device).eval()
    return LoadedCheckpoint(
        model=model,
        config=config,
        path=path,
        sha256=sha256_file(path),
        preprocessing=_json_field(path, metadata, "preprocessing", required=False),
        training=_json_field(path, metadata, "training", required=False),
        metrics=_json_field(path, metadata, "metrics", required=False),
        classifier=classifier,
    )
