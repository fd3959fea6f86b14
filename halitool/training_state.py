"""A training run's folder and its training state: everything ``halitool train --resume`` needs.

A run folder holds ``model.safetensors`` (the release checkpoint), ``state.safetensors`` (the weights, the weight
average, the optimisers, the RNG and the step, in one file written with :mod:`halitool.tensorfile`),
``state.json`` (a readable copy of the state's metadata), ``metrics.jsonl`` (one JSON object per logged interval),
``curves.png`` (metrics.jsonl drawn at each checkpoint, when matplotlib is installed) and PNG grids
``samples-STEP.png`` and ``recon-STEP.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from halitool.checkpoint import load_state_strict
from halitool.errors import BadInputError
from halitool.fileio import atomic_write_bytes
from halitool.models import HALI
from halitool.tensorfile import read_tensors, write_tensors

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
STATE_JSON = "state.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
STATE_METADATA_KEY = "state"  # the metadata entry of a state file: JSON of step, seconds, options, legs, ...


def save_state(out: Path, step: int, seconds: float, options: dict, model: HALI, opt_d, opt_g,
                legs: list[dict], best: dict | None = None, averaged: HALI | None = None) -> None:
    """Everything ``--resume`` needs in ONE atomically replaced file: the weights, the optimisers, the RNG and
    the step (as metadata). The model and state files are separate renames, so a kill can fall between them;
    resuming from this file alone never mixes two steps. ``state.json`` is a readable copy of the metadata."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if averaged is not None:
        tensors.update({f"ema.{k}": v for k, v in averaged.state_dict().items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    groups = {}
    for key, opt in (("opt_d", opt_d), ("opt_g", opt_g)):
        sd = opt.state_dict()
        for idx, pstate in sd["state"].items():
            for name, value in pstate.items():
                tensors[f"{key}.{idx}.{name}"] = torch.as_tensor(value)
        groups[key] = sd["param_groups"]
    doc = {"step": step, "seconds": seconds, "options": options, "legs": legs, "param_groups": groups, "best": best}
    write_tensors(out / STATE_FILE, tensors, {STATE_METADATA_KEY: json.dumps(doc)})
    atomic_write_bytes(out / STATE_JSON, (json.dumps(doc, indent=1) + "\n").encode(), check=False)


def load_state(out: Path, model: HALI, opt_d, opt_g, device: torch.device, averaged: HALI | None = None
                ) -> tuple[int, float, dict, list[dict], dict | None]:
    """(step, seconds, options, legs, best snapshot) of the saved run, with the weights, optimisers and RNG restored."""
    metadata, tensors = read_tensors(out / STATE_FILE, "training state")
    try:
        doc = json.loads(metadata[STATE_METADATA_KEY] if STATE_METADATA_KEY in metadata
                         else (out / STATE_JSON).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{out}: cannot read the training state for --resume: {exc}") from None
    weights = {k[len("model."):]: v.to(device) for k, v in tensors.items() if k.startswith("model.")}
    if not weights:  # a state file written before the weights moved into it: use the checkpoint, if it matches
        model_metadata, model_tensors = read_tensors(out / MODEL_FILE)
        weights = {k: v.to(device) for k, v in model_tensors.items()}
        try:
            steps = json.loads(model_metadata.get("training", "{}")).get("steps")
        except json.JSONDecodeError:
            steps = None
        if steps != doc["step"]:
            raise BadInputError(f"{out}: {MODEL_FILE} is of step {steps} but the training state of step "
                                f"{doc['step']} (a run stopped between the two writes); start over with --force")
    load_state_strict(out / STATE_FILE, model, weights)
    if averaged is not None:
        load_state_strict(out / STATE_FILE, averaged,
                          {k[len("ema."):]: v.to(device) for k, v in tensors.items() if k.startswith("ema.")})
    for key, opt in (("opt_d", opt_d), ("opt_g", opt_g)):
        state: dict[int, dict] = {}
        for name, value in tensors.items():
            if name.startswith(key + "."):
                _, idx, field_name = name.split(".", 2)
                state.setdefault(int(idx), {})[field_name] = value
        opt.load_state_dict({"state": state, "param_groups": doc["param_groups"][key]})
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    # A state written before legs were recorded knows only the command of its last leg, not where that began.
    legs = doc.get("legs") or [{"from_step": None, "command": doc["options"].get("command", "")}]
    return int(doc["step"]), float(doc["seconds"]), doc["options"], legs, doc.get("best")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (they belong to the part of the run being redone)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode(), check=False)
