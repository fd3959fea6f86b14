"""Facts about the running process that several commands record or act on: the device to compute on, the
library versions and the command line (provenance)."""

from __future__ import annotations

import contextlib
import platform
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from halitool import settings
from halitool.choices import DEVICES
from halitool.errors import UsageError

if TYPE_CHECKING:  # torch loads where a device is resolved or described, not with the CLI's start-up
    import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU; ``cuda`` without CUDA is a UsageError.

    Under torchrun each process takes the GPU of its LOCAL_RANK.
    """
    if name not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}, not {name!r}")
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    if name == "cuda":
        return torch.device("cuda", settings.torchrun().local_rank)
    return torch.device(name)


def library_versions() -> dict[str, str]:
    """halitool and the libraries whose behaviour its results depend on."""
    from importlib.metadata import version

    import h5py
    import numpy as np
    import torch

    from halitool import __version__

    cuda = torch.version.cuda or "none"
    if torch.cuda.is_available():
        cuda += f" ({torch.cuda.get_device_name(0)})"
    return {
        "halitool": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": cuda,
        "numpy": np.__version__,
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
        # From the installed package's metadata: importing scikit-learn costs about a second, and extract
        # records these versions in every file without needing scikit-learn itself.
        "scikit-learn": version("scikit-learn"),
    }


def command_line() -> str | None:
    """The command as typed, when this process is ``halitool``, ``python -m halitool`` or torchrun of it."""
    argv0 = Path(sys.argv[0]) if sys.argv else Path()
    if argv0.name == "halitool" or argv0.parts[-2:] == ("halitool", "__main__.py"):
        return shlex.join(["halitool", *sys.argv[1:]])
    return None


def hardware(device: torch.device) -> str:
    """The processor or GPU that computes, for provenance and benchmark records."""
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {torch.get_num_threads()} torch threads"
