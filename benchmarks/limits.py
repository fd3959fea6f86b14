"""What the machine itself allows, measured in-process: the limits every benchmark states beside its numbers.

- ``matmul_flops``: sustained FLOP/s of a large float32 matrix product (the compute peak a model can reach);
- ``memory_bandwidth``: bytes/s of a large copy (each byte read once and written once);
- ``file_read_rate``: bytes/s of reading a freshly written file in 8 MiB blocks. The file is still in the page
  cache, so this is the best case of a warm cache file; a cold read from disk is slower.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, n: int = 2048, seconds: float = 2.0) -> float:
    """Sustained FLOP/s of an n x n float32 matrix product (best of repeated timings)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        _sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def memory_bandwidth(device: torch.device, mib: int = 256, repeats: int = 5) -> float:
    """Bytes/s moved by copying a ``mib`` MiB buffer on ``device`` (read + write counted), best of ``repeats``."""
    src = torch.empty(mib << 20, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    best = 0.0
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = max(best, 2 * src.numel() / (time.perf_counter() - t0))
    return best


def host_to_device_rate(device: torch.device, mib: int = 256) -> float | None:
    """Bytes/s of a pinned host -> GPU copy (None on the CPU, where there is no such copy)."""
    if device.type != "cuda":
        return None
    src = torch.empty(mib << 20, dtype=torch.uint8, pin_memory=True)
    dst = torch.empty(src.shape, dtype=torch.uint8, device=device)
    best = 0.0
    for _ in range(5):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize(device)
        best = max(best, src.numel() / (time.perf_counter() - t0))
    return best


def file_read_rate(folder: str | None = None, mib: int = 256) -> float:
    """Bytes/s of reading back a just-written ``mib`` MiB file (page cache warm: an upper bound)."""
    block = np.random.default_rng(0).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    with tempfile.NamedTemporaryFile(dir=folder, delete=False) as f:
        for _ in range(mib // 8):
            f.write(block)
        path = f.name
    try:
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            with open(path, "rb", buffering=0) as f:
                while f.read(8 << 20):
                    pass
            best = max(best, (mib << 20) / (time.perf_counter() - t0))
        return best
    finally:
        os.unlink(path)


def machine(device: torch.device) -> dict:
    """Machine, device, load and the measured limits, for the record."""
    from halitool.runtime import hardware

    return {"hardware": hardware(device), "device": str(device), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2)}
