"""Training a HALI model: ALI's game with both players updated on the same batch, checkpoints and resume.

The run folder and its training state are :mod:`halitool.training_state`'s; what is measured on the validation
slice is :mod:`halitool.validation`'s; the weight average is :mod:`halitool.averaging`'s.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from halitool import __version__, plots
from halitool.averaging import recalibrate_decoders, update_average
from halitool.checkpoint import save_checkpoint
from halitool.choices import KEEP, PRECISIONS
from halitool.data import open_dataset
from halitool.distributed import ProcessGroup, process_group
from halitool.errors import BadInputError, HalitoolError, UsageError
from halitool.grids import save_grid
from halitool.models import HALI, ModelConfig, build_model, images_to_input
from halitool.models.config import MAX_LEVELS, PAPER_OBJECTIVE, RECOMMENDED_OBJECTIVE, SEMI_SUPERVISED_OBJECTIVE
from halitool.models.hali import collapse_tensors
from halitool.progress import SILENT, Progress
from halitool.runtime import hardware, resolve_device
from halitool.training_state import (
    CURVES_FILE,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    STATE_JSON,
    load_state,
    save_state,
    truncate_metrics,
)
from halitool.validation import evaluate, validation_criterion, validation_split

# Options that define a run: a resumed run must use the same values.
RUN_DEFINING = ("data", "arch", "n_levels", "z_dims", "batch_size", "lr", "lr_d", "beta1", "beta2", "seed", "precision",
                "objective", "val_size", "keep", "labels", "label_seed", "ema", "class_latent")
DEFAULT_LR = 3e-4
SEMI_SUPERVISED_LR = 1e-3  # the semi-supervised recipe's learning rate and weight average (docs/semisup.md)
SEMI_SUPERVISED_EMA = 0.999


def semi_supervised_discriminator(labels: int | None, class_latent: int) -> bool:
    """Whether labels teach the discriminator's K class logits, with the semi-supervised recipe's objective,
    learning rate and weight average (not with a class latent, which takes the labels instead)."""
    return labels is not None and not class_latent


@dataclass(frozen=True)
class TrainOptions:
    data: str
    out: Path
    arch: str = "mnist"
    n_levels: int = 2
    z_dims: tuple[int, ...] | None = None  # widths of z2 .. z_L; None: the architecture's rule (default_z_dims)
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
    class_latent: int = 0  # K: the top level is (y, style), y K-way categorical (ModelConfig.class_latent)
    command: str = ""

    @property
    def model_objective(self) -> dict:
        """The levers: those given, the rest from the recommended objective (semi-supervised with the
        discriminator as classifier: its own preset)."""
        preset = SEMI_SUPERVISED_OBJECTIVE if self.semi_supervised_discriminator else RECOMMENDED_OBJECTIVE
        return {**preset, **self.objective}

    @property
    def semi_supervised_discriminator(self) -> bool:
        return semi_supervised_discriminator(self.labels, self.class_latent)


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


@contextlib.contextmanager
def _interrupts_deferred():
    """Ctrl-C held for the block's duration (main thread): a SIGINT that arrives meanwhile is recorded, and raised
    again through the previous handler when the block ends. A Python-level handler, not a blocked signal mask: the
    kernel may deliver a process's SIGINT to any thread that does not block it (a progress display's refresh
    thread), and Python then interrupts the main thread all the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if arrived:
            signal.raise_signal(signal.SIGINT)


def _adam(params, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam with torch's fused kernel: the same update up to float rounding, in about a quarter of the time of the
    per-tensor loop on a CPU (docs/benchmarks.md, "Measurements behind the code"). It pairs the elements of a
    parameter and its gradient by memory position: hand it gradients through :func:`_in_layout_of`. A resumed run
    keeps the kernel it was started with (its saved parameter groups say which)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


def _in_layout_of(grads, params) -> list[torch.Tensor]:
    """Each gradient in its parameter's memory layout. A channels-last training pass (halitool.models.hali,
    "faster layers") gives some convolution weights channels-last gradients, and the fused Adam kernel pairs the
    elements of a parameter and its gradient by memory position: with different layouts it would update every
    weight with another weight's gradient."""
    return [g if g.stride() == p.stride() else torch.empty_like(p).copy_(g) for g, p in zip(grads, params)]


def _options_json(opts: TrainOptions) -> dict:
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(opts).items()}


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
def check_options(opts: TrainOptions) -> None:
    """Every option checked before the run folder is touched."""
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
    if opts.precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {opts.precision!r}")
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
    if opts.class_latent == 1 or opts.class_latent < 0:
        raise UsageError(f"--class-latent must be 0 (none) or at least 2 classes, not {opts.class_latent}")
    if opts.class_latent and opts.n_levels < 2:
        raise UsageError("--class-latent needs --n-levels 2 or more (the top level holds the class)")
    for name in ("imsat_weight", "vat_eps"):
        if opts.objective.get(name) and not opts.class_latent:
            raise UsageError(f"--{name.replace('_', '-')} (also in --objective clustering) acts on the class "
                             "latent's q(y|x): it needs --class-latent K")
    if opts.labels is not None and opts.labels < 1:
        raise UsageError(f"--labels must be at least 1, not {opts.labels}")
    if not 1 <= opts.n_levels <= MAX_LEVELS:
        raise UsageError(f"--n-levels must be 1 to {MAX_LEVELS}, not {opts.n_levels}")
    if opts.z_dims is not None and len(opts.z_dims) != opts.n_levels - 1:
        raise UsageError(f"--z-dims gives {len(opts.z_dims)} widths; --n-levels {opts.n_levels} needs "
                         f"{opts.n_levels - 1} (z2 .. z{opts.n_levels})")


def train(opts: TrainOptions, progress: Progress = SILENT) -> dict:
    """Train (or resume) a run in ``opts.out``; returns a summary. Raises HalitoolError on divergence.

    Under torchrun every process trains on its slice of each batch; rank 0 alone writes files and reports."""
    check_options(opts)
    device = resolve_device(opts.device)
    group = process_group(device)
    try:
        summary = _Run(opts, device, group).loop(progress if group.main else SILENT)
        # Tear the process group down only once every rank is done (rank 0 writes the last checkpoint while the
        # others would already be destroying the group; gloo then aborts a rank at exit).
        group.barrier()
        return summary
    finally:
        group.close()


class _Run:
    """One invocation of ``train``: the data, the model with its optimisers and weight average, and the state of
    the loop (step, elapsed seconds, best snapshot, last evaluation). Each method is one step of the run."""

    def __init__(self, opts: TrainOptions, device: torch.device, group: ProcessGroup):
        self.opts, self.device, self.group, self.out = opts, device, group, opts.out
        self._open_data()
        self._build_model()
        self._start_or_resume()
        self._prepare_validation()
        self.training = self._provenance()
        # Training images (never the validation slice) whose reconstructions set the average's decoder statistics.
        self.x_calibrate = (images_to_input(self.ds.images(self.train_idx[:2000]), device)
                            if self.averaged is not None else None)
        self.calibrated_at: int | None = None  # the step whose weights the average's statistics were computed for
        self.last_good = self.step if opts.resume else None  # the step of the last checkpoint written
        self.last_eval: dict | None = None
        self.curves: dict = {"path": None, "note": None}  # the last drawing of CURVES_FILE, or why there is none
        self.start_time = time.perf_counter()

    # ------------------------------------------------------------------------------------------- set-up
    def _open_data(self) -> None:
        opts = self.opts
        self.ds = ds = open_dataset(opts.data)
        all_train = ds.indices("train")
        if len(all_train) == 0:
            raise BadInputError(f"{opts.data}: the data set has no training images")
        self.train_idx, self.val_idx = validation_split(all_train, opts.val_size)
        if opts.keep != "last" and len(self.val_idx) == 0:
            raise UsageError(f"--keep {opts.keep} needs a validation slice; {opts.data} has only {len(all_train)} "
                             "training images (give --val-size)")
        self.labelled = _labelled_draw(ds, all_train, self.val_idx, opts) if opts.labels is not None else None
        if self.labelled and opts.class_latent and opts.class_latent != len(self.labelled.class_values):
            raise UsageError(f"--class-latent {opts.class_latent} with --labels: {opts.data} has "
                             f"{len(self.labelled.class_values)} classes, and the class latent needs one value each")
        self.config = ModelConfig(arch=opts.arch, n_levels=opts.n_levels, z_dims=opts.z_dims,
                                  n_classes=len(self.labelled.class_values) if opts.semi_supervised_discriminator
                                  else 0, class_latent=opts.class_latent,
                                  **opts.model_objective)
        if tuple(ds.image_shape) != tuple(self.config.architecture.image_shape):
            raise BadInputError(f"{opts.data}: images are {tuple(ds.image_shape)} but architecture {opts.arch!r} "
                                f"expects {tuple(self.config.architecture.image_shape)}")
        self.batch_size = min(opts.batch_size, len(self.train_idx))
        self.steps_per_epoch = len(self.train_idx) // self.batch_size  # full batches: batch norm sees equal sizes
        if self.batch_size % self.group.world:
            raise UsageError(f"--batch-size {self.batch_size} is not divisible by the {self.group.world} torchrun "
                             "processes")
        self.total = (opts.steps if opts.steps is not None
                      else max(1, round((opts.epochs or 1.0) * self.steps_per_epoch)))

    def _build_model(self) -> None:
        opts = self.opts
        if self.group.main:
            self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(opts.seed)
        self.model = model = build_model(self.config).to(self.device)
        model.train()
        self.lr_d = opts.lr_d if opts.lr_d is not None else opts.lr
        self.opt_d = _adam(model.discriminator.parameters(), self.lr_d, (opts.beta1, opts.beta2))
        self.opt_g = _adam(model.generator_parameters(), opts.lr, (opts.beta1, opts.beta2))
        self.d_params = list(model.discriminator.parameters())
        self.g_params = model.generator_parameters()
        # The weights' moving average (--ema): what evaluation, pictures and the checkpoint use; training moves
        # the raw weights.
        self.averaged = copy.deepcopy(model).eval() if opts.ema else None
        self.released = self.averaged if self.averaged is not None else model  # evaluated, pictured and saved

    def _start_or_resume(self) -> None:
        opts, out, model = self.opts, self.out, self.model
        self.best: dict | None = None  # {"step", "criterion"} of the snapshot --keep best holds
        self.initialised_from = None
        if opts.resume:
            self.step, self.seconds_before, saved, legs, self.best = load_state(
                out, model, self.opt_d, self.opt_g, self.device, self.averaged)
            now = _options_json(opts)
            # A state written before an option existed lacks its key: that run had the option's default.
            defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions)
                        if f.default is not dataclasses.MISSING}
            changed = [k for k in RUN_DEFINING
                       if saved.get(k, saved.get("levels") if k == "n_levels" else defaults.get(k)) != now.get(k)]
            if changed:
                raise UsageError(f"{out}: --resume needs the options of the original run; changed: "
                                 + ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in changed))
            if self.group.main:
                truncate_metrics(out / METRICS_FILE, self.step)
        else:
            self.step, self.seconds_before, legs = 0, 0.0, []
            if self.group.main:
                for stale in (METRICS_FILE, STATE_FILE, STATE_JSON, CURVES_FILE):
                    (out / stale).unlink(missing_ok=True)
            first = self.train_idx[: min(len(self.train_idx), 10000)]
            model.init_pixel_bias(images_to_input(self.ds.images(first), self.device).mean(dim=0))
            if opts.init_from is not None:
                self.initialised_from = _init_from(model, opts.init_from)
            if self.averaged is not None:
                self.averaged.load_state_dict(model.state_dict())
        # Every command that trained this run, in order, with the step it started from (the checkpoint's provenance).
        self.legs = [*legs, {"from_step": self.step, "command": opts.command}]
        if self.group.world > 1:
            # Same weights everywhere, different noise and dropout per process (and per resumed segment).
            torch.manual_seed(int(np.random.default_rng([opts.seed, self.group.rank, self.step]).integers(2**62)))

    def _prepare_validation(self) -> None:
        ds, val_idx = self.ds, self.val_idx
        self.x_show = images_to_input(ds.images(self.train_idx[:10]), self.device)
        self.x_val = images_to_input(ds.images(val_idx), "cpu") if len(val_idx) else None
        self.val_labels = ds.labels[val_idx] if ds.labels is not None and len(val_idx) else None
        self.classifier = None
        if self.group.main and self.val_labels is not None:
            from halitool.reference import reference_classifier

            # Trained on the train split's real images only (cached): judges whether reconstructions keep the class.
            with torch.random.fork_rng(devices=[]):
                self.classifier = reference_classifier(ds, device=self.device)

    def _provenance(self) -> dict:
        """The checkpoint's ``training`` metadata, less what changes with each save (steps, seconds, date)."""
        opts, val_idx = self.opts, self.val_idx
        training = {
            "data": opts.data, "split": "train", "n_train": int(len(self.train_idx)), "batch_size": self.batch_size,
            "validation": {"rows": "last of the train split", "n": int(len(val_idx)),
                           "first_index": int(val_idx[0]) if len(val_idx) else None},
            "steps_per_epoch": self.steps_per_epoch, "lr": opts.lr, "lr_d": self.lr_d,
            "betas": [opts.beta1, opts.beta2], "seed": opts.seed, "precision": opts.precision,
            "objective": self.config.objective, "keep": opts.keep, "device": str(self.device),
            "hardware": hardware(self.device), "halitool_version": __version__, "torch_version": torch.__version__,
            "command": opts.command, "legs": self.legs, "processes": self.group.world,
        }
        if self.labelled:
            training["labelled"] = self.labelled.section["labelled"]
        if self.initialised_from:
            training["initialised_from"] = self.initialised_from
        if self.averaged is not None:
            training["ema"] = {"decay": opts.ema, "warm-up": "decay min(ema, (1 + step) / (10 + step))"}
        return training

    # -------------------------------------------------------------------------------------------- steps
    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start_time

    def _batch(self) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """This process's slice of the step's batch (a seeded permutation per epoch) and, semi-supervised, as
        many labelled images as unlabelled ones, drawn with replacement from the N (per step, so that a resumed
        run draws the same ones)."""
        opts, group, ds = self.opts, self.group, self.ds
        epoch, pos = divmod(self.step, self.steps_per_epoch)
        order = np.random.default_rng([opts.seed, epoch]).permutation(self.train_idx)
        idx = order[pos * self.batch_size: (pos + 1) * self.batch_size][group.rank:: group.world]
        x = images_to_input(ds.images(idx), self.device)
        if self.labelled is None:
            return x, None
        pick = np.random.default_rng([opts.seed, 1, self.step]).integers(0, len(self.labelled.rows), self.batch_size)
        pick = pick[group.rank:: group.world]
        return x, (images_to_input(ds.images(self.labelled.rows[pick]), self.device),
                   torch.as_tensor(self.labelled.targets[pick], device=self.device))

    def _update(self, x: torch.Tensor, shown) -> dict[str, float]:
        """One step of the game: losses, gradients averaged over the processes, both optimisers, the average.
        Returns the step's logged values; a non-finite loss stops the run (the last checkpoint is kept)."""
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.opts.precision == "bf16")
        with autocast:
            losses = self.model.losses(x, shown)
        watched = _step_values(losses)
        names = list(watched)
        logged = torch.stack([watched[k] for k in names])  # on the device: one host sync for all of them
        self.group.average([logged])  # every process sees the same values, so all stop together on NaN
        values = dict(zip(names, logged.tolist()))
        bad = {k: v for k, v in values.items() if k in LOSS_NAMES and not math.isfinite(v)}
        if bad:
            kept = (f"the last good checkpoint {self.out / MODEL_FILE} (step {self.last_good}) is kept"
                    if self.last_good is not None else "no checkpoint was written")
            raise HalitoolError(f"{self.out}: training diverged at step {self.step + 1}: "
                                + ", ".join(f"{k} = {v}" for k, v in bad.items()) + f"; {kept}")
        d_grads = _in_layout_of(torch.autograd.grad(losses["d_loss"], self.d_params, retain_graph=True), self.d_params)
        g_grads = _in_layout_of(torch.autograd.grad(losses["g_loss"], self.g_params), self.g_params)
        self.group.average([*d_grads, *g_grads])
        for p, g in zip(self.d_params, d_grads):
            p.grad = g
        for p, g in zip(self.g_params, g_grads):
            p.grad = g
        # ALI: both players move on the same batch, from the same forward pass.
        self.opt_d.step()
        self.opt_g.step()
        self.group.broadcast_buffers(self.model)
        self.step += 1
        if self.averaged is not None:
            update_average(self.averaged, self.model, self.opts.ema, self.step)
        return values

    def _ready_to_release(self) -> None:
        """Before the released weights are evaluated, pictured or saved: the average's decoder statistics."""
        if self.averaged is not None and self.calibrated_at != self.step:
            recalibrate_decoders(self.averaged, self.x_calibrate)
            self.calibrated_at = self.step

    def _evaluate(self) -> dict:
        """The validation numbers of the released weights at this step (computed once per step)."""
        if self.last_eval is None or self.last_eval["step"] != self.step:
            self._ready_to_release()
            class_values = self.labelled.class_values if self.labelled else None
            self.last_eval = {"step": self.step, **evaluate(self.released, self.x_val, self.val_labels,
                                                            self.classifier, class_values=class_values)}
        return self.last_eval

    def _checkpoint(self, metrics: dict) -> None:
        """Write model.safetensors (every time, or when --keep best finds a better snapshot) and the state."""
        opts, out, step = self.opts, self.out, self.step
        self._ready_to_release()
        evaluation = self._evaluate() if self.x_val is not None else None
        metrics = {**metrics, **({"validation": evaluation} if evaluation else {})}
        info = {**self.training, "steps": step, "epochs": step / self.steps_per_epoch,
                "seconds": round(self.seconds(), 3), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        section = self.labelled.section if self.labelled else None
        score = validation_criterion(evaluation) if opts.keep == "best" else None
        better = score is not None and (self.best is None or score < self.best["criterion"])
        if better:
            self.best = {"step": step, "criterion": score}
        # The state first: a kill between the two renames then leaves a state to resume from (which reads it
        # alone), never a checkpoint that --resume refuses for want of one (the first checkpoint of a run).
        save_state(out, step, self.seconds(), _options_json(opts), self.model, self.opt_d, self.opt_g, self.legs,
                   self.best, self.averaged)
        if opts.keep == "last" or better:
            if better:
                info["selected"] = {"by": "lowest top-level validation MSE", **self.best}
            save_checkpoint(out / MODEL_FILE, self.released, preprocessing=self._preprocessing(), training=info,
                            metrics=metrics, classifier=section)
        self.last_good = step
        try:
            # Ctrl-C is held back while the figure is drawn: an interrupt inside matplotlib's first import left it
            # half-imported (exit 1 with an AttributeError instead of 130); it is delivered right after.
            with _interrupts_deferred():
                self.curves["path"] = str(plots.training_curves(out / METRICS_FILE, out / CURVES_FILE, LOSS_NAMES))
        except plots.MatplotlibMissing as exc:  # a by-product: a run never fails for want of a figure
            self.curves["note"] = f"{CURVES_FILE} not drawn: {exc}"

    def _preprocessing(self) -> dict:
        return {**self.ds.preprocessing, "image_shape": list(self.ds.image_shape), "model_input_range": [0, 1]}

    def loop(self, progress: Progress) -> dict:
        """Steps until the total, with the periodic evaluation, log line, pictures and checkpoint."""
        opts, main = self.opts, self.group.main
        window: dict[str, list[float]] = {}
        last_metrics: dict = {}
        with progress.task("training", total=self.total, completed=self.step) as task, \
                (open(self.out / METRICS_FILE, "a") if main else open(os.devnull, "w")) as log:
            while self.step < self.total:
                values = self._update(*self._batch())
                step, last = self.step, self.step == self.total
                for k, v in values.items():
                    window.setdefault(k, []).append(v)
                task.advance(1, info=_progress_line(values, self.last_eval))
                evaluated = main and self.x_val is not None and (step % opts.eval_every == 0 or last)
                if evaluated:
                    self._evaluate()
                if step % opts.log_every == 0 or last or evaluated:
                    last_metrics = {k: float(np.mean(v)) for k, v in window.items()}
                    record = {"step": step, "epoch": round(step / self.steps_per_epoch, 4), **last_metrics,
                              "seconds": round(self.seconds(), 3)}
                    if evaluated:
                        record["validation"] = {k: v for k, v in self.last_eval.items() if k != "step"}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    window.clear()
                if main and (step % opts.sample_every == 0 or last):
                    self._ready_to_release()
                    _write_grids(self.released, self.out, step, self.x_show, opts.seed)
                if main and (step % opts.checkpoint_every == 0 or last):
                    self._checkpoint(dict(last_metrics))
        return {
            "output": str(self.out / MODEL_FILE), "steps": self.step, "epochs": self.step / self.steps_per_epoch,
            "seconds": round(self.seconds(), 3), "device": str(self.device), "metrics": last_metrics,
            "rank": self.group.rank, "validation": self.last_eval, "best": self.best,
            "curves": self.curves["path"], "notes": [self.curves["note"]] if self.curves["note"] else [],
        }


LOSS_NAMES = ("d_loss", "g_loss", "adv", "fm", "ce", "entropy", "recon", "recon2", "cycle", "r1", "vat", "information")


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
    if evaluation and "cluster_accuracy" in evaluation:
        parts.append(f"val cluster acc {evaluation['cluster_accuracy']:.1f}%")
    if evaluation:
        parts.append("val " + " ".join(
            f"{level} {v['class_kept']:.0%}" if v["class_kept"] is not None else f"{level} mse {v['mse']:.4f}"
            for level, v in evaluation["levels"].items()))
    return " | ".join(parts)
