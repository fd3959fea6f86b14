"""The one safetensors file layer: tensors plus string metadata, written atomically, read with one kind of error.

Three halitool formats are safetensors files: the checkpoint (:mod:`halitool.checkpoint`), the training state
(:mod:`halitool.training_state`) and the cached reference classifier (:mod:`halitool.reference`). They differ in
their metadata, not in how the bytes are written and read, which is here. safetensors holds only tensors and
strings, so reading a file never runs code (unlike a pickle).
"""

from __future__ import annotations

from pathlib import Path

import torch

from halitool.errors import BadInputError
from halitool.fileio import atomic_write_bytes


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *,
                  check: bool = False, force: bool = False) -> Path:
    """Write ``tensors`` (copied to the CPU, contiguous) and ``metadata`` to ``path`` atomically.

    The bytes go into a prepared temporary file beside ``path`` (so the file gets the user's usual mode, which
    safetensors' own ``save_file`` would not give it) and replace ``path`` in one rename. ``check``: refuse an
    existing ``path`` unless ``force``.
    """
    from safetensors.torch import save

    cpu = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}
    atomic_write_bytes(Path(path), save(cpu, metadata=metadata), force=force, check=check)
    return Path(path)


def read_metadata(path: Path, what: str = "safetensors file") -> dict[str, str]:
    """The string metadata of a safetensors file (the header alone: no tensor is read)."""
    return _open(path, what, tensors=False)[0]


def read_tensors(path: Path, what: str = "safetensors file") -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors on the CPU) of a safetensors file; a missing, corrupt or truncated file is a
    BadInputError (exit 3) naming ``path`` and ``what`` it should have been."""
    return _open(path, what, tensors=True)


def _open(path: Path, what: str, tensors: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            values = {name: f.get_tensor(name) for name in f.keys()} if tensors else {}
    except FileNotFoundError:
        raise BadInputError(f"{path}: {what} not found") from None
    except Exception as exc:  # noqa: BLE001  safetensors raises several types for corrupt or truncated files
        raise BadInputError(f"{path}: not a readable {what} (corrupt or truncated?): {exc}") from None
    return metadata, values
