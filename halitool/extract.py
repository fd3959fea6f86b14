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
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from rich.console import Console
from rich.progress import TextColumn

from halitool import __version__
from halitool.console import default_console, progress
from halitool.data import Dataset, open_dataset
from halitool.errors import BadInputError, IncompleteOutputError, UsageError
from halitool.features import FeaturesFile, FeaturesWriter, LevelLayout, open_features
from halitool.fileio import check_output_path
from halitool.models.hali import images_to_input, inference_copy
from halitool.runtime import command_line, library_versions, resolve_device

LATENTS = ("mean", "sample")
PRECISIONS = ("fp32", "bf16")
SPLIT_CHOICES = ("all", "train", "valid", "test")
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


@dataclass
class _Distributed:
    rank: int
    world: int
    created: bool  # whether we initialised the process group (and so must destroy it)

    def all_ok(self, ok: bool, device: torch.device) -> bool:
        """Every rank's ``ok`` reduced with AND (a collective: every rank must call it)."""
        import torch.distributed as dist

        flag = torch.tensor([0 if ok else 1], dtype=torch.int32, device=device)
        dist.all_reduce(flag)
        return int(flag.item()) == 0

    def close(self) -> None:
        import torch.distributed as dist

        if self.created and dist.is_initialized():
            dist.destroy_process_group()


def _distributed(device: torch.device) -> _Distributed | None:
    """The torchrun process group (gloo on CPU, NCCL on GPU), or None in a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    return _Distributed(rank=dist.get_rank(), world=dist.get_world_size(), created=created)


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
                 with_logvar: bool, precision: str, compile_model: bool = False, console: Console | None = None):
        # Encoders rewritten for inference (batch norm folded, in-place activations, channels-last): the same
        # latents up to float rounding, about 1.45x faster on a CPU (models/hali.py, inference_copy).
        self.model = inference_copy(model)
        self.device, self.levels = device, list(levels)
        self.latent, self.seed, self.with_logvar = latent, seed, with_logvar
        self.autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        )
        self.cuda = device.type == "cuda"
        self.console = console
        self.encode, self.encode_stats = self.model.encode, self.model.encode_stats
        self.compiled = False
        if compile_model:
            self.encode, self.encode_stats = torch.compile(self.model.encode), torch.compile(self.model.encode_stats)
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
            if not self.with_logvar:
                zs = self.encode(x, self.latent, self._generator(first_row))
                return {k: zs[k] for k in self.levels}, None
            stats = self.encode_stats(x, self.latent, self._generator(first_row))
            logvars = {k: stats[k][1] for k in self.levels}
            if self.latent == "mean":
                return {k: stats[k][0] for k in self.levels}, logvars
            # The same generator state again: encode draws the very samples whose statistics encode_stats saw.
            zs = self.encode(x, self.latent, self._generator(first_row))
            return {k: zs[k] for k in self.levels}, logvars

    def _forward_or_eager(self, x: torch.Tensor, first_row: int) -> tuple[dict, dict | None]:
        if not self.compiled:
            return self._forward(x, first_row)
        try:
            return self._forward(x, first_row)
        except Exception as exc:  # noqa: BLE001  a compiler missing or failing on this machine: run eagerly
            (self.console or default_console()).print(
                f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "encoding without it")
            self.encode, self.encode_stats = self.model.encode, self.model.encode_stats
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


def _open_or_create(path: Path, options: dict, create, *, resume: bool, force: bool, console: Console) -> FeaturesWriter:
    """The partial at ``path``: resumed (options must match), or created afresh."""
    if path.exists() and resume:
        try:
            writer = FeaturesWriter.reopen(path)
        except BadInputError as exc:
            console.print(f"{path}: unreadable partial ({exc}); starting again from scratch")
        else:
            recorded = FeaturesFile(writer.path, writer.h5).attrs
            diffs = _option_differences(recorded.get("extract_options") or {}, options)
            if diffs:
                writer.close()
                raise BadInputError(f"{path}: cannot resume: the partial was written with other settings: "
                                    + "; ".join(diffs) + " (pass --force instead of --resume to start over)")
            console.print(f"{path}: resuming at row {writer.rows_done:,} of {writer.n_samples:,}")
            return writer
    elif path.exists() and not force:
        raise IncompleteOutputError(f"{path}: a partial output of an interrupted run exists; pass --resume to "
                                    "finish it, or --force to start over")
    elif resume:
        console.print(f"{path}: no partial to resume; starting from scratch")
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
    console: Console | None = None,
) -> dict:
    """Encode every selected image of ``data_spec`` (a SPEC or a :class:`Dataset`) with ``checkpoint`` into ``output``.

    Returns the summary ``output``, ``n_samples``, ``levels`` {name: shape}, ``seconds``, ``images_per_second``
    (images encoded by this call), ``device``. Raises UsageError (bad options, existing output without
    ``force``, missing output folder, CUDA asked for but absent), BadInputError (missing or incompatible
    checkpoint or data, a resume whose partial differs) and IncompleteOutputError (a partial exists and neither
    ``resume`` nor ``force`` was given). Whatever happens, nothing but a complete file ever appears at ``output``.
    ``compile=True`` runs the encoder through ``torch.compile`` (worth it on GPUs for long runs; when compiling
    fails on this machine a console line says so and the run goes on without it).
    """
    from halitool.checkpoint import load_checkpoint

    console = console or default_console()
    t0 = time.perf_counter()
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
    output = Path(output)
    check_output_path(output, force)
    dev = resolve_device(device)

    loaded = load_checkpoint(checkpoint, dev)
    model = loaded.model.eval()
    ds = data_spec if isinstance(data_spec, Dataset) else open_dataset(str(data_spec))
    if tuple(ds.image_shape) != tuple(model.image_shape):
        raise BadInputError(f"{ds.root}: images are {tuple(ds.image_shape)} (C, H, W) but {loaded.path} expects "
                            f"{tuple(model.image_shape)} (architecture {loaded.config.arch!r})")
    if isinstance(levels, str):
        levels = [name.strip() for name in levels.split(",") if name.strip()]
    levels = list(levels or model.level_names)
    unknown = [name for name in levels if name not in model.level_names]
    if unknown or len(set(levels)) != len(levels):
        raise UsageError(f"--levels {','.join(levels)}: this model has levels {', '.join(model.level_names)} "
                         "(each at most once)")
    levels = [name for name in model.level_names if name in levels]  # always stored in level order
    rows = ds.indices(split)
    n = len(rows)

    options = {
        "checkpoint_sha256": loaded.sha256,
        "model_config": loaded.config.to_dict(),
        "dataset": ds.kind,
        "dataset_root": str(Path(ds.root).resolve()),
        "split": split,
        "n_rows": n,
        "rows_sha256": hashlib.sha256(ds.sample_ids[rows].tobytes() + ds.split[rows].tobytes()).hexdigest(),
        "levels": levels,
        "latent": latent,
        "seed": int(seed),
        "with_logvar": bool(with_logvar),
        "precision": precision,
        # Mean latents do not depend on how rows are batched; samples are drawn per batch.
        "batch_size": batch_size if latent == "sample" else None,
    }
    provenance = {
        "halitool_version": __version__,
        "checkpoint_sha256": loaded.sha256,
        "checkpoint_name": str(checkpoint),
        "checkpoint_path": str(loaded.path.resolve()),
        "model_config": loaded.config.to_dict(),
        "preprocessing": {"dataset": ds.preprocessing, "model": loaded.preprocessing},
        "dataset": ds.kind,
        "dataset_root": str(Path(ds.root).resolve()),
        "splits": {"selected": split, "rows": {name: int(c) for name, c in zip(("train", "valid", "test"),
                                                                                   np.bincount(ds.split[rows], minlength=3))}},
        "latent": latent,
        "seed": int(seed),
        "precision": precision,
        "batch_size": batch_size,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command_line() or shlex.join(sys.argv),
        "library_versions": library_versions(),
    }
    layouts = [LevelLayout(name, tuple(model.level_shapes[name])) for name in levels]

    def create(path: Path, lo: int = 0, hi: int = n, extra: dict | None = None) -> FeaturesWriter:
        sel = rows[lo:hi]
        whole = extra is None
        return FeaturesWriter.create(
            path, levels=layouts, split=ds.split[sel], sample_ids=ds.sample_ids[sel],
            provenance={**provenance, "extract_options": {**options, **(extra or {})}},
            with_logvar=with_logvar,
            filenames=[ds.filenames[i] for i in sel] if whole and ds.filenames is not None else None,
            labels=ds.labels[sel] if whole and ds.labels is not None else None,
            class_names=ds.class_names if whole else None,
            attributes=ds.attributes[sel] if whole and ds.attributes is not None else None,
            attribute_names=ds.attribute_names if whole else (),
        )

    if ds.image_cache is not None:  # check or build the decode-once cache now, not under the progress bar
        ds.image_cache.console = console
        ds.image_cache.open()
    encoder = _Encoder(model, dev, levels, latent, seed, with_logvar, precision, compile_model=compile,
                       console=console)
    dist_ctx = _distributed(dev)
    try:
        if dist_ctx is None:
            partial = partial_path(output)
            writer = _open_or_create(partial, options, create, resume=resume, force=force, console=console)
            encoded = _encode_into(writer, ds, rows, 0, encoder, batch_size, workers, console, show=True)
            _finish(writer, output)
        else:
            encoded = _extract_distributed(dist_ctx, output, options, create, ds, rows, encoder, batch_size,
                                           workers, resume, force, console, dev)
    finally:
        if dist_ctx is not None:
            dist_ctx.close()
    seconds = time.perf_counter() - t0
    return {
        "output": str(output),
        "n_samples": n,
        "levels": {name: list(model.level_shapes[name]) for name in levels},
        "seconds": seconds,
        "images_per_second": encoded / seconds if seconds > 0 else None,
        "device": str(dev),
    }


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
                 batch_size: int, workers: int, console: Console, show: bool) -> int:
    """Fill ``writer`` (rows ``offset:offset+len`` of ``rows``) from its ``rows_done`` on; returns rows encoded.

    The partial's progress is recorded and flushed every FLUSH_SECONDS at most, and at the end; on any exception
    (Ctrl-C included) it is recorded and the partial closed before the exception goes on.
    """
    n = writer.n_samples
    start = writer.rows_done
    bar = progress(console if show else Console(quiet=True), TextColumn("{task.fields[rate]} images/s"))
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
        bar.update(task, completed=done, rate=f"{(done - start) / (now - t0):,.0f}")

    try:
        with bar, _DeferredInterrupt() as interrupt:
            task = bar.add_task("extract", total=n, completed=start, rate="-")
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
        console.print(f"{writer.path}: {done:,} of {n:,} rows saved; run again with --resume to finish")
        raise
    return done - start


def _finish(writer: FeaturesWriter, output: Path) -> None:
    """Mark complete, flush, close, fsync, and rename onto ``output``."""
    path = writer.path
    writer.finish()
    writer.sync()
    os.replace(path, output)
    _fsync_dir(output.parent)


def _extract_distributed(dist_ctx: _Distributed, output: Path, options: dict, create, ds: Dataset, rows: np.ndarray,
                         encoder: _Encoder, batch_size: int, workers: int, resume: bool, force: bool,
                         console: Console, dev: torch.device) -> int:
    rank, world = dist_ctx.rank, dist_ctx.world
    lo, hi = _rank_range(len(rows), batch_size, rank, world)
    shard = shard_path(output, rank, world)
    extra = {"world_size": world, "shard_rows": [lo, hi]}
    ok, encoded, error = True, 0, None
    try:
        writer = _open_or_create(shard, {**options, **extra}, lambda p: create(p, lo, hi, extra),
                                 resume=resume, force=force, console=console)
        encoded = _encode_into(writer, ds, rows, lo, encoder, batch_size, workers, console, show=rank == 0)
        writer.finish()
        writer.sync()
    except Exception as exc:  # noqa: BLE001  every rank must reach the collective below, then re-raise
        ok, error = False, exc
    all_ok = dist_ctx.all_ok(ok, dev)
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
    dist_ctx.all_ok(True, dev)  # the others return only once the file is in place
    return encoded
