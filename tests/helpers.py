"""Plain helper functions shared by the tests (fixtures live in conftest.py and use these).

Tests import them with ``from helpers import ...`` (pytest puts ``tests/`` on sys.path: it holds the rootdir
conftest.py, and ``tests/reliability`` is a package whose base folder is ``tests/``).

- Writers of small data sets in the exact on-disk layouts the readers expect (CelebA, image folders, MNIST's
  IDX files). Their content is known: tests recompute it from the same seed with :func:`celeba_truth` /
  :func:`folder_truth` and compare what the readers return.
- :func:`write_tiny_checkpoint`, :func:`run_cli` (the real entry point, in-process) and :func:`record_reads`.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from halitool.data.idx import encode_idx

# CelebA's 40 attributes in the official order (list_attr_celeba.txt), written independently of the reader.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
CELEBA_SIZE = (178, 218)  # width, height of the aligned images
# The default 140-pixel centre crop of a 178x218 image: columns 19..158, rows 39..178.
CROP_BOX = (19, 39, 159, 179)
MALE_RED, FEMALE_RED = 200, 50
SMILING_GREEN, NOT_SMILING_GREEN = 220, 20


@dataclass
class CelebaTruth:
    names: list[str]
    attributes: np.ndarray  # int8 [n, 40] 0/1
    split: np.ndarray  # int8 [n]


def celeba_truth(n: int, seed: int = 0) -> CelebaTruth:
    """What :func:`write_celeba` writes for ``n`` and ``seed``: random attributes, contiguous 60/20/20 splits."""
    rng = np.random.default_rng(seed)
    attributes = (rng.random((n, len(CELEBA_ATTRIBUTES))) < 0.4).astype(np.int8)
    n_train, n_valid = int(round(n * 0.6)), int(round(n * 0.2))
    split = np.array([0] * n_train + [1] * n_valid + [2] * (n - n_train - n_valid), dtype=np.int8)
    return CelebaTruth([f"{i:06d}.jpg" for i in range(1, n + 1)], attributes, split)


def celeba_image(attributes: np.ndarray) -> Image.Image:
    """A 178x218 RGB face stand-in: blue only outside the default crop; red inside it says Male; a green
    centre square says Smiling."""
    width, height = CELEBA_SIZE
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 2] = 255
    left, top, right, bottom = CROP_BOX
    male = attributes[CELEBA_ATTRIBUTES.index("Male")]
    smiling = attributes[CELEBA_ATTRIBUTES.index("Smiling")]
    pixels[top:bottom, left:right] = (MALE_RED if male else FEMALE_RED, 0, 0)
    cx, cy = width // 2, height // 2
    pixels[cy - 25 : cy + 25, cx - 25 : cx + 25, 1] = SMILING_GREEN if smiling else NOT_SMILING_GREEN
    return Image.fromarray(pixels, "RGB")


def _attr_value(v: int) -> str:
    return " 1" if v else "-1"


def write_celeba(root: Path, n: int = 10, variant: str = "txt", seed: int = 0) -> Path:
    """A CelebA tree of real JPEGs: ``variant="txt"`` is the official layout, ``"csv"`` the redistribution."""
    truth = celeba_truth(n, seed)
    root = Path(root)
    image_dir = root / "img_align_celeba" / ("img_align_celeba" if variant == "csv" else "")
    image_dir.mkdir(parents=True, exist_ok=True)
    for name, row in zip(truth.names, truth.attributes):
        celeba_image(row).save(image_dir / name, quality=95)
    if variant == "txt":
        # As in the real file: a count line, names with a trailing space, values padded to width 2 so that
        # rows are separated by runs of spaces.
        lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
        lines += [name + " " + " ".join(_attr_value(v) for v in row) for name, row in zip(truth.names, truth.attributes)]
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        partition = [f"{name} {s}" for name, s in zip(truth.names, truth.split)]
        (root / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    elif variant == "csv":
        lines = ["image_id," + ",".join(CELEBA_ATTRIBUTES)]
        lines += [name + "," + ",".join("1" if v else "-1" for v in row) for name, row in zip(truth.names, truth.attributes)]
        (root / "list_attr_celeba.csv").write_text("\n".join(lines) + "\n")
        partition = ["image_id,partition"] + [f"{name},{s}" for name, s in zip(truth.names, truth.split)]
        (root / "list_eval_partition.csv").write_text("\n".join(partition) + "\n")
    else:
        raise ValueError(f"unknown CelebA variant {variant!r}")
    return root


@dataclass
class FolderTruth:
    names: list[str]  # sorted, as the reader lists them
    colours: np.ndarray  # uint8 [n, 3] the solid colour of each image
    attributes: np.ndarray  # int8 [n, 2] columns bright, reddish
    split: np.ndarray  # int8 [n]


FOLDER_SUFFIXES = (".png", ".bmp", ".png", ".webp")  # lossless formats: pixel values survive exactly


def folder_truth(n: int, seed: int = 0) -> FolderTruth:
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    names = sorted(f"img_{i:03d}{FOLDER_SUFFIXES[i % len(FOLDER_SUFFIXES)]}" for i in range(n))
    attributes = np.stack([colours.mean(axis=1) > 127, colours[:, 0] > colours[:, 2]], axis=1).astype(np.int8)
    split = (np.arange(n) % 3).astype(np.int8)
    return FolderTruth(names, colours, attributes, split)


def write_image_folder(
    root: Path,
    n: int = 6,
    size: tuple[int, int] = (40, 30),
    grey: bool = False,
    attributes: bool = True,
    split: bool = False,
    seed: int = 0,
) -> Path:
    """``n`` solid-colour images of ``size`` (width, height) in lossless formats, a stray text file, and
    optionally ``attributes.csv`` (columns filename, bright as 0/1, reddish as -1/1, and split as words)."""
    truth = folder_truth(n, seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, colour in zip(truth.names, truth.colours):
        pixels = np.broadcast_to(colour, (size[1], size[0], 3)).copy()
        image = Image.fromarray(pixels, "RGB")
        (image.convert("L") if grey else image).save(root / name, **({"lossless": True} if name.endswith(".webp") else {}))
    (root / "notes.txt").write_text("not an image\n")
    if attributes:
        words = ("train", "valid", "test")
        header = "filename,bright,reddish" + (",split" if split else "")
        # rows in reverse order: the reader must match them by name, not by position
        rows = [
            f"{name},{a[0]},{1 if a[1] else -1}" + (f",{words[s]}" if split else "")
            for name, a, s in zip(truth.names, truth.attributes, truth.split)
        ][::-1]
        (root / "attributes.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return root


def digit_like_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """uint8 images whose class is visible: a bright bar whose position and angle depend on the label."""
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.zeros((n, size, size), dtype=np.float32)
    for i, label in enumerate(labels):
        angle = np.pi * label / 10 + rng.normal(0, 0.05)
        cx, cy = size / 2 + rng.normal(0, 1), size / 2 + rng.normal(0, 1)
        dist = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle))
        along = np.abs((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle))
        images[i] = np.clip(2.0 - dist, 0, 1) * (along < 4 + label * 0.8)
    return (images * 255).astype(np.uint8)


def write_mnist(root: Path, n_train: int = 200, n_test: int = 50, gz: bool = False, seed: int = 0,
                classes: tuple[str, ...] | list[str] | None = tuple(str(d) for d in range(10))) -> Path:
    """Four IDX files in MNIST's layout with digit-like, class-dependent images, and ``classes.txt`` naming the
    classes (the digits unless told otherwise; None writes no such file)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = digit_like_images(labels, rng)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = encode_idx(array)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
    if classes is not None:
        (root / "classes.txt").write_text("".join(name + "\n" for name in classes))
    return root


def write_tiny_checkpoint(path: Path, seed: int = 0, arch: str = "tiny") -> Path:
    """A checkpoint of architecture ``arch`` with weights ~ N(0, 0.3) from ``seed`` (distinct, non-trivial latents)."""
    import torch

    from halitool.checkpoint import save_checkpoint
    from halitool.models import ModelConfig, build_model

    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return save_checkpoint(Path(path), model, preprocessing={"value_range": [0, 1]}, training={"seed": seed}, metrics={})


def run_cli(args: list[str], env: dict | None = None):
    """Run ``halitool`` in-process through its real entry point; returns (exit code, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from halitool.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def record_reads(monkeypatch, module) -> tuple[list[int], dict]:
    """Make ``module.open_dataset`` hand out data sets that record every row index whose images are read.

    Returns (the row indices read, in order; a dict whose "ds" is the last data set opened)."""
    from halitool.data import open_dataset

    read: list[int] = []
    opened: dict = {}

    def recording_open(spec):
        ds = open_dataset(spec)
        loader = ds.loader

        def load(idx):
            read.extend(int(i) for i in idx)
            return loader(idx)

        ds.loader = load
        opened["ds"] = ds
        return ds

    monkeypatch.setattr(module, "open_dataset", recording_open)
    return read, opened
