"""The IDX file format (MNIST's): parsing with full validation, and writing."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from halitool.errors import BadInputError

IDX_UBYTE = 0x08
IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """An unsigned-byte IDX payload as an array of the shape its header states; anything else is BadInputError."""
    if len(data) < 4:
        raise BadInputError(f"{name}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise BadInputError(f"{name}: not an IDX file (bad magic number {data[:4].hex()})")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != IDX_UBYTE:
        raise BadInputError(f"{name}: unsupported IDX element type 0x{dtype_code:02x} (only unsigned byte)")
    if ndim == 0:
        raise BadInputError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise BadInputError(f"{name}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) < expected:
        raise BadInputError(f"{name}: truncated: header {dims} needs {expected} bytes, file has {len(data)}")
    if len(data) > expected:
        raise BadInputError(f"{name}: {len(data) - expected} bytes beyond what header {dims} declares")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    """Read a plain or gzipped IDX file (gzip recognised by its magic bytes, whatever the name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise BadInputError(f"{path}: cannot read: {exc}") from None
    return parse_idx(raw, str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """An unsigned-byte array as IDX bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()
