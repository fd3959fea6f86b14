"""Per-level latent features of a whole data set, written to a features file (HDF5 schema v1).

The file is written as ``OUT.partial`` beside ``OUT`` and renamed onto ``OUT`` only when every row is in it. After
each batch the rows written so far are recorded in the partial and flushed, so a run stopped by Ctrl-C or a
kill leaves a partial that ``resume=True`` finishes, provided the checkpoint, data and options it was written
with (its ``extract_options`` attribute) are the same.

Under ``torchrun --nproc-per-node=K`` each rank encodes a contiguous range of rows (whole batches) into its own
shard ``OUT.partial.rankRofK`` (resumable the same way); rank 0 then copies the shards into one file, which is
identical to a single-process run's because every batch holds the same rows either way.

``latent="sample"`` draws from a ``torch.Generator`` seeded per batch from ``(seed, first row of the batch)``:
the samples depend on the seed and the batch size only, never on resume points or the number of ranks.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from halitool import __version__
from halitool.choices import LATENTS, PRECISIONS
from halitool.data import Dataset, open_dataset
from halitool.data.base import SPLIT_CHOICES
from halitool.errors import BadInputError, IncompleteOutputError, UsageError
from halitool.features import FeaturesFile, FeaturesWriter, LevelLayout, open_features
from halitool.fileio import check_output_path
from halitool.distributed import ProcessGroup, process_group
from halitool.levels import parse_levels
from halitool.models.hali import images_to_input, inference_copy
from halitool.progress import SILENT, Progress
from halitool.runtime import command_line, library_versions, resolve_device

log = logging.getLogger(__name__)

# How often the partial's progress (rows_done) is recorded and the file flushed: a kill loses at most this much
# work. A flush after every batch cost 4 % of a 10,000-image MNIST run at batch 256.
FLUSH_SECONDS = 0.5


def partial_path(output: Path) -> Path:
    """Where an unfinished ``output`` lives until it is complete."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def shard_path(output: Path, rank: int, world: int) -> Path:
    return output.with_name(f"{output.name}.partial.rank{rank}of{world}")


def batch_seed(seed: int, first_row: int) -> int:
    """The generator seed of the batch starting at ``first_row`` (of the selected rows)."""
    return int(np.random.SeedSequence([int(seed), int(first_row)]).generate_state(1, np.uint64)[0] >> 1)


def _rank_range(n: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [start, stop) of ``rank``: whole batches, so that every batch is the one a single process runs."""
    n_batches = -(-n // batch_size)
    lo, hi = n_batches * rank // world, n_batches * (rank + 1) // world
    return min(n, lo * batch_size), min(n, hi * batch_size)


def _option_differences(recorded: dict, wanted: dict) -> list[str]:
    keys = sorted(set(recorded) | set(wanted))
    return [f"{k} (partial: {recorded.get(k)!r}, now: {wanted.get(k)!r})" for k in keys if recorded.get(k) != wanted.get(k)]


class _Pending:
    """One batch's outputs on their way to the host; :meth:`result` waits for them (once per batch at most)."""

    def __init__(self, means: dict, logvars: dict | None, event=None):
        self.means, self.logvars, self.event = means, logvars, event

    def result(self) -> tuple[dict, dict | None]:
        if self.event is not None:
            self.event.synchronize()
        return self.means, self.logvars


class _Encoder:
    """Batches of uint8 images -> float32 numpy arrays of the wanted levels (and their logvars).

    On CUDA a batch goes through a pinned staging buffer with a non-blocking copy, and its outputs come back
    with non-blocking copies into pinned host buffers followed by an event: :meth:`submit` returns without
    waiting for the GPU, so the caller submits batch k+1 before it waits (``_Pending.result``) for batch k.
    The host therefore waits at most once per batch, while the GPU already has the next batch queued. Two sets
    of buffers alternate; a set is reused only after the event of the batch that last used it has fired.
    """

    def __init__(self, model, device: torch.device, levels: Sequence[str], latent: str, seed: int,
                 with_logvar: bool, precision: str, compile_model: bool = False):
        # Encoders rewritten for inference (batch norm folded, in-place activations, channels-last): the same
        # latents up to float rounding, faster (models/hali.py, inference_copy; docs/benchmarks.md measures it).
        self.model = inference_copy(model)
        self.device, self.levels = device, list(levels)
        self.latent, self.seed, self.with_logvar = latent, seed, with_logvar
        self.autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        )
        self.cuda = device.type == "cuda"
        self.encode_chain = self.model.encode_chain
        self.compiled = False
        if compile_model:
            self.encode_chain = torch.compile(self.model.encode_chain)
            self.compiled = True
        self._turn = 0
        self._staging: list[torch.Tensor | None] = [None, None]
        self._host: list[dict] = [{}, {}]
        self._events: list = [None, None]

    def _generator(self, first_row: int) -> torch.Generator | None:
        if self.latent != "sample":
            return None
        return torch.Generator(device=self.device).manual_seed(batch_seed(self.seed, first_row))

    def _input(self, images: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(images)
        if self.cuda:
            staging = self._staging[self._turn]
            if staging is None or staging.shape[0] < len(images) or staging.shape[1:] != batch.shape[1:]:
                staging = self._staging[self._turn] = torch.empty(batch.shape, dtype=torch.uint8, pin_memory=True)
            staging = staging[: len(images)]
            staging.copy_(batch)
            batch = staging
        x = images_to_input(batch, self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last)

    def _forward(self, x: torch.Tensor, first_row: int) -> tuple[dict, dict | None]:
        """Device tensors ``[B, ...]`` of the wanted levels (and logvars)."""
        with torch.inference_mode(), self.autocast:
            # One pass up the chain: the latents (means, or the samples drawn) and the (mean, logvar) of each level.
            zs, stats = self.encode_chain(x, self.latent, self._generator(first_row))
        logvars = {k: stats[k][1] for k in self.levels} if self.with_logvar else None
        return {k: zs[k] for k in self.levels}, logvars

    def _forward_or_eager(self, x: torch.Tensor, first_row: int) -> tuple[dict, dict | None]:
        if not self.compiled:
            return self._forward(x, first_row)
        try:
            return self._forward(x, first_row)
        except Exception as exc:  # noqa: BLE001  a compiler missing or failing on this machine: run eagerly
            log.warning(f"torch.compile failed ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); encoding without it")
            self.encode_chain = self.model.encode_chain
            self.compiled = False
            return self._forward(x, first_row)

    def submit(self, images: np.ndarray, first_row: int) -> _Pending:
        """Start encoding one batch; the returned handle's ``result()`` gives float32 numpy ``[B, D]`` arrays."""
        if self.cuda and self._events[self._turn] is not None:
            self._events[self._turn].synchronize()  # the staging and host buffers of this turn are free again
        means, logvars = self._forward_or_eager(self._input(images), first_row)
        if not self.cuda:
            return _Pending({k: _numpy(v) for k, v in means.items()},
                            None if logvars is None else {k: _numpy(v) for k, v in logvars.items()})
        host = self._host[self._turn]

        def to_host(kind: str, tensors: dict) -> dict:
            out = {}
            for name, t in tensors.items():
                t = t.float().reshape(t.shape[0], -1)  # cast on the device: the host copy stays a plain one
                buf = host.get((kind, name))
                if buf is None or buf.shape[0] < t.shape[0]:
                    buf = host[(kind, name)] = torch.empty((max(t.shape[0], 1), t.shape[1]), dtype=torch.float32,
                                                           pin_memory=True)
                buf[: t.shape[0]].copy_(t, non_blocking=True)
                out[name] = buf[: t.shape[0]].numpy()
            return out

        pending = _Pending(to_host("mean", means), None if logvars is None else to_host("logvar", logvars),
                           torch.cuda.Event())
        pending.event.record()
        self._events[self._turn] = pending.event
        self._turn = 1 - self._turn
        return pending

    def __call__(self, images: np.ndarray, first_row: int) -> tuple[dict, dict | None]:
        """Encode one batch and wait for it."""
        return self.submit(images, first_row).result()


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().reshape(t.shape[0], -1).cpu().numpy()


def _open_or_create(path: Path, options: dict, create, *, resume: bool, force: bool) -> FeaturesWriter:
    """The partial at ``path``: resumed (options must match), or created afresh."""
    if path.exists() and resume:
        try:
            writer = FeaturesWriter.reopen(path)
        except BadInputError as exc:
            log.warning(f"{path}: unreadable partial ({exc}); starting again from scratch")
        else:
            recorded = FeaturesFile(writer.path, writer.h5).attrs
            diffs = _option_differences(recorded.get("extract_options") or {}, options)
            if diffs:
                writer.close()
                raise BadInputError(f"{path}: cannot resume: the partial was written with other settings: "
                                    + "; ".join(diffs) + " (pass --force instead of --resume to start over)")
            log.info(f"{path}: resuming at row {writer.rows_done:,} of {writer.n_samples:,}")
            return writer
    elif path.exists() and not force:
        raise IncompleteOutputError(f"{path}: a partial output of an interrupted run exists; pass --resume to "
                                    "finish it, or --force to start over")
    elif resume:
        log.info(f"{path}: no partial to resume; starting from scratch")
    path.unlink(missing_ok=True)
    return create(path)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened for fsync
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def extract_features(
    checkpoint,
    data_spec,
    output,
    *,
    split: str = "all",
    levels: Sequence[str] | str | None = None,
    latent: str = "mean",
    seed: int = 0,
    with_logvar: bool = False,
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "fp32",
    workers: int = 0,
    resume: bool = False,
    force: bool = False,
    compile: bool = False,
    progress: Progress = SILENT,
) -> dict:
    """Encode every selected image of ``data_spec`` (a SPEC or a :class:`Dataset`) with ``checkpoint`` into ``output``.

    Returns the summary ``output``, ``n_samples``, ``levels`` {name: shape}, ``seconds``, ``images_per_second``
    (images encoded by this call), ``device``. Raises UsageError (bad options, existing output without
    ``force``, missing output folder, CUDA asked for but absent), BadInputError (missing or incompatible
    checkpoint or data, a resume whose partial differs) and IncompleteOutputError (a partial exists and neither
    ``resume`` nor ``force`` was given). Whatever happens, nothing but a complete file ever appears at ``output``.
    ``compile=True`` runs the encoder through ``torch.compile`` (worth it on GPUs for long runs; when compiling
    fails on this machine a warning is logged and the run goes on without it).
    """
    from halitool.checkpoint import load_checkpoint

    t0 = time.perf_counter()
    _check_options(latent=latent, precision=precision, split=split, batch_size=batch_size, workers=workers)
    output = Path(output)
    check_output_path(output, force)
    dev = resolve_device(device)

    loaded = load_checkpoint(checkpoint, dev)
    model = loaded.model.eval()
    ds = data_spec if isinstance(data_spec, Dataset) else open_dataset(str(data_spec))
    if tuple(ds.image_shape) != tuple(model.image_shape):
        raise BadInputError(f"{ds.root}: images are {tuple(ds.image_shape)} (C, H, W) but {loaded.path} expects "
                            f"{tuple(model.image_shape)} (architecture {loaded.config.arch!r})")
    if not isinstance(levels, str) and levels is not None:
        levels = ",".join(levels)
    # Always stored in level order, each at most once.
    levels = parse_levels(levels, model.level_names) if levels else list(model.level_names)
    rows = ds.indices(split)
    settings = {"split": split, "levels": levels, "latent": latent, "seed": int(seed), "with_logvar": bool(with_logvar),
                "precision": precision, "batch_size": batch_size}
    options = _resume_options(loaded, ds, rows, settings)
    create = _writer_factory(ds, rows, [LevelLayout(name, tuple(model.level_shapes[name])) for name in levels],
                             {**_provenance(loaded, checkpoint, ds, rows, settings), "extract_options": options},
                             with_logvar)

    if ds.image_cache is not None:  # check or build the decode-once cache now, not under the progress bar
        ds.image_cache.progress = progress
        ds.image_cache.open()
    encoder = _Encoder(model, dev, levels, latent, seed, with_logvar, precision, compile_model=compile)
    group = process_group(dev)
    try:
        if group.world == 1:
            partial = partial_path(output)
            writer = _open_or_create(partial, options, create, resume=resume, force=force)
            encoded = _encode_into(writer, ds, rows, 0, encoder, batch_size, workers, progress)
            _finish(writer, output)
        else:
            encoded = _extract_distributed(group, output, options, create, ds, rows, encoder, batch_size,
                                           workers, resume, force, progress if group.main else SILENT, dev)
    finally:
        group.close()
    seconds = time.perf_counter() - t0
    return {
        "output": str(output),
        "n_samples": len(rows),
        "levels": {name: list(model.level_shapes[name]) for name in levels},
        "seconds": seconds,
        "images_per_second": encoded / seconds if seconds > 0 else None,
        "device": str(dev),
    }


def _check_options(*, latent: str, precision: str, split: str, batch_size: int, workers: int) -> None:
    if latent not in LATENTS:
        raise UsageError(f"--latent must be one of {', '.join(LATENTS)}, not {latent!r}")
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if split not in SPLIT_CHOICES:
        raise UsageError(f"--split must be one of {', '.join(SPLIT_CHOICES)}, not {split!r}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    if workers < 0:
        raise UsageError(f"--workers must be 0 or more, not {workers}")


def _resume_options(loaded, ds: Dataset, rows: np.ndarray, settings: dict) -> dict:
    """What a partial must have been written with for ``--resume`` to continue it (recorded in the file)."""
    return {
        "checkpoint_sha256": loaded.sha256,
        "model_config": loaded.config.to_dict(),
        "dataset": ds.kind,
        "dataset_root": str(Path(ds.root).resolve()),
        "split": settings["split"],
        "n_rows": len(rows),
        "rows_sha256": hashlib.sha256(ds.sample_ids[rows].tobytes() + ds.split[rows].tobytes()).hexdigest(),
        "levels": settings["levels"],
        "latent": settings["latent"],
        "seed": settings["seed"],
        "with_logvar": settings["with_logvar"],
        "precision": settings["precision"],
        # Mean latents do not depend on how rows are batched; samples are drawn per batch.
        "batch_size": settings["batch_size"] if settings["latent"] == "sample" else None,
    }


def _provenance(loaded, checkpoint, ds: Dataset, rows: np.ndarray, settings: dict) -> dict:
    """The file's provenance attributes (docs/features.md)."""
    counts = np.bincount(ds.split[rows], minlength=3)
    return {
        "halitool_version": __version__,
        "checkpoint_sha256": loaded.sha256,
        "checkpoint_name": str(checkpoint),
        "checkpoint_path": str(loaded.path.resolve()),
        "model_config": loaded.config.to_dict(),
        "preprocessing": {"dataset": ds.preprocessing, "model": loaded.preprocessing},
        "dataset": ds.kind,
        "dataset_root": str(Path(ds.root).resolve()),
        "splits": {"selected": settings["split"],
                   "rows": {name: int(c) for name, c in zip(("train", "valid", "test"), counts)}},
        "latent": settings["latent"],
        "seed": settings["seed"],
        "precision": settings["precision"],
        "batch_size": settings["batch_size"],
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command_line() or shlex.join(sys.argv),
        "library_versions": library_versions(),
    }


def _writer_factory(ds: Dataset, rows: np.ndarray, layouts: list[LevelLayout], provenance: dict, with_logvar: bool):
    """``create(path, lo, hi, extra)``: a new features file for rows ``lo:hi`` of ``rows``. A whole file (no
    ``extra``) carries the labels (classes, attributes, factors) and file names; a torchrun shard (``extra``: its
    place) carries latents only."""
    def create(path: Path, lo: int = 0, hi: int = len(rows), extra: dict | None = None) -> FeaturesWriter:
        sel = rows[lo:hi]
        whole = extra is None
        return FeaturesWriter.create(
            path, levels=layouts, split=ds.split[sel], sample_ids=ds.sample_ids[sel],
            provenance={**provenance, "extract_options": {**provenance["extract_options"], **(extra or {})}},
            with_logvar=with_logvar,
            filenames=[ds.filenames[i] for i in sel] if whole and ds.filenames is not None else None,
            labels=ds.labels[sel] if whole and ds.labels is not None else None,
            class_names=ds.class_names if whole else None,
            attributes=ds.attributes[sel] if whole and ds.attributes is not None else None,
            attribute_names=ds.attribute_names if whole else (),
            factors=ds.factors[sel] if whole and ds.factors is not None else None,
            factor_names=ds.factor_names if whole else (),
        )

    return create


class _DeferredInterrupt:
    """Ctrl-C noted and raised as KeyboardInterrupt between batches, where the partial is consistent.

    A KeyboardInterrupt raised at an arbitrary point can land in a finaliser (h5py closes objects from weakref
    callbacks), where Python prints and ignores it, and the run would go on. A second Ctrl-C interrupts at once.
    """

    def __init__(self):
        self.requested = False
        self.previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _encode_into(writer: FeaturesWriter, ds: Dataset, rows: np.ndarray, offset: int, encoder: _Encoder,
                 batch_size: int, workers: int, progress: Progress) -> int:
    """Fill ``writer`` (rows ``offset:offset+len`` of ``rows``) from its ``rows_done`` on; returns rows encoded.

    The partial's progress is recorded and flushed every FLUSH_SECONDS at most, and at the end; on any exception
    (Ctrl-C included) it is recorded and the partial closed before the exception goes on.
    """
    n = writer.n_samples
    start = writer.rows_done
    t0 = last_flush = time.perf_counter()
    done = start
    pending = None  # (rows, _Pending) of the batch submitted but not yet written

    def write_pending() -> None:
        nonlocal done, pending, last_flush
        (size, handle), pending = pending, None
        means, logvars = handle.result()
        writer.write(done, means, logvars)
        done += size
        now = time.perf_counter()
        if now - last_flush >= FLUSH_SECONDS:
            writer.mark_done(done)
            last_flush = now
        task.advance(size, info=f"{(done - start) / (now - t0):,.0f} images/s")

    try:
        with progress.task("extract", total=n, completed=start) as task, _DeferredInterrupt() as interrupt:
            # One batch in flight: batch k+1 is submitted before batch k is waited for and written.
            submitted = start
            for chunk, images in ds.iter_batches(rows[offset + start : offset + n], batch_size, workers):
                handle = (len(chunk), encoder.submit(images, offset + submitted))
                submitted += len(chunk)
                if pending is not None:
                    write_pending()
                pending = handle
                interrupt.check()
            if pending is not None:
                write_pending()
            writer.mark_done(done)
    except BaseException:
        if pending is not None:  # an encoded batch is as good as written: keep it for --resume
            with contextlib.suppress(Exception):
                write_pending()
        with contextlib.suppress(Exception):
            writer.mark_done(done)
        with contextlib.suppress(Exception):
            writer.close()
        log.warning(f"{writer.path}: {done:,} of {n:,} rows saved; run again with --resume to finish")
        raise
    return done - start


def _finish(writer: FeaturesWriter, output: Path) -> None:
    """Mark complete, flush, close, fsync, and rename onto ``output``."""
    path = writer.path
    writer.finish()
    writer.sync()
    os.replace(path, output)
    _fsync_dir(output.parent)


def _extract_distributed(group: ProcessGroup, output: Path, options: dict, create, ds: Dataset, rows: np.ndarray,
                         encoder: _Encoder, batch_size: int, workers: int, resume: bool, force: bool,
                         progress: Progress, dev: torch.device) -> int:
    rank, world = group.rank, group.world
    lo, hi = _rank_range(len(rows), batch_size, rank, world)
    shard = shard_path(output, rank, world)
    extra = {"world_size": world, "shard_rows": [lo, hi]}
    ok, encoded, error = True, 0, None
    try:
        writer = _open_or_create(shard, {**options, **extra}, lambda p: create(p, lo, hi, extra),
                                 resume=resume, force=force)
        encoded = _encode_into(writer, ds, rows, lo, encoder, batch_size, workers, progress)
        writer.finish()
        writer.sync()
    except Exception as exc:  # noqa: BLE001  every rank must reach the collective below, then re-raise
        ok, error = False, exc
    all_ok = group.all_ok(ok, dev)
    if error is not None:
        raise error
    if not all_ok:
        raise IncompleteOutputError(f"{output}: another rank failed; its shard stays beside {output} for --resume")
    if rank == 0:
        # Assembly is a block copy of finished shards: always done afresh, never resumed.
        partial = partial_path(output)
        partial.unlink(missing_ok=True)
        writer = create(partial)
        try:
            for r in range(world):
                r_lo, _ = _rank_range(len(rows), batch_size, r, world)
                with open_features(shard_path(output, r, world)) as source:
                    writer.copy_rows(source, r_lo)
        except BaseException:
            writer.close()
            raise
        _finish(writer, output)
        for r in range(world):
            shard_path(output, r, world).unlink(missing_ok=True)
    group.all_ok(True, dev)  # the others return only once the file is in place
    return encoded
