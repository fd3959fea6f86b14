"""The reference classifier that judges whether a reconstruction keeps its input's class.

A small CNN (two 3x3 convolutions of 16 and 32 channels, each followed by ReLU and 2x2 max pooling, then a
128-unit hidden layer and one logit per class), trained with Adam on the data set's REAL training split only
(never the test split, never generated images), no augmentation, from a fixed seed. See docs/fidelity.md.

The weights are cached as safetensors (never a pickle) under ``data_home()/reference/<key>.safetensors``, where
the key joins the data set kind, the SHA-256 of the training images and labels, the training settings and
:data:`VERSION`. A cached file whose header, shapes or tensor digest do not match is treated as corrupt:
the classifier is retrained and the file replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from halitool.progress import SILENT, Progress
from halitool.tensorfile import read_tensors, write_tensors
from halitool.data import Dataset, data_home
from halitool.models import images_to_input
from halitool.errors import BadInputError

log = logging.getLogger(__name__)

FORMAT = "halitool-reference"
VERSION = 1  # bump when the network or the training procedure changes: old cache files are then ignored


@dataclass(frozen=True)
class ReferenceSettings:
    """How the reference classifier is trained: Adam at ``lr``, decayed linearly to 0 over the run.
    ``max_steps`` caps the run (tests use a few steps)."""

    epochs: int = 2
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    max_steps: int | None = None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


DEFAULT_SETTINGS = ReferenceSettings()


class ReferenceNet(nn.Module):
    """conv3x3(16) ReLU maxpool2, conv3x3(32) ReLU maxpool2, linear(128) ReLU, linear(n_classes); input in [0, 1]."""

    def __init__(self, image_shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        c, h, w = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(32 * (h // 4) * (w // 4), 128), nn.ReLU(), nn.Linear(128, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@dataclass
class ReferenceClassifier:
    """A trained reference network in eval mode, and where it came from."""

    net: ReferenceNet
    key: str
    path: Path
    settings: ReferenceSettings
    n_classes: int
    trained_now: bool  # False when loaded from the cache
    train_seconds: float  # of the run that produced the weights (recorded in the cache file)
    n_train: int

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The predicted class [n] (int64) of float images ``x`` in [0, 1], shape [n, C, H, W]."""
        device = next(self.net.parameters()).device
        return self.net(x.to(device=device, dtype=torch.float32)).argmax(dim=1)

    def describe(self) -> dict:
        return {"key": self.key, "path": str(self.path), "version": VERSION,
                "settings": dataclasses.asdict(self.settings), "n_train": self.n_train,
                "trained_now": self.trained_now, "train_seconds": round(self.train_seconds, 3)}


def training_digest(ds: Dataset, batch_size: int = 4096) -> str:
    """SHA-256 of the training split's images (uint8, in data-set order), then its labels (int64)."""
    h = hashlib.sha256()
    idx = ds.indices("train")
    h.update(json.dumps([ds.kind, list(ds.image_shape), int(len(idx))]).encode())
    for _, images in ds.iter_batches(idx, batch_size):
        h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(ds.labels[idx]).tobytes())
    return h.hexdigest()


def cache_key(ds: Dataset, settings: ReferenceSettings) -> str:
    """``<kind>-<training data digest>-<settings digest>-v<VERSION>``."""
    return f"{ds.kind}-{training_digest(ds)[:16]}-{settings.digest()}-v{VERSION}"


def _tensor_digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _n_classes(ds: Dataset) -> int:
    return len(ds.class_names) if ds.class_names else int(ds.labels.max()) + 1


def train_reference(ds: Dataset, settings: ReferenceSettings = DEFAULT_SETTINGS, device: str | torch.device = "cpu",
                    progress: Progress = SILENT) -> tuple[ReferenceNet, float]:
    """Train a fresh :class:`ReferenceNet` on the training split of ``ds``; returns (net in eval mode, seconds)."""
    idx = ds.indices("train")
    if ds.labels is None:
        raise BadInputError(f"{ds.spec}: the data set has no class labels; a reference classifier needs them")
    if len(idx) == 0:
        raise BadInputError(f"{ds.spec}: the data set has no training images for the reference classifier")
    start = time.perf_counter()
    images = torch.from_numpy(ds.images(idx))  # uint8: 47 MB for MNIST, converted per batch
    labels = torch.from_numpy(ds.labels[idx])
    gen = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        net = ReferenceNet(tuple(ds.image_shape), _n_classes(ds))
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    batch = min(settings.batch_size, len(idx))
    per_epoch = math.ceil(len(idx) / batch)
    total = settings.epochs * per_epoch
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / total)
    with progress.task("reference classifier", total=total) as task, \
            torch.enable_grad():  # callers may be inside torch.no_grad()
        step = 0
        while step < total:
            order = torch.randperm(len(idx), generator=gen)
            for start_row in range(0, len(idx), batch):
                if step >= total:
                    break
                rows = order[start_row: start_row + batch]
                x = images_to_input(images[rows], device)
                loss = F.cross_entropy(net(x), labels[rows].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                step += 1
                task.advance(1)
    net.eval()
    return net, time.perf_counter() - start


def _load_cached(path: Path, key: str, ds: Dataset, device) -> tuple[ReferenceNet, dict] | None:
    """The cached net, or None when the file is missing or does not check out (then it is retrained)."""
    if not path.is_file():
        return None
    try:
        meta, tensors = read_tensors(path, "reference classifier")
        if meta.get("format") != FORMAT or meta.get("key") != key:
            return None
        if meta.get("tensors_sha256") != _tensor_digest(tensors):
            return None
        net = ReferenceNet(tuple(ds.image_shape), _n_classes(ds))
        net.load_state_dict(tensors, strict=True)
        return net.to(device).eval(), meta
    except Exception:  # noqa: BLE001  any unreadable or mismatching file is a cache miss, never a crash
        return None


def reference_classifier(ds: Dataset, *, settings: ReferenceSettings | None = None,
                         device: str | torch.device = "cpu", cache_dir: Path | None = None,
                         progress: Progress = SILENT) -> ReferenceClassifier:
    """The reference classifier for ``ds``: from the cache when a valid file is there, else trained and cached.

    ``settings`` defaults to :data:`DEFAULT_SETTINGS` (looked up at call time); ``cache_dir`` to
    ``data_home()/reference``. Raises BadInputError when the data set has no class labels.
    """
    settings = settings or DEFAULT_SETTINGS
    if ds.labels is None:
        raise BadInputError(f"{ds.spec}: the data set has no class labels; a reference classifier needs them")
    key = cache_key(ds, settings)
    path = Path(cache_dir or data_home() / "reference") / f"{key}.safetensors"
    n_train = int(len(ds.indices("train")))
    cached = _load_cached(path, key, ds, device)
    if cached is not None:
        net, meta = cached
        return ReferenceClassifier(net, key, path, settings, _n_classes(ds), False,
                                   float(meta.get("train_seconds", "nan")), n_train)
    if path.exists():
        log.warning(f"{path}: cached reference classifier is unreadable or does not match; retraining")
    else:
        log.info(f"training the reference classifier on the {n_train:,} training images of {ds.spec}")
    net, seconds = train_reference(ds, settings, device, progress)
    tensors = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in net.state_dict().items()}
    meta = {"format": FORMAT, "version": str(VERSION), "key": key, "data": ds.spec,
            "settings": json.dumps(dataclasses.asdict(settings)), "n_train": str(n_train),
            "train_seconds": f"{seconds:.3f}", "tensors_sha256": _tensor_digest(tensors)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tensors(path, tensors, meta)
    return ReferenceClassifier(net, key, path, settings, _n_classes(ds), True, seconds, n_train)


@torch.no_grad()
def accuracy(classifier: ReferenceClassifier, ds: Dataset, idx: np.ndarray, batch_size: int = 1000) -> float:
    """Fraction of the real images ``idx`` of ``ds`` that the classifier assigns to their true class."""
    correct = 0
    for rows, images in ds.iter_batches(idx, batch_size):
        x = images_to_input(images)
        correct += int((classifier.predict(x).cpu() == torch.from_numpy(ds.labels[rows])).sum())
    return correct / max(1, len(idx))
