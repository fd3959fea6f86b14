"""Benchmark of ``halitool extract`` against a naive baseline, and against the machine's own limit.

In one process: halitool's path end to end (reading IDX, encoding in batches, one HDF5 slab per batch) and a
naive baseline on the same images (batch of one, one HDF5 write per row); the FLOP/s of a large float32 matrix
product on the same device; the encoder's FLOPs per image counted with FlopCounterMode. Peak memory of
extraction is measured in child processes for two data sizes (peak RSS growth from the moment the data set is
open: model, batches, HDF5 buffers; the IDX reader itself holds the images in memory, 784 bytes each).

Prints one JSON line. Usage: python benchmarks/extract.py [--quick] [--checkpoint NAME_OR_PATH] [--data SPEC]
"""

from __future__ import annotations

import argparse
import json
import os
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
from halitool.extract import extract_features, resolve_device
from halitool.models import ModelConfig, build_model


def pick_checkpoint(name: str | None, folder: Path) -> tuple[str, str]:
    """(checkpoint path or name, what it is): hali-mnist when shipped, else a freshly initialised mnist model."""
    if name:
        return name, name
    if (PRETRAINED_DIR / "hali-mnist.safetensors").is_file():
        return "hali-mnist", "hali-mnist (pretrained)"
    torch.manual_seed(0)
    path = save_checkpoint(folder / "fresh-mnist.safetensors", build_model(ModelConfig(arch="mnist")),
                           preprocessing={}, training={}, metrics={})
    return str(path), "freshly initialised mnist architecture (no pretrained/hali-mnist.safetensors)"


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


def matmul_flops(device: torch.device, n: int = 2048, seconds: float = 2.0) -> float:
    """Sustained FLOP/s of an n x n float32 matrix product (best of repeated timings)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def encoder_flops(checkpoint: str, device: torch.device) -> float:
    loaded = load_checkpoint(checkpoint, device)
    x = torch.rand(64, *loaded.model.image_shape, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        loaded.model.encode(x, "mean")
    return counter.get_total_flops() / 64


def naive(checkpoint: str, spec: str, out: Path, n: int, device: torch.device) -> float:
    """images/s of the naive path: batch of one, one HDF5 write per row (same data, same model)."""
    t0 = time.perf_counter()
    ds = open_dataset(spec)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer images (about a minute on two cores).")
    parser.add_argument("--checkpoint", default=None, help="Path or shipped name [default: hali-mnist if shipped].")
    parser.add_argument("--data", default="mnist", help="An mnist:DIR SPEC with the images [default: mnist].")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="Images per batch [default: 1024, faster than 256 on CPU for MNIST-size models].")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        checkpoint, spec, out, batch_size, device = args.memory_child
        memory_child(checkpoint, spec, out, int(batch_size), device)
        return

    n_fast, n_naive, mem_sizes = (10_000, 500, (2_000, 20_000)) if args.quick else (70_000, 2_000, (10_000, 70_000))
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint, checkpoint_note = pick_checkpoint(args.checkpoint, tmp)
        spec = write_subset(args.data, n_fast, tmp / "data")
        extract_features(checkpoint, spec, tmp / "warm.h5", split="test", batch_size=args.batch_size,
                         device=str(device))  # warm-up: library loading, allocator, kernels
        summary = extract_features(checkpoint, spec, tmp / "fast.h5", batch_size=args.batch_size,
                                   device=str(device))
        fast_rate = summary["n_samples"] / summary["seconds"]
        naive_rate = naive(checkpoint, spec, tmp / "naive.h5", n_naive, device)
        flops = encoder_flops(checkpoint, device)
        peak = matmul_flops(device)
        memory = {}
        for n in mem_sizes:
            mem_spec = write_subset(args.data, n, tmp / f"mem{n}")
            memory[str(n)] = measure_memory(checkpoint, mem_spec, tmp / f"mem{n}.h5", args.batch_size, str(device))
    result = {
        "benchmark": "extract",
        "quick": args.quick,
        "checkpoint": checkpoint_note,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "batch_size": args.batch_size,
        "images": summary["n_samples"],
        "halitool_images_per_second": fast_rate,
        "naive_images": n_naive,
        "naive_images_per_second": naive_rate,
        "speedup": fast_rate / naive_rate,
        "flops_per_image": flops,
        "matmul_flops_per_second": peak,
        "fraction_of_peak": fast_rate * flops / peak,
        "peak_memory_mib": {n: round(m["rss_growth_mib"], 1) for n, m in memory.items()},
        "peak_memory_reset": all(m["peak_reset"] for m in memory.values()),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
