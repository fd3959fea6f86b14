"""Benchmark of ``halitool extract`` against a naive baseline, and against the machine's own limit.

In one process: halitool's path end to end (reading IDX, encoding in batches, one HDF5 slab per batch; the best
of ``--repeats`` runs, every run listed) and a naive baseline on the same images (batch of one, one HDF5 write
per row); the FLOP/s of a large float32 matrix product on the same device; the encoder's FLOPs per image
counted with FlopCounterMode. Peak memory of extraction is measured in child processes for two data sizes (peak
RSS growth from the moment the data set is open: model, batches, HDF5 buffers; the IDX reader itself holds the
images in memory, 784 bytes each).

``--celeba-synthetic N`` benchmarks CelebA-shaped extraction from the decode-once cache instead: N synthetic
64x64 RGB images are written through halitool's own cache builder (halitool.data.cache) and extracted with a
celeba64 model; the cache build rate is reported too.

Each result states its limits (benchmarks/limits.py): ``compute_limit_images_per_second`` (matmul peak / encoder
FLOPs per image), ``memory_limit_images_per_second`` (copy bandwidth / bytes moved per image: the uint8 input
and the float32 features out) and, from the cache, ``read_limit_images_per_second`` (file read rate / input
bytes); ``fraction_of_limit`` is the measured rate over the smallest of them.

Prints one JSON line. Usage: python benchmarks/extract.py [--quick] [--checkpoint NAME_OR_PATH] [--data SPEC]
       python benchmarks/extract.py --celeba-synthetic 20000 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from halitool.checkpoint import PRETRAINED_DIR, load_checkpoint, save_checkpoint
from halitool.data import open_dataset
from halitool.data.idx import encode_idx
from halitool.data.base import Dataset
from halitool.data.cache import ImageCache
from halitool.extract import extract_features, resolve_device
from halitool.models import ModelConfig, build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from limits import file_read_rate, host_to_device_rate, machine, matmul_flops, memory_bandwidth  # noqa: E402


def pick_checkpoint(name: str | None, folder: Path, arch: str = "mnist") -> tuple[str, str]:
    """(checkpoint path or name, what it is): the shipped hali-<data> model, else a freshly initialised one."""
    if name:
        return name, name
    shipped = "hali-mnist" if arch == "mnist" else "hali-celeba"
    if (PRETRAINED_DIR / f"{shipped}.safetensors").is_file():
        return shipped, f"{shipped} (pretrained)"
    torch.manual_seed(0)
    path = save_checkpoint(folder / f"fresh-{arch}.safetensors", build_model(ModelConfig(arch=arch)),
                           preprocessing={}, training={}, metrics={})
    return str(path), f"freshly initialised {arch} architecture (no pretrained/{shipped}.safetensors)"


def synthetic_celeba(n: int, folder: Path) -> tuple[Dataset, float]:
    """A CelebA-shaped data set of ``n`` smooth random 64x64 RGB images served by a real halitool image cache,
    and the rate (images/s) at which the cache was built (threads writing into the memory map)."""
    def decode(indices: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(int(indices[0]))
        coarse = rng.integers(0, 256, (len(indices), 3, 8, 8), dtype=np.uint8)
        return np.ascontiguousarray(coarse.repeat(8, axis=2).repeat(8, axis=3))

    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    cache = ImageCache("celeba-synthetic", folder, [str(folder / m) for m in names], (3, 64, 64),
                       {"synthetic": True}, decode, folder=folder / "cache")
    t0 = time.perf_counter()
    cache.open()
    build_rate = n / (time.perf_counter() - t0)
    split = np.zeros(n, np.int8)
    ds = Dataset(kind="celeba-synthetic", root=folder, image_shape=(3, 64, 64), split=split,
                 sample_ids=np.arange(1, n + 1), loader=cache.load, filenames=names, image_cache=cache)
    return ds, build_rate


def write_subset(source: str, n: int, folder: Path) -> str:
    """The first n rows of ``source`` (train first, then test, as the reader orders them) as IDX files."""
    ds = open_dataset(source)
    n = min(n, len(ds))
    rows = np.arange(n)
    images, labels, split = ds.images(rows)[:, 0], ds.labels[rows].astype(np.uint8), ds.split[rows]
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, mask in (("train", split == 0), ("t10k", split == 2)):
        if not mask.any():  # the reader needs both files; one test row keeps the subset valid
            mask = np.zeros(n, bool)
            mask[-1] = True
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(encode_idx(images[mask]))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(encode_idx(labels[mask]))
    return f"mnist:{folder}"


def encoder_flops(checkpoint: str, device: torch.device) -> float:
    loaded = load_checkpoint(checkpoint, device)
    x = torch.rand(64, *loaded.model.image_shape, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        loaded.model.encode(x, "mean")
    return counter.get_total_flops() / 64


def naive(checkpoint: str, spec, out: Path, n: int, device: torch.device) -> float:
    """images/s of the naive path: batch of one, one HDF5 write per row (same data, same model)."""
    t0 = time.perf_counter()
    ds = spec if isinstance(spec, Dataset) else open_dataset(spec)
    model = load_checkpoint(checkpoint, device).model
    n = min(n, len(ds))
    with h5py.File(out, "w") as h5:
        sets = {name: h5.create_dataset(name, shape=(n, int(np.prod(shape))), dtype=np.float32)
                for name, shape in model.level_shapes.items()}
        with torch.inference_mode():
            for i in range(n):
                x = torch.from_numpy(ds.images([i])).to(device).float() / 255
                zs = model.encode(x, "mean")
                for name, z in zs.items():
                    sets[name][i] = z.reshape(-1).cpu().numpy()
    return n / (time.perf_counter() - t0)


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def memory_child(checkpoint: str, spec: str, out: str, batch_size: int, device: str) -> None:
    """Run in a child process: peak RSS growth (MiB) of extraction once the data set is open."""
    ds = open_dataset(spec)
    load_checkpoint(checkpoint, device)  # imports and first-load costs are not extraction's
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak) to the current RSS
        reset = True
    except OSError:
        reset = False
    base = _status_kib("VmRSS")
    extract_features(checkpoint, ds, out, batch_size=batch_size, device=device, force=True)
    peak = _status_kib("VmHWM")
    print(json.dumps({"rss_growth_mib": (peak - base) / 1024, "peak_reset": reset, "rows": len(ds)}))


def measure_memory(checkpoint: str, spec: str, out: Path, batch_size: int, device: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-child", checkpoint, spec, str(out), str(batch_size), device],
        capture_output=True, text=True, check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def limits(device: torch.device, flops: float, bytes_in: int, bytes_out: int, cache_folder: Path | None) -> dict:
    """The machine's limits in images/s for an encoder of ``flops`` per image moving these bytes per image."""
    peak, bandwidth = matmul_flops(device), memory_bandwidth(device)
    out = {"matmul_flops_per_second": peak, "memory_bytes_per_second": bandwidth,
           "compute_limit_images_per_second": peak / flops,
           "memory_limit_images_per_second": bandwidth / (bytes_in + bytes_out)}
    h2d = host_to_device_rate(device)
    if h2d is not None:
        out["host_to_device_bytes_per_second"] = h2d
        out["transfer_limit_images_per_second"] = h2d / bytes_in
    if cache_folder is not None:
        read = file_read_rate(str(cache_folder))
        out["file_read_bytes_per_second"] = read
        out["read_limit_images_per_second"] = read / bytes_in
    return out


def run(argv: list[str] | None = None) -> dict:
    """Run the benchmark with command-line ``argv``; the result document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer images (about a minute on two cores).")
    parser.add_argument("--checkpoint", default=None, help="Path or shipped name [default: hali-mnist if shipped].")
    parser.add_argument("--data", default="mnist", help="An mnist:DIR SPEC with the images [default: mnist].")
    parser.add_argument("--celeba-synthetic", type=int, default=0, metavar="N",
                        help="Extract N synthetic CelebA-shaped images from the image cache instead of MNIST.")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="Images per batch [default: 1024, faster than 256 on CPU for MNIST-size models].")
    parser.add_argument("--workers", type=int, default=0, help="Loading threads [default: 0].")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="Encode through torch.compile.")
    parser.add_argument("--no-memory", action="store_true", help="Skip the peak-memory child processes.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3,
                        help="End-to-end halitool runs; the best is reported, all are listed [default: 3].")
    args = parser.parse_args(argv)

    n_fast, n_naive, mem_sizes = (10_000, 500, (2_000, 20_000)) if args.quick else (70_000, 2_000, (10_000, 70_000))
    device = resolve_device(args.device)
    options = dict(batch_size=args.batch_size, device=str(device), workers=args.workers, precision=args.precision,
                   compile=args.compile)
    memory = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.celeba_synthetic:
            checkpoint, checkpoint_note = pick_checkpoint(args.checkpoint, tmp, arch="celeba64")
            data, cache_build_rate = synthetic_celeba(args.celeba_synthetic, tmp)
            what = f"{args.celeba_synthetic} synthetic CelebA-shaped 64x64 images from the image cache"
            warm = Dataset(kind=data.kind, root=data.root, image_shape=data.image_shape,
                           split=data.split[: min(2048, len(data))], sample_ids=data.sample_ids[: min(2048, len(data))],
                           loader=data.loader)
        else:
            checkpoint, checkpoint_note = pick_checkpoint(args.checkpoint, tmp)
            data = write_subset(args.data, n_fast, tmp / "data")
            what, cache_build_rate = f"MNIST from IDX files ({args.data})", None
            warm = data
        # warm-up (MNIST: its test rows): libraries, allocator, kernels, compilation
        extract_features(checkpoint, warm, tmp / "warm.h5", split="all" if args.celeba_synthetic else "test", **options)
        # Best of REPEATS end-to-end runs, as the matmul peak is the best of its timings: both then measure
        # what the machine can do, not what another process took from it at that moment.
        runs = []
        for _ in range(args.repeats):  # a new output each time: replacing a file would time its deletion too
            summary = extract_features(checkpoint, data, tmp / "fast.h5", **options)
            runs.append(summary["n_samples"] / summary["seconds"])
            (tmp / "fast.h5").unlink()
        fast_rate = max(runs)
        n_naive = min(n_naive, summary["n_samples"])
        naive_rate = naive(checkpoint, data, tmp / "naive.h5", n_naive, device)
        flops = encoder_flops(checkpoint, device)
        model = load_checkpoint(checkpoint, "cpu").model
        bytes_in = int(np.prod(model.image_shape))
        bytes_out = 4 * sum(int(np.prod(shape)) for shape in model.level_shapes.values())
        limit = limits(device, flops, bytes_in, bytes_out, tmp if args.celeba_synthetic else None)
        if not args.celeba_synthetic and not args.no_memory:
            for n in mem_sizes:
                mem_spec = write_subset(args.data, n, tmp / f"mem{n}")
                memory[str(n)] = measure_memory(checkpoint, mem_spec, tmp / f"mem{n}.h5", args.batch_size, str(device))
    binding = min(v for k, v in limit.items() if k.endswith("_limit_images_per_second"))
    result = {
        "benchmark": "extract",
        "quick": args.quick,
        "data": what,
        "checkpoint": checkpoint_note,
        **machine(device),
        "batch_size": args.batch_size,
        "workers": args.workers,
        "precision": args.precision,
        "compile": args.compile,
        "images": summary["n_samples"],
        "halitool_images_per_second": fast_rate,
        "halitool_images_per_second_runs": runs,
        "naive_images": n_naive,
        "naive_images_per_second": naive_rate,
        "speedup": fast_rate / naive_rate,
        "flops_per_image": flops,
        "bytes_per_image": {"in": bytes_in, "out": bytes_out},
        **limit,
        "fraction_of_peak": fast_rate * flops / limit["matmul_flops_per_second"],
        "limit_images_per_second": binding,
        "fraction_of_limit": fast_rate / binding,
    }
    if cache_build_rate is not None:
        result["cache_build_images_per_second"] = cache_build_rate
    if memory:
        result["peak_memory_mib"] = {n: round(m["rss_growth_mib"], 1) for n, m in memory.items()}
        result["peak_memory_reset"] = all(m["peak_reset"] for m in memory.values())
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        checkpoint, spec, out, batch_size, device = sys.argv[2:7]
        memory_child(checkpoint, spec, out, int(batch_size), device)
        return
    print(json.dumps(run()))


if __name__ == "__main__":
    main()
