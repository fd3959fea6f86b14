"""Training a HALI model: ALI's game with both players updated on the same batch, checkpoints and resume.

A run folder holds ``model.safetensors`` (the release checkpoint), ``state.safetensors`` + ``state.json`` (the
optimisers, the step and the RNG state, for ``--resume``), ``metrics.jsonl`` (one JSON object per logged
interval), ``curves.png`` (metrics.jsonl drawn at each checkpoint, when matplotlib is installed) and PNG grids
``samples-STEP.png`` and ``recon-STEP.png``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import TextColumn

from halitool import __version__, plots
from halitool.checkpoint import load_state_strict, save_checkpoint
from halitool.console import default_console, make_console, progress
from halitool.data import open_dataset
from halitool.errors import BadInputError, HalitoolError, UsageError
from halitool.fileio import atomic_write_bytes
from halitool.runtime import hardware, resolve_device
from halitool.models import HALI, ModelConfig, build_model, images_to_input
from halitool.models.config import ARCHITECTURES, PAPER_OBJECTIVE, RECOMMENDED_OBJECTIVE, SEMI_SUPERVISED_OBJECTIVE
from halitool.models.hali import collapse_indicator, collapse_tensors
from halitool.visualize import class_kept, per_image_mse, save_grid

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
STATE_JSON = "state.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
# Options that define a run: a resumed run must use the same values.
RUN_DEFINING = ("data", "arch", "levels", "batch_size", "lr", "lr_d", "beta1", "beta2", "seed", "precision",
                "objective", "val_size", "keep", "labels", "label_seed", "ema")
KEEP = ("last", "best")
DEFAULT_LR = 3e-4
SEMI_SUPERVISED_LR = 1e-3  # the semi-supervised recipe's learning rate and weight average (docs/semisup.md)
SEMI_SUPERVISED_EMA = 0.999
# The few-label watch number: labelled images per class in each draw from the validation slice, and the draws.
FEW_LABELS_PER_CLASS = 10
FEW_LABEL_DRAWS = 3


@dataclass(frozen=True)
class TrainOptions:
    data: str
    out: Path
    arch: str = "mnist"
    levels: int = 2
    epochs: float | None = None  # None and steps None: one epoch
    steps: int | None = None  # total steps of the run (resumed runs count from the start)
    batch_size: int = 100
    lr: float = DEFAULT_LR
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    resume: bool = False
    force: bool = False
    sample_every: int = 1000
    checkpoint_every: int = 500
    log_every: int = 10
    lr_d: float | None = None  # the discriminator's learning rate (two time scales); None: --lr
    # The objective's levers (ModelConfig's fields); a lever left out takes the value of RECOMMENDED_OBJECTIVE.
    objective: dict = dataclasses.field(default_factory=dict)
    val_size: int | None = None  # the last rows of the train split held out for evaluation; None: default_val_size
    eval_every: int = 500
    keep: str = "last"  # which snapshot model.safetensors holds: the last, or the best by validation_criterion
    labels: int | None = None  # semi-supervised: this many labelled training images (labelled_draw's draw)
    label_seed: int = 0  # ... of this seed
    init_from: str | None = None  # a checkpoint whose tensors (same name and shape) start the run
    ema: float = 0.0  # decay of the weights' exponential moving average the checkpoint holds; 0: the raw weights
    command: str = ""

    @property
    def model_objective(self) -> dict:
        """The levers: those given, the rest from the recommended objective (semi-supervised: its own preset)."""
        preset = SEMI_SUPERVISED_OBJECTIVE if self.labels is not None else RECOMMENDED_OBJECTIVE
        return {**preset, **self.objective}


class Distributed:
    """Data parallelism under ``torchrun``: each process takes a slice of every batch, gradients are averaged
    and batch-norm statistics are taken from rank 0, so every process holds the same weights. Rank 0 alone
    writes files. Without torchrun (WORLD_SIZE unset or 1) every method is a no-op.
    """

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.dist = dist

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average(self, tensors: list[torch.Tensor]) -> None:
        if self.world > 1:
            for t in tensors:
                self.dist.all_reduce(t)
                t.div_(self.world)

    def sync_buffers(self, model: torch.nn.Module) -> None:
        if self.world > 1:
            for buffer in model.buffers():
                self.dist.broadcast(buffer, 0)

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        if self.world > 1 and self.dist.is_initialized():
            self.dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ training state
def _save_state(out: Path, step: int, seconds: float, opts: TrainOptions, model: HALI, opt_d, opt_g,
                legs: list[dict], best: dict | None = None, averaged: HALI | None = None) -> None:
    """Everything ``--resume`` needs in ONE atomically replaced file: the weights, the optimisers, the RNG and
    the step (as metadata). The model and state files are separate renames, so a kill can fall between them;
    resuming from this file alone never mixes two steps. ``state.json`` is a readable copy of the metadata."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    if averaged is not None:
        tensors.update({f"ema.{k}": v.detach().to("cpu", copy=True).contiguous()
                        for k, v in averaged.state_dict().items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    groups = {}
    for key, opt in (("opt_d", opt_d), ("opt_g", opt_g)):
        sd = opt.state_dict()
        for idx, pstate in sd["state"].items():
            for name, value in pstate.items():
                tensors[f"{key}.{idx}.{name}"] = torch.as_tensor(value).detach().to("cpu", copy=True).contiguous()
        groups[key] = sd["param_groups"]
    doc = {"step": step, "seconds": seconds, "options": _options_json(opts), "legs": legs, "param_groups": groups,
           "best": best}
    atomic_write_bytes(out / STATE_FILE, save(tensors, metadata={"state": json.dumps(doc)}), check=False)
    atomic_write_bytes(out / STATE_JSON, (json.dumps(doc, indent=1) + "\n").encode(), check=False)


def _load_state(out: Path, model: HALI, opt_d, opt_g, device: torch.device, averaged: HALI | None = None
                ) -> tuple[int, float, dict, list[dict], dict | None]:
    """(step, seconds, options, legs, best snapshot) of the saved run, with the weights, optimisers and RNG restored."""
    from safetensors import safe_open

    try:
        with safe_open(str(out / STATE_FILE), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        doc = json.loads(metadata["state"]) if "state" in metadata else json.loads((out / STATE_JSON).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{out}: cannot read the training state for --resume: {exc}") from None
    except Exception as exc:  # noqa: BLE001  safetensors' own error types
        raise BadInputError(f"{out / STATE_FILE}: corrupt training state: {exc}") from None
    weights = {k[len("model."):]: v.to(device) for k, v in tensors.items() if k.startswith("model.")}
    if not weights:  # a state file written before the weights moved into it: use the checkpoint, if it matches
        from safetensors.torch import load_file

        try:
            weights = {k: v.to(device) for k, v in load_file(str(out / MODEL_FILE)).items()}
            with safe_open(str(out / MODEL_FILE), framework="pt", device="cpu") as f:
                steps = json.loads((f.metadata() or {}).get("training", "{}")).get("steps")
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(f"{out / MODEL_FILE}: not a readable safetensors file: {exc}") from None
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


@torch.no_grad()
def _update_average(averaged: HALI, model: HALI, decay: float, step: int) -> None:
    """One step of the weights' exponential moving average (Polyak averaging, as the semi-supervised GAN
    evaluated with), with the usual warm-up so that the first steps do not weigh the initialisation; buffers
    (batch-norm statistics) are copied."""
    rate = 1.0 - min(decay, (1.0 + step) / (10.0 + step))
    torch._foreach_lerp_(list(averaged.parameters()), list(model.parameters()), rate)
    for mine, theirs in zip(averaged.buffers(), model.buffers()):
        mine.copy_(theirs)


@torch.no_grad()
def recalibrate_decoders(model: HALI, x: torch.Tensor, batch_size: int = 500) -> None:
    """Recompute the decoders' batch-norm statistics as the exact average over the reconstruction path of the
    images ``x`` (each level decoded from the posterior means), the path reconstruct and interpolate use.

    The weights' moving average needs it: its copied running statistics belong to the raw weights, and those
    mix generative with reconstruction batches (measured on the 100-label model: level-1 validation MSE 0.048
    in eval mode against 0.006 after recalibration). Encoders and discriminator are untouched, so the
    classifier's outputs do not change."""
    norms = [m for m in model.decoders.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
        m.train()
    for i in range(0, len(x), batch_size):
        zs = model.encode(x[i: i + batch_size].to(model.device))
        for level in model.level_names:
            model.decode(level, zs[level])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
        m.eval()
    model.train(was_training)


def _init_from(model: HALI, checkpoint: str) -> dict:
    """Copy into ``model`` every tensor of ``checkpoint`` with the same name and shape (a semi-supervised run
    started from an unsupervised model: its encoders and decoders carry over, a discriminator with other heads
    or normalisation starts fresh). Returns what was copied, for the run's provenance."""
    from halitool.checkpoint import load_checkpoint

    source = load_checkpoint(checkpoint)
    theirs = source.model.state_dict()
    mine = model.state_dict()
    same = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    if not same:
        raise BadInputError(f"{source.path}: no tensor matches this model's (architecture {model.config.arch!r})")
    model.load_state_dict({**mine, **{k: v.to(mine[k]) for k, v in same.items()}})
    return {"checkpoint": str(source.path), "sha256": source.sha256, "tensors_copied": len(same),
            "tensors_fresh": len(mine) - len(same)}


def _options_json(opts: TrainOptions) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()}


# ------------------------------------------------------------------------------------------------- grids
@torch.no_grad()
def _write_grids(model: HALI, out: Path, step: int, x_show: torch.Tensor, seed: int) -> None:
    was_training = model.training
    model.eval()
    # A private generator: pictures must not move the training RNG (resume equality).
    gen = torch.Generator(device=model.device).manual_seed(seed)
    samples = model.sample(64, generator=gen).float().cpu().numpy()
    save_grid(out / f"samples-{step:07d}.png", samples, nrow=8)
    rows = [x_show.cpu().numpy()] + [model.reconstruct(x_show, level).float().cpu().numpy()
                                     for level in model.level_names]
    save_grid(out / f"recon-{step:07d}.png", np.concatenate(rows), nrow=len(x_show))
    model.train(was_training)


# ------------------------------------------------------------------------------------------------- train
def _check_out(opts: TrainOptions) -> None:
    out = opts.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    has_checkpoint = (out / MODEL_FILE).exists()
    if opts.resume:
        if opts.force:
            raise UsageError("--resume and --force cannot be used together")
        if not (out / STATE_FILE).exists():
            raise UsageError(f"{out}: nothing to resume (no {STATE_FILE})")
    elif has_checkpoint and not opts.force:
        raise UsageError(f"{out}: already holds a checkpoint; pass --resume to continue it or --force to start over")
    if opts.epochs is not None and opts.steps is not None:
        raise UsageError("--epochs and --steps cannot be used together")
    if opts.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if opts.precision not in ("fp32", "bf16"):
        raise UsageError(f"--precision must be fp32 or bf16, not {opts.precision!r}")
    # Checked here, before the run folder is made: later they would fail as bad input or deep inside torch.
    if opts.epochs is not None and not (math.isfinite(opts.epochs) and opts.epochs > 0):
        raise UsageError(f"--epochs must be a positive number, not {opts.epochs}")
    if not (math.isfinite(opts.lr) and opts.lr > 0):
        raise UsageError(f"--lr must be a positive number, not {opts.lr}")
    for name, beta in (("--beta1", opts.beta1), ("--beta2", opts.beta2)):
        if not 0.0 <= beta < 1.0:
            raise UsageError(f"{name} must be in [0, 1), not {beta}")
    if opts.lr_d is not None and not (math.isfinite(opts.lr_d) and opts.lr_d > 0):
        raise UsageError(f"--lr-d must be a positive number, not {opts.lr_d}")
    unknown = sorted(set(opts.objective) - set(PAPER_OBJECTIVE))
    if unknown:
        raise UsageError(f"unknown objective levers: {', '.join(unknown)}")
    for name, value in opts.objective.items():
        if not isinstance(value, bool) and not (math.isfinite(value) and value >= 0):
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more, not {value}")
    if opts.keep not in KEEP:
        raise UsageError(f"--keep must be one of {', '.join(KEEP)}, not {opts.keep!r}")
    if opts.val_size is not None and opts.val_size < 0:
        raise UsageError(f"--val-size must be 0 or more, not {opts.val_size}")
    if opts.keep != "last" and opts.val_size == 0:
        raise UsageError(f"--keep {opts.keep} selects by the validation slice: it needs --val-size above 0")
    if opts.labels is not None and opts.labels < 1:
        raise UsageError(f"--labels must be at least 1, not {opts.labels}")
    if opts.arch in ARCHITECTURES and not 1 <= opts.levels <= ARCHITECTURES[opts.arch].max_levels:
        raise UsageError(f"--levels: architecture {opts.arch!r} has 1 to {ARCHITECTURES[opts.arch].max_levels} "
                         f"levels, not {opts.levels}")


def train(opts: TrainOptions, console: Console | None = None) -> dict:
    """Train (or resume) a run in ``opts.out``; returns a summary. Raises HalitoolError on divergence."""
    console = console or default_console()
    _check_out(opts)
    device = resolve_device(opts.device)
    ddp = Distributed(device)
    try:
        summary = _train(opts, console, device, ddp)
        # Tear the process group down only once every rank is done (rank 0 writes the last checkpoint while the
        # others would already be destroying the group; gloo then aborts a rank at exit).
        ddp.barrier()
        return summary
    finally:
        ddp.close()


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
    the label of each of its K outputs)."""
    was_training = model.training
    model.eval()
    mse = {level: 0.0 for level in model.level_names}
    predicted = {level: [] for level in model.level_names}
    posterior = {level: ([], []) for level in model.level_names}
    own = []  # the semi-supervised model's own predictions
    for i in range(0, len(x_val), batch_size):
        x = x_val[i: i + batch_size].to(model.device)
        stats = model.encode_stats(x)  # posterior means fed upward: what reconstruct() decodes from
        if model.config.n_classes and labels is not None:
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
    if own:
        out["classifier_error"] = 100.0 * float((class_values[np.concatenate(own)] != labels).mean())
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


def _train(opts: TrainOptions, console: Console, device: torch.device, ddp: Distributed) -> dict:
    ds = open_dataset(opts.data)
    all_train = ds.indices("train")
    if len(all_train) == 0:
        raise BadInputError(f"{opts.data}: the data set has no training images")
    train_idx, val_idx = validation_split(all_train, opts.val_size)
    if opts.keep != "last" and len(val_idx) == 0:
        raise UsageError(f"--keep {opts.keep} needs a validation slice; {opts.data} has only {len(all_train)} "
                         "training images (give --val-size)")
    labelled = _labelled_draw(ds, all_train, val_idx, opts) if opts.labels is not None else None
    config = ModelConfig(arch=opts.arch, levels=opts.levels, n_classes=len(labelled.class_values) if labelled else 0,
                         **opts.model_objective)
    if tuple(ds.image_shape) != tuple(config.architecture.image_shape):
        raise BadInputError(f"{opts.data}: images are {tuple(ds.image_shape)} but architecture {opts.arch!r} "
                            f"expects {tuple(config.architecture.image_shape)}")
    batch_size = min(opts.batch_size, len(train_idx))
    steps_per_epoch = len(train_idx) // batch_size  # full batches only: batch norm sees equal-sized batches
    if batch_size % ddp.world:
        raise UsageError(f"--batch-size {batch_size} is not divisible by the {ddp.world} torchrun processes")
    total = opts.steps if opts.steps is not None else max(1, round((opts.epochs or 1.0) * steps_per_epoch))

    out = opts.out
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    model = build_model(config).to(device)
    model.train()
    lr_d = opts.lr_d if opts.lr_d is not None else opts.lr
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=lr_d, betas=(opts.beta1, opts.beta2))
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=opts.lr, betas=(opts.beta1, opts.beta2))
    d_params = list(model.discriminator.parameters())
    g_params = model.generator_parameters()

    # The weights' moving average (--ema): what evaluation, pictures and the checkpoint use; training moves `model`.
    averaged = copy.deepcopy(model).eval() if opts.ema else None
    best: dict | None = None  # {"step", "criterion"} of the snapshot --keep best holds
    initialised_from = None
    if opts.resume:
        step, seconds_before, saved, legs, best = _load_state(out, model, opt_d, opt_g, device, averaged)
        now = _options_json(opts)
        changed = [k for k in RUN_DEFINING if saved.get(k) != now.get(k)]
        if changed:
            raise UsageError(f"{out}: --resume needs the options of the original run; changed: "
                             + ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in changed))
        if ddp.main:
            _truncate_metrics(out / METRICS_FILE, step)
    else:
        step, seconds_before, legs = 0, 0.0, []
        if ddp.main:
            for stale in (METRICS_FILE, STATE_FILE, STATE_JSON, CURVES_FILE):
                (out / stale).unlink(missing_ok=True)
        first = train_idx[: min(len(train_idx), 10000)]
        model.init_pixel_bias(images_to_input(ds.images(first), device).mean(dim=0))
        if opts.init_from is not None:
            initialised_from = _init_from(model, opts.init_from)
        if averaged is not None:
            averaged.load_state_dict(model.state_dict())

    # Every command that trained this run, in order, with the step it started from (the checkpoint's provenance).
    legs = [*legs, {"from_step": step, "command": opts.command}]
    if ddp.world > 1:
        # Same weights everywhere, different noise and dropout per process (and per resumed segment).
        torch.manual_seed(int(np.random.default_rng([opts.seed, ddp.rank, step]).integers(2**62)))
    x_show = images_to_input(ds.images(train_idx[:10]), device)
    x_val = images_to_input(ds.images(val_idx), "cpu") if len(val_idx) else None
    val_labels = ds.labels[val_idx] if ds.labels is not None and len(val_idx) else None
    classifier = None
    if ddp.main and val_labels is not None:
        from halitool.reference import reference_classifier

        # Trained on the train split's real images only (cached): judges whether reconstructions keep the class.
        with torch.random.fork_rng(devices=[]):
            classifier = reference_classifier(ds, device=device, console=console)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.precision == "bf16")
    training = {
        "data": opts.data, "split": "train", "n_train": int(len(train_idx)), "batch_size": batch_size,
        "validation": {"rows": "last of the train split", "n": int(len(val_idx)),
                       "first_index": int(val_idx[0]) if len(val_idx) else None},
        "steps_per_epoch": steps_per_epoch, "lr": opts.lr, "lr_d": lr_d, "betas": [opts.beta1, opts.beta2],
        "seed": opts.seed, "precision": opts.precision, "objective": config.objective, "keep": opts.keep,
        "device": str(device), "hardware": hardware(device), "halitool_version": __version__,
        "torch_version": torch.__version__, "command": opts.command, "legs": legs, "processes": ddp.world,
    }
    preprocessing = {**ds.preprocessing, "image_shape": list(ds.image_shape), "model_input_range": [0, 1]}
    classifier_section = labelled.section if labelled else None
    class_values = labelled.class_values if labelled else None
    if labelled:
        training["labelled"] = labelled.section["labelled"]
    if initialised_from:
        training["initialised_from"] = initialised_from
    if averaged is not None:
        training["ema"] = {"decay": opts.ema, "warm-up": "decay min(ema, (1 + step) / (10 + step))"}
    released = averaged if averaged is not None else model  # what is evaluated, pictured and saved
    # Training images (never the validation slice) whose reconstructions set the average's decoder statistics.
    x_calibrate = images_to_input(ds.images(train_idx[:2000]), device) if averaged is not None else None

    calibrated_at = None  # the step whose weights the average's decoder statistics were recomputed for

    def ready_to_release() -> None:
        nonlocal calibrated_at
        if averaged is not None and calibrated_at != step:
            recalibrate_decoders(averaged, x_calibrate)
            calibrated_at = step
    start_time = time.perf_counter()
    last_good = step if opts.resume else None
    window: dict[str, list[float]] = {}
    last_eval: dict | None = None
    curves: dict = {"path": None, "note": None}  # the last drawing of CURVES_FILE, or why there is none

    def seconds() -> float:
        return seconds_before + time.perf_counter() - start_time

    def checkpoint(metrics: dict) -> None:
        nonlocal last_good, last_eval, best
        ready_to_release()
        if x_val is not None and (last_eval is None or last_eval["step"] != step):
            last_eval = {"step": step, **evaluate(released, x_val, val_labels, classifier, class_values=class_values)}
        metrics = {**metrics, **({"validation": last_eval} if last_eval else {})}
        info = {**training, "steps": step, "epochs": step / steps_per_epoch, "seconds": round(seconds(), 3),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if opts.keep == "best":
            score = validation_criterion(last_eval)
            if best is None or score < best["criterion"]:
                best = {"step": step, "criterion": score}
                save_checkpoint(out / MODEL_FILE, released, preprocessing=preprocessing,
                                training={**info, "selected": {"by": "lowest top-level validation MSE", **best}},
                                metrics=metrics, classifier=classifier_section)
        else:
            save_checkpoint(out / MODEL_FILE, released, preprocessing=preprocessing, training=info, metrics=metrics,
                            classifier=classifier_section)
        _save_state(out, step, seconds(), opts, model, opt_d, opt_g, legs, best, averaged)
        last_good = step
        try:
            curves["path"] = str(plots.training_curves(out / METRICS_FILE, out / CURVES_FILE, LOSS_NAMES))
        except plots.MatplotlibMissing as exc:  # a by-product: a run never fails for want of a figure
            curves["note"] = f"{CURVES_FILE} not drawn: {exc}"

    last_metrics: dict = {}
    bar = progress(console if ddp.main else make_console(quiet=True), TextColumn("{task.fields[losses]}"))
    with bar, open(out / METRICS_FILE, "a") if ddp.main else open(os.devnull, "w") as log:
        task = bar.add_task("training", total=total, completed=step, losses="")
        while step < total:
            epoch, pos = divmod(step, steps_per_epoch)
            order = np.random.default_rng([opts.seed, epoch]).permutation(train_idx)
            idx = order[pos * batch_size: (pos + 1) * batch_size][ddp.rank:: ddp.world]
            x = images_to_input(ds.images(idx), device)
            shown = None
            if labelled is not None:
                # As many labelled images as unlabelled ones, drawn with replacement from the N (per step, so a
                # resumed run draws the same ones).
                pick = np.random.default_rng([opts.seed, 1, step]).integers(0, len(labelled.rows), batch_size)
                pick = pick[ddp.rank:: ddp.world]
                shown = (images_to_input(ds.images(labelled.rows[pick]), device),
                         torch.as_tensor(labelled.targets[pick], device=device))
            with autocast:
                losses = model.losses(x, shown)
            watched = _step_values(losses)
            names = list(watched)
            logged = torch.stack([watched[k] for k in names])  # on the device: one host sync for all of them
            ddp.average([logged])  # every process sees the same values, so all stop together on NaN
            values = dict(zip(names, logged.tolist()))
            bad = {k: v for k, v in values.items() if k in LOSS_NAMES and not math.isfinite(v)}
            if bad:
                kept = (f"the last good checkpoint {out / MODEL_FILE} (step {last_good}) is kept"
                        if last_good is not None else "no checkpoint was written")
                raise HalitoolError(f"{out}: training diverged at step {step + 1}: "
                                    + ", ".join(f"{k} = {v}" for k, v in bad.items()) + f"; {kept}")
            d_grads = torch.autograd.grad(losses["d_loss"], d_params, retain_graph=True)
            g_grads = torch.autograd.grad(losses["g_loss"], g_params)
            ddp.average([*d_grads, *g_grads])
            for p, g in zip(d_params, d_grads):
                p.grad = g
            for p, g in zip(g_params, g_grads):
                p.grad = g
            # ALI: both players move on the same batch, from the same forward pass.
            opt_d.step()
            opt_g.step()
            ddp.sync_buffers(model)
            step += 1
            if averaged is not None:
                _update_average(averaged, model, opts.ema, step)
            for k, v in values.items():
                window.setdefault(k, []).append(v)
            bar.update(task, advance=1, losses=_progress_line(values, last_eval))
            evaluated = False
            if ddp.main and x_val is not None and (step % opts.eval_every == 0 or step == total):
                ready_to_release()
                last_eval = {"step": step, **evaluate(released, x_val, val_labels, classifier, class_values=class_values)}
                evaluated = True
            if step % opts.log_every == 0 or step == total or evaluated:
                last_metrics = {k: float(np.mean(v)) for k, v in window.items()}
                record = {"step": step, "epoch": round(step / steps_per_epoch, 4), **last_metrics,
                          "seconds": round(seconds(), 3)}
                if evaluated:
                    record["validation"] = {k: v for k, v in last_eval.items() if k != "step"}
                log.write(json.dumps(record) + "\n")
                log.flush()
                window.clear()
            if ddp.main and (step % opts.sample_every == 0 or step == total):
                ready_to_release()
                _write_grids(released, out, step, x_show, opts.seed)
            if ddp.main and (step % opts.checkpoint_every == 0 or step == total):
                checkpoint(dict(last_metrics))
    return {
        "output": str(out / MODEL_FILE), "steps": step, "epochs": step / steps_per_epoch,
        "seconds": round(seconds(), 3), "device": str(device), "metrics": last_metrics, "rank": ddp.rank,
        "validation": last_eval, "best": best, "curves": curves["path"],
        "notes": [curves["note"]] if curves["note"] else [],
    }


LOSS_NAMES = ("d_loss", "g_loss", "adv", "fm", "ce", "entropy", "recon", "recon2", "cycle", "r1")


@dataclass(frozen=True)
class LabelledDraw:
    """The labelled images of a semi-supervised run: their rows in the data set, their class index (0..K-1)
    and, per class index, the label value; ``section`` is the checkpoint's classifier section."""

    rows: np.ndarray
    targets: np.ndarray
    class_values: np.ndarray
    section: dict


def _labelled_draw(ds, all_train: np.ndarray, val_idx: np.ndarray, opts: TrainOptions) -> LabelledDraw:
    """``--labels N --label-seed S``: the draw :func:`halitool.draws.labelled_draw` makes for seed S over the
    train split (the same images ``halitool semisup`` labels for that seed), outside the validation slice."""
    from halitool.draws import draw_hash, labelled_draw

    if ds.labels is None:
        raise BadInputError(f"{opts.data}: --labels needs class labels, and this data set has none")
    labels_train = ds.labels[all_train]
    positions = labelled_draw(labels_train, opts.labels, opts.label_seed)
    rows = all_train[positions]
    if np.isin(rows, val_idx).any():
        raise UsageError(f"--val-size {len(val_idx)}: the validation slice overlaps the rows the labelled draw "
                         "picks from; give a smaller --val-size")
    class_values = np.unique(labels_train)
    names = ds.class_names if ds.class_names and len(ds.class_names) == len(class_values) else None
    section = {
        "classes": list(names) if names else [str(int(v)) for v in class_values],
        "class_values": [int(v) for v in class_values],
        "labelled": {"n": int(opts.labels), "seed": int(opts.label_seed), "indices_sha256": draw_hash(positions),
                     "indices": "positions in the train split, in data-set order",
                     "draw": "halitool.draws.labelled_draw: balanced, from the train rows before the held-out block"},
    }
    return LabelledDraw(rows=rows, targets=np.searchsorted(class_values, ds.labels[rows]),
                        class_values=class_values, section=section)


def _step_values(losses: dict) -> dict[str, torch.Tensor]:
    """The numbers logged for one step, as 0-d float tensors on the model's device: every loss part, the mean
    joint logits, the discriminator's accuracy on each kind of tuple and score (``acc_q.joint``: inference
    tuples called real; ``acc_p.joint``: generative tuples called fake) and, per level, the collapse indicator
    (``z1_spread`` against ``z1_std``)."""
    values = {k: losses[k].detach().float() for k in LOSS_NAMES if k in losses}
    values["s_q"], values["s_p"] = losses["s_q"].detach().float().mean(), losses["s_p"].detach().float().mean()
    for key, s in losses.items():
        if key.startswith("s_q."):
            values[f"acc_q.{key[4:]}"] = (s.detach() > 0).float().mean()
        elif key.startswith("s_p."):
            values[f"acc_p.{key[4:]}"] = (s.detach() < 0).float().mean()
        elif key.startswith("posterior."):
            values[f"{key[10:]}_spread"], values[f"{key[10:]}_std"] = collapse_tensors(*s)
    return values


def _progress_line(values: dict, evaluation: dict | None) -> str:
    """Compact, for a terminal line: the discriminator's accuracy on inference/generative tuples (joint score),
    each level's posterior spread/std, then the last validation numbers (class kept, else MSE)."""
    parts = [f"g {values['g_loss']:.2f}", f"D acc {values['acc_q.joint']:.2f}/{values['acc_p.joint']:.2f}",
             "spread/std " + " ".join(f"{k[:-7]} {values[k]:.2f}/{values[k[:-7] + '_std']:.2f}"
                                      for k in values if k.endswith("_spread"))]
    if evaluation and "classifier_error" in evaluation:
        parts.append(f"val error {evaluation['classifier_error']:.2f}%")
    if evaluation:
        parts.append("val " + " ".join(
            f"{level} {v['class_kept']:.0%}" if v["class_kept"] is not None else f"{level} mse {v['mse']:.4f}"
            for level, v in evaluation["levels"].items()))
    return " | ".join(parts)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (they belong to the part of the run being redone)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode(), check=False)
