"""A catalogue of bad inputs for every command: each is refused with its documented exit code (2 usage,
3 bad input), one ``Error:`` line naming the input and the problem, no traceback, nothing on stdout, and
nothing created or changed in the case's folder. Paths with spaces and non-ASCII characters must work.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import run_cli

from .conftest import Assets, assert_refused, copy, snapshot

RNG_BYTES = np.random.default_rng(1234).integers(0, 256, 4096, dtype=np.uint8).tobytes()


@dataclass
class Case:
    """A per-case folder ``root`` (inputs in ``root/in``, outputs in ``root/out``) and the shared assets."""

    root: Path
    a: Assets

    @property
    def inp(self) -> Path:
        return self.root / "in"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.inp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def copy(self, src: Path, name: str | None = None) -> Path:
        return copy(src, self.inp / (name or src.name))

    # damaged copies of the assets ---------------------------------------------------------------------
    def mnist_with(self, stem: str, data: bytes) -> Path:
        """A copy of the MNIST folder whose file ``stem`` holds ``data``."""
        root = self.copy(self.a.mnist, "mnist")
        (root / stem).write_bytes(data)
        return root

    def features_with(self, edit) -> Path:
        path = self.copy(self.a.features, "features.h5")
        with h5py.File(path, "r+") as h5:
            edit(h5)
        return path

    def checkpoint_with(self, name: str, tensors=None, metadata=None, drop=()) -> Path:
        from safetensors.torch import load_file, save
        from safetensors import safe_open

        with safe_open(str(self.a.tiny), "pt") as f:
            meta = dict(f.metadata())
        state = load_file(str(self.a.tiny))
        for key in drop:
            meta.pop(key, None)
        meta.update(metadata or {})
        state.update(tensors or {})
        return self.write(name, save(state, metadata=meta))


CASES: list = []


def case(name: str, code: int):
    """Register ``build(c: Case) -> (args, mentions)`` as a catalogue entry expecting exit ``code``."""

    def register(build):
        CASES.append(pytest.param(build, code, id=name))
        return build

    return register


def idx_header(ndim_dims: tuple[int, ...], magic_type: int = 0x08) -> bytes:
    return bytes([0, 0, magic_type, len(ndim_dims)]) + struct.pack(f">{len(ndim_dims)}I", *ndim_dims)


# --------------------------------------------------------------------------------------------- IDX (MNIST)
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"


@case("idx-empty/data-info", 3)
def _(c):
    root = c.mnist_with(TRAIN_IMAGES, b"")
    return ["data", "info", f"mnist:{root}", "--format", "json"], [TRAIN_IMAGES, "not an IDX file"]


@case("idx-truncated/extract", 3)
def _(c):
    full = (c.a.mnist / TRAIN_IMAGES).read_bytes()
    root = c.mnist_with(TRAIN_IMAGES, full[: len(full) // 2])
    return (["extract", str(c.a.tiny), "--data", f"mnist:{root}", "-o", str(c.out / "f.h5")],
            [TRAIN_IMAGES, "truncated"])


@case("idx-random-bytes/train", 3)
def _(c):
    root = c.mnist_with(TRAIN_LABELS, b"\x01" + RNG_BYTES[:500])
    return (["train", "--data", f"mnist:{root}", "--arch", "tiny", "--out", str(c.out / "run"), "--steps", "1"],
            [TRAIN_LABELS, "not an IDX file"])


@case("idx-wrong-format-png/reconstruct", 3)
def _(c):
    png = next(p for p in sorted(c.a.folder.iterdir()) if p.suffix == ".png")
    root = c.mnist_with(TRAIN_IMAGES, png.read_bytes())
    return (["reconstruct", str(c.a.tiny), "--data", f"mnist:{root}", "-o", str(c.out / "r.png")],
            [TRAIN_IMAGES, "not an IDX file"])


@case("idx-corrupt-gzip/data-info", 3)
def _(c):
    root = c.mnist_with(TRAIN_IMAGES, b"")
    (root / TRAIN_IMAGES).unlink()
    good = gzip.compress((c.a.mnist / TRAIN_IMAGES).read_bytes())
    (root / f"{TRAIN_IMAGES}.gz").write_bytes(good[: len(good) // 3])
    return ["data", "info", f"mnist:{root}"], [f"{TRAIN_IMAGES}.gz", "cannot read"]


@case("idx-wrong-dtype/data-info", 3)
def _(c):
    root = c.mnist_with(TRAIN_LABELS, idx_header((60,), magic_type=0x0D) + b"\0" * 240)  # float32 labels
    return ["data", "info", f"mnist:{root}"], [TRAIN_LABELS, "element type"]


@case("idx-wrong-shape-2d-images/interpolate", 3)
def _(c):
    root = c.mnist_with(TRAIN_IMAGES, idx_header((60, 784)) + bytes(60 * 784))
    return (["interpolate", str(c.a.tiny), "--data", f"mnist:{root}", "-o", str(c.out / "i.png")],
            [TRAIN_IMAGES, "3 dimensions"])


@case("idx-count-mismatch/data-info", 3)
def _(c):
    root = c.mnist_with(TRAIN_LABELS, idx_header((59,)) + bytes(59))
    return ["data", "info", f"mnist:{root}"], [TRAIN_LABELS, "59 labels for 60 images"]


@case("idx-missing-file/extract", 3)
def _(c):
    root = c.mnist_with(TRAIN_LABELS, b"")
    (root / TRAIN_LABELS).unlink()
    return (["extract", str(c.a.tiny), "--data", f"mnist:{root}", "-o", str(c.out / "f.h5")],
            [TRAIN_LABELS, "missing"])


# ------------------------------------------------------------------------------------ CelebA txt and CSV
def celeba(c: Case, variant: str, name: str, data: bytes | str) -> Path:
    root = c.copy(c.a.celeba_txt if variant == "txt" else c.a.celeba_csv, f"celeba_{variant}")
    (root / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return root


@case("celeba-attr-txt-empty/data-info", 3)
def _(c):
    return ["data", "info", f"celeba:{celeba(c, 'txt', 'list_attr_celeba.txt', '')}"], ["list_attr_celeba.txt"]


@case("celeba-attr-txt-truncated/data-info", 3)
def _(c):
    text = (c.a.celeba_txt / "list_attr_celeba.txt").read_text()
    root = celeba(c, "txt", "list_attr_celeba.txt", text[: len(text) - 40])
    return ["data", "info", f"celeba:{root}"], ["list_attr_celeba.txt", "line 7"]


@case("celeba-attr-txt-random-bytes/data-info", 3)
def _(c):
    root = celeba(c, "txt", "list_attr_celeba.txt", b"\xff\xfe" + RNG_BYTES)
    return ["data", "info", f"celeba:{root}"], ["list_attr_celeba.txt", "cannot read"]


@case("celeba-attr-txt-bad-value/data-info", 3)
def _(c):
    text = (c.a.celeba_txt / "list_attr_celeba.txt").read_text().replace("000002.jpg  1", "000002.jpg  0", 1)
    text = text.replace("000002.jpg -1", "000002.jpg 0", 1)
    root = celeba(c, "txt", "list_attr_celeba.txt", text)
    return ["data", "info", f"celeba:{root}"], ["list_attr_celeba.txt", "line 4", "'0'"]


@case("celeba-attr-txt-wrong-count/data-info", 3)
def _(c):
    text = (c.a.celeba_txt / "list_attr_celeba.txt").read_text()
    root = celeba(c, "txt", "list_attr_celeba.txt", "7" + text[1:])
    return ["data", "info", f"celeba:{root}"], ["list_attr_celeba.txt", "7 images"]


@case("celeba-attr-csv-empty/data-info", 3)
def _(c):
    return ["data", "info", f"celeba:{celeba(c, 'csv', 'list_attr_celeba.csv', '')}"], ["list_attr_celeba.csv", "empty"]


@case("celeba-attr-csv-wrong-format/data-info", 3)
def _(c):
    # the txt table under the CSV name: a header of one column
    root = celeba(c, "csv", "list_attr_celeba.csv", (c.a.celeba_txt / "list_attr_celeba.txt").read_bytes())
    return ["data", "info", f"celeba:{root}"], ["list_attr_celeba.csv", "line 1"]


@case("celeba-attr-csv-short-row/train", 3)
def _(c):
    lines = (c.a.celeba_csv / "list_attr_celeba.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]
    root = celeba(c, "csv", "list_attr_celeba.csv", "\n".join(lines) + "\n")
    return (["train", "--data", f"celeba:{root}", "--arch", "celeba64", "--out", str(c.out / "run")],
            ["list_attr_celeba.csv", "line 4", "too few"])


@case("celeba-partition-txt-bad-split/data-info", 3)
def _(c):
    root = celeba(c, "txt", "list_eval_partition.txt", "000001.jpg 0\n000002.jpg 7\n")
    return ["data", "info", f"celeba:{root}"], ["list_eval_partition.txt", "line 2"]


@case("celeba-partition-csv-missing-rows/data-info", 3)
def _(c):
    root = celeba(c, "csv", "list_eval_partition.csv", "image_id,partition\n000001.jpg,0\n")
    return ["data", "info", f"celeba:{root}"], ["list_eval_partition.csv", "000002.jpg"]


@case("celeba-partition-random-bytes/data-info", 3)
def _(c):
    root = celeba(c, "txt", "list_eval_partition.txt", RNG_BYTES[:300])
    return ["data", "info", f"celeba:{root}"], ["list_eval_partition.txt"]


@case("celeba-image-truncated/data-info-check", 3)
def _(c):
    root = c.copy(c.a.celeba_txt, "celeba_txt")
    jpg = root / "img_align_celeba" / "000003.jpg"
    jpg.write_bytes(jpg.read_bytes()[:150])
    return ["data", "info", f"celeba:{root}", "--check"], ["000003.jpg", "decode"]


# ---------------------------------------------------------------------------------------- image folders
@case("folder-image-random-bytes/data-info-check", 3)
def _(c):
    root = c.copy(c.a.folder, "folder")
    (root / "img_001.bmp").write_bytes(RNG_BYTES[:700])
    return ["data", "info", f"folder:{root}", "--check"], ["img_001.bmp"]


@case("folder-image-empty/data-info", 3)
def _(c):
    root = c.copy(c.a.folder, "folder")
    (root / "img_000.png").write_bytes(b"")
    return ["data", "info", f"folder:{root}"], ["img_000.png"]


@case("folder-attributes-csv-bad-value/data-info", 3)
def _(c):
    root = c.copy(c.a.folder, "folder")
    text = (root / "attributes.csv").read_text().splitlines()
    text[2] = text[2].rsplit(",", 1)[0] + ",maybe"
    (root / "attributes.csv").write_text("\n".join(text) + "\n")
    return ["data", "info", f"folder:{root}"], ["attributes.csv", "maybe"]


@case("folder-images-against-mnist-model/extract", 3)
def _(c):
    return (["extract", str(c.a.tiny), "--data", f"folder:{c.a.folder}", "-o", str(c.out / "f.h5")],
            ["(1, 28, 28)"])


# ------------------------------------------------------------------------------------------ checkpoints
@case("checkpoint-empty/info", 3)
def _(c):
    return ["info", str(c.write("empty.safetensors", b""))], ["empty.safetensors", "not a readable safetensors"]


@case("checkpoint-truncated/extract", 3)
def _(c):
    data = c.a.tiny.read_bytes()
    path = c.write("cut.safetensors", data[: len(data) - 100])
    return (["extract", str(path), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "f.h5")],
            ["cut.safetensors", "truncated"])


@case("checkpoint-random-bytes/sample", 3)
def _(c):
    path = c.write("noise.safetensors", RNG_BYTES)
    return ["sample", str(path), "-o", str(c.out / "s.png")], ["noise.safetensors", "not a readable safetensors"]


@case("checkpoint-wrong-format-hdf5/info", 3)
def _(c):
    path = c.copy(c.a.features, "model.safetensors")
    return ["info", str(path)], ["model.safetensors", "not a readable safetensors"]


@case("checkpoint-header-claims-more-than-file/info", 3)
def _(c):
    data = c.a.tiny.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    path = c.write("long-header.safetensors", struct.pack("<Q", n + 10_000) + data[8:])
    return ["info", str(path)], ["long-header.safetensors", "not a readable safetensors"]


@case("checkpoint-tensor-offsets-beyond-file/reconstruct", 3)
def _(c):
    data = c.a.tiny.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    header[last]["data_offsets"][1] += 1 << 20  # claims a megabyte the file does not hold
    raw = json.dumps(header).encode()
    path = c.write("offsets.safetensors", struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    return (["reconstruct", str(path), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "r.png")],
            ["offsets.safetensors", "not a readable safetensors"])


@case("checkpoint-not-halitool/info", 3)
def _(c):
    path = c.checkpoint_with("foreign.safetensors", drop=("format",))
    return ["info", str(path)], ["foreign.safetensors", "not a halitool checkpoint"]


@case("checkpoint-future-version/extract", 3)
def _(c):
    path = c.checkpoint_with("v9.safetensors", metadata={"format_version": "9"})
    return (["extract", str(path), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "f.h5")],
            ["v9.safetensors", "version '9'"])


@case("checkpoint-config-not-json/sample", 3)
def _(c):
    path = c.checkpoint_with("cfg.safetensors", metadata={"config": "{arch: tiny"})
    return ["sample", str(path), "-o", str(c.out / "s.png")], ["cfg.safetensors", "'config' is not valid JSON"]


@case("checkpoint-unknown-architecture/info", 3)
def _(c):
    path = c.checkpoint_with("arch.safetensors", metadata={"config": json.dumps({"arch": "resnet9000"})})
    return ["info", str(path)], ["arch.safetensors", "unknown architecture 'resnet9000'"]


@case("checkpoint-tiny-weights-claiming-mnist/extract", 3)
def _(c):
    config = json.dumps({"arch": "mnist", "levels": 2})
    path = c.checkpoint_with("liar.safetensors", metadata={"config": config}, drop=("levels",))
    return (["extract", str(path), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "f.h5")],
            ["liar.safetensors", "do not match architecture 'mnist'", "wrong shape"])


@case("checkpoint-recorded-levels-differ/info", 3)
def _(c):
    path = c.checkpoint_with("levels.safetensors", metadata={"levels": json.dumps({"z1": [1, 2, 3]})})
    return ["info", str(path)], ["levels.safetensors", "recorded level shapes"]


@case("checkpoint-missing-tensor/interpolate", 3)
def _(c):
    from safetensors.torch import load_file, save
    from safetensors import safe_open

    with safe_open(str(c.a.tiny), "pt") as f:
        meta = f.metadata()
    state = load_file(str(c.a.tiny))
    gone = sorted(state)[0]
    del state[gone]
    path = c.write("partial.safetensors", save(state, metadata=meta))
    return (["interpolate", str(path), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "i.png")],
            ["partial.safetensors", "missing: " + gone])


@case("checkpoint-celeba-model-on-mnist/extract", 3)
def _(c):
    from halitool.models.config import ARCHITECTURES, Architecture, register_architecture

    # A test-sized model of CelebA's 3x64x64 images (registering it is how an architecture is added).
    if "rel_rgb64" not in ARCHITECTURES:
        register_architecture(Architecture(name="rel_rgb64", image_shape=(3, 64, 64), x_widths=(4, 8), z1_channels=2,
                                           down_widths=(8,), hidden=16, z_dims=(8,), d_z1_widths=(8,), d_hidden=16))
    from helpers import write_tiny_checkpoint

    path = write_tiny_checkpoint(c.inp / "rgb.safetensors", arch="rel_rgb64")
    return (["extract", str(path), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "f.h5")],
            ["(3, 64, 64)", "(1, 28, 28)", "rgb.safetensors"])


class _RunsCode:
    """Unpickling this runs ``touch MARKER``: the payload of a malicious ``.pt``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@case("checkpoint-pt-would-run-code/info", 3)
def _(c):
    import torch

    marker = c.root / "PWNED"
    path = c.inp / "evil.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": {"arch": "tiny"}, "state_dict": {"w": torch.zeros(1)}, "x": _RunsCode(marker)}, path)
    return ["info", str(path)], ["evil.pt", "refused"]


@case("checkpoint-pt-legacy-pickle-would-run-code/sample", 3)
def _(c):
    marker = c.root / "PWNED"
    path = c.write("evil.pth", pickle.dumps(_RunsCode(marker)))
    return ["sample", str(path), "-o", str(c.out / "s.png")], ["evil.pth", "refused"]


@case("checkpoint-pt-not-a-dict/info", 3)
def _(c):
    import torch

    path = c.inp / "list.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save([torch.zeros(2)], path)
    return ["info", str(path)], ["list.pt", "must hold a dict"]


@case("checkpoint-pt-empty/extract", 3)
def _(c):
    path = c.write("empty.pt", b"")
    return (["extract", str(path), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "f.h5")],
            ["empty.pt", "refused"])


@case("checkpoint-pt-bare-state-dict/info", 3)
def _(c):
    import torch
    from safetensors.torch import load_file

    path = c.inp / "bare.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(load_file(str(c.a.tiny)), path)
    return ["info", str(path)], ["bare.pt", "no model config"]


@case("checkpoint-missing/semisup", 3)
def _(c):
    return ["semisup", str(c.inp / "nope.safetensors"), "--seeds", "1"], ["nope.safetensors", "not found"]


@case("checkpoint-without-classifier/predict", 3)
def _(c):
    return ["predict", str(c.copy(c.a.tiny)), "--data", f"mnist:{c.copy(c.a.mnist, 'mnist')}"], \
        ["tiny", "has no classifier"]


@case("checkpoint-missing/predict", 3)
def _(c):
    return ["predict", str(c.inp / "nope.safetensors"), "--data", f"mnist:{c.a.mnist}"], ["nope.safetensors", "not found"]


@case("output-exists-no-force/predict", 2)
def _(c):
    existing = c.write("preds.csv", "keep me\n")
    return ["predict", str(c.a.tiny), "--data", f"mnist:{c.a.mnist}", "-o", str(existing)], \
        ["preds.csv", "already exists"]


@case("checkpoint-classifier-section-without-class-logits/info", 3)
def _(c):
    section = {"classes": ["a", "b"], "class_values": [0, 1], "labelled": {"n": 2, "seed": 0, "indices_sha256": ""}}
    return ["info", str(c.checkpoint_with("bad.safetensors", metadata={"classifier": json.dumps(section)}))], \
        ["bad.safetensors", "no class logits"]


@case("features-file/semisup-adversarial", 2)
def _(c):
    return ["semisup", str(c.copy(c.a.features, "f.h5")), "--protocol", "adversarial", "--seeds", "1"], \
        ["f.h5", "trains on images"]


@case("option-level-dropout-one/train", 2)
def _(c):
    return ["train", "--data", f"mnist:{c.a.mnist}", "--out", str(c.out / "run"), "--labels", "10",
            "--level-dropout", "1"], ["--level-dropout"]


@case("checkpoint-unknown-shipped-name/info", 3)
def _(c):
    return ["info", "hali-nonexistent"], ["hali-nonexistent", "no shipped model"]


# -------------------------------------------------------------------------------------- features files
@case("features-empty/inspect", 3)
def _(c):
    return ["inspect", str(c.write("f.h5", b""))], ["f.h5", "not a readable HDF5"]


@case("features-random-bytes/probe", 3)
def _(c):
    path = c.write("f.h5", RNG_BYTES)
    return ["probe-attributes", str(path), "-o", str(c.out / "p.json")], ["f.h5", "not a readable HDF5"]


@case("features-truncated/semisup", 3)
def _(c):
    data = c.a.features.read_bytes()
    path = c.write("f.h5", data[: len(data) // 2])
    return ["semisup", str(path), "--seeds", "1", "--labels", "10"], ["f.h5"]


@case("features-wrong-format-safetensors/inspect", 3)
def _(c):
    return ["inspect", str(c.copy(c.a.tiny, "f.h5"))], ["f.h5", "not a readable HDF5"]


@case("features-other-hdf5/probe", 3)
def _(c):
    path = c.inp / "other.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5["data"] = np.zeros((3, 3))
    return ["probe-attributes", str(path)], ["other.h5", "not a halitool features file"]


@case("features-unknown-schema-version/semisup", 3)
def _(c):
    path = c.features_with(lambda h5: h5.attrs.__setitem__("format_version", 2))
    return ["semisup", str(path), "--seeds", "1", "--labels", "10"], ["features.h5", "version 2"]


@case("features-version-as-text/inspect", 3)
def _(c):
    path = c.features_with(lambda h5: h5.attrs.__setitem__("format_version", "one"))
    return ["inspect", str(path)], ["features.h5", "version 'one'"]


@case("features-incomplete/probe", 3)
def _(c):
    path = c.features_with(lambda h5: h5.attrs.__setitem__("complete", False))
    return ["probe-attributes", str(path)], ["features.h5", "incomplete"]


@case("features-nan/probe", 3)
def _(c):
    def edit(h5):
        h5["levels/z2/mean"][3, 1] = np.nan

    return (["probe-attributes", str(c.features_with(edit)), "--levels", "z2", "--no-pixel-baseline"],
            ["features.h5", "NaN or inf"])


@case("features-inf/semisup", 3)
def _(c):
    def edit(h5):
        h5["levels/z1/mean"][0, 0] = np.inf

    return ["semisup", str(c.features_with(edit)), "--seeds", "1", "--labels", "10", "--features", "z1"], \
        ["features.h5", "NaN or inf"]


@case("features-level-shape-mismatch/inspect", 3)
def _(c):
    def edit(h5):
        h5["levels/z2"].attrs["shape"] = [9]

    # Plain numbers in the message, not numpy reprs such as np.int64(9).
    return ["inspect", str(c.features_with(edit))], ["features.h5", "level z2", "expected (80, 9)", "shape (9,)"]


@case("features-attributes-not-binary/probe", 3)
def _(c):
    def edit(h5):
        h5["labels/attributes"][5, 0] = 2

    return (["probe-attributes", str(c.features_with(edit)), "--no-pixel-baseline"],
            ["features.h5", "must be 0 or 1", "row 5"])


@case("training-state-as-checkpoint/info", 3)
def _(c):
    from halitool.tensorfile import write_tensors
    from halitool.training_state import STATE_METADATA_KEY

    path = c.inp / "run" / "state.safetensors"
    path.parent.mkdir(parents=True)
    import torch

    write_tensors(path, {"model.x": torch.zeros(1)}, {STATE_METADATA_KEY: "{}"})
    return ["info", str(path)], ["state.safetensors", "training state", str(path.parent / "model.safetensors")]


@case("features-missing/semisup", 3)
def _(c):
    # Not "checkpoint not found": SOURCE may be a features file as well.
    return ["semisup", str(c.inp / "missing.h5"), "--seeds", "1"], ["missing.h5", "not found", "features file"]


@case("features-wrong-row-count/probe", 3)
def _(c):
    def edit(h5):
        del h5["labels/attributes"]
        h5["labels/attributes"] = np.zeros((5, 8), dtype=np.int8)
        h5["labels/attributes"].attrs["names"] = [f"a{i}" for i in range(8)]

    return ["probe-attributes", str(c.features_with(edit))], ["features.h5", "labels/attributes has 5 rows"]


@case("features-text-instead-of-floats/semisup", 3)
def _(c):
    def edit(h5):
        n = h5["index/split"].shape[0]
        del h5["levels/z2"]
        g = h5.create_group("levels/z2")
        g["mean"] = np.array([[b"x"] * 8] * n)
        g.attrs["shape"] = [8]

    return ["semisup", str(c.features_with(edit)), "--seeds", "1", "--labels", "10", "--features", "z2"], \
        ["features.h5", "z2"]


@case("features-no-classes/semisup", 3)
def _(c):
    return ["semisup", str(c.copy(c.a.bare_features, "bare.h5")), "--seeds", "1", "--labels", "10"], \
        ["bare.h5", "class"]


@case("features-no-attributes/probe", 3)
def _(c):
    return ["probe-attributes", str(c.copy(c.a.bare_features, "bare.h5"))], ["bare.h5", "no attributes"]


@case("features-no-factors/disentanglement", 3)
def _(c):
    return ["disentanglement", str(c.copy(c.a.bare_features, "bare.h5"))], ["bare.h5", "no factors"]


@case("features-factors-without-names/disentanglement", 3)
def _(c):
    return (["disentanglement", str(c.features_with(lambda h5: h5["labels/factors"].attrs.__delitem__("names")))],
            ["features.h5", "labels/factors", "one name per column"])


@case("features-factors-nan/disentanglement", 3)
def _(c):
    def edit(h5):
        h5["labels/factors"][2, 1] = np.nan

    return ["disentanglement", str(c.features_with(edit))], ["features.h5", "NaN or inf", "slant"]


@case("features-unknown-factor/disentanglement", 2)
def _(c):
    return ["disentanglement", str(c.a.features), "--factors", "thickness,weight"], ["--factors", "'weight'"]


@case("features-missing/inspect", 3)
def _(c):
    return ["inspect", str(c.inp / "gone.h5")], ["gone.h5", "not found"]


# --------------------------------------------------------------------------------------------- outputs
@case("output-folder-missing/extract", 2)
def _(c):
    out = c.out / "no" / "such" / "f.h5"
    return ["extract", str(c.a.tiny), "--data", f"mnist:{c.a.mnist}", "-o", str(out)], [str(out), "does not exist"]


@case("output-folder-missing/probe", 2)
def _(c):
    out = c.out / "nowhere" / "p.json"
    return ["probe-attributes", str(c.a.features), "-o", str(out), "--no-pixel-baseline", "--C-grid", "1"], \
        [str(out), "does not exist"]


@case("output-folder-is-a-file/sample", 2)
def _(c):
    blocker = c.write("blocker", b"a file, not a folder")
    out = blocker / "s.png"
    return ["sample", str(c.a.tiny), "-o", str(out)], [str(out)]


@case("output-folder-unwritable/sample", 2)
def _(c):
    # /proc refuses new files even to root (a chmod-ed folder would not stop root)
    return ["sample", str(c.a.tiny), "-o", "/proc/halitool-reliability.png"], ["/proc/halitool-reliability.png"]


@case("output-folder-unwritable/semisup", 2)
def _(c):
    return ["semisup", str(c.a.features), "--seeds", "1", "--labels", "10", "-o", "/proc/halitool-rel.json"], \
        ["/proc/halitool-rel.json"]


@case("output-exists-no-force/extract", 2)
def _(c):
    (c.out / "f.h5").write_bytes(b"precious")
    return ["extract", str(c.a.tiny), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "f.h5")], ["f.h5", "--force"]


@case("output-exists-no-force/reconstruct", 2)
def _(c):
    (c.out / "r.png").write_bytes(b"precious")
    return (["reconstruct", str(c.a.tiny), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "r.png")],
            ["r.png", "--force"])


@case("output-exists-no-force/interpolate", 2)
def _(c):
    (c.out / "i.png").write_bytes(b"precious")
    return (["interpolate", str(c.a.tiny), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "i.png")],
            ["i.png", "--force"])


@case("output-exists-no-force/semisup", 2)
def _(c):
    (c.out / "s.json").write_bytes(b"precious")
    return ["semisup", str(c.a.features), "--seeds", "1", "--labels", "10", "-o", str(c.out / "s.json")], \
        ["s.json", "--force"]


@case("output-exists-no-force/probe", 2)
def _(c):
    (c.out / "p.csv").write_bytes(b"precious")
    return ["probe-attributes", str(c.a.features), "--format", "csv", "-o", str(c.out / "p.csv")], \
        ["p.csv", "--force"]


@case("output-exists-no-force/disentanglement", 2)
def _(c):
    (c.out / "mi.csv").write_bytes(b"precious")
    return ["disentanglement", str(c.a.features), "--mi-csv", str(c.out / "mi.csv")], ["mi.csv", "--force"]


@case("output-exists-no-force/info", 2)
def _(c):
    (c.out / "i.json").write_bytes(b"precious")
    return ["info", str(c.a.tiny), "-o", str(c.out / "i.json")], ["i.json", "--force"]


@case("output-exists-no-force/train", 2)
def _(c):
    run = c.out / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"precious")
    return ["train", "--data", f"mnist:{c.a.mnist}", "--arch", "tiny", "--out", str(run), "--steps", "1"], \
        [str(run), "--force"]


@case("output-run-folder-is-a-file/train", 2)
def _(c):
    (c.out / "run").write_bytes(b"a file")
    return ["train", "--data", f"mnist:{c.a.mnist}", "--arch", "tiny", "--out", str(c.out / "run")], ["run"]


@case("train-resume-nothing/train", 2)
def _(c):
    return (["train", "--data", f"mnist:{c.a.mnist}", "--arch", "tiny", "--out", str(c.out / "run"), "--resume"],
            ["nothing to resume"])


@case("train-resume-corrupt-state/train", 3)
def _(c):
    run = c.out / "run"
    run.mkdir()
    copy(c.a.tiny, run / "model.safetensors")
    (run / "state.json").write_text("{not json")
    (run / "state.safetensors").write_bytes(RNG_BYTES[:64])
    return (["train", "--data", f"mnist:{c.a.mnist}", "--arch", "tiny", "--out", str(run), "--resume"],
            ["training state"])


# -------------------------------------------------------------------------------------- absurd options
def _train_args(c, *extra):
    return ["train", "--data", f"mnist:{c.a.mnist}", "--arch", "tiny", "--out", str(c.out / "run"), *extra]


@case("option-negative-batch-size/train", 2)
def _(c):
    return _train_args(c, "--batch-size", "-5"), ["--batch-size"]


@case("option-negative-epochs/train", 2)
def _(c):
    return _train_args(c, "--epochs", "-1"), ["--epochs"]


@case("option-nan-learning-rate/train", 2)
def _(c):
    return _train_args(c, "--lr", "nan"), ["--lr"]


@case("option-beta-above-one/train", 2)
def _(c):
    return _train_args(c, "--beta1", "2"), ["--beta1"]


@case("option-zero-levels/train", 2)
def _(c):
    return _train_args(c, "--levels", "0"), ["--levels"]


@case("option-negative-recon-weight/train", 2)
def _(c):
    return _train_args(c, "--recon-weight", "-1"), ["--recon-weight"]


@case("option-epochs-and-steps/train", 2)
def _(c):
    return _train_args(c, "--epochs", "1", "--steps", "2"), ["--epochs", "--steps"]


@case("option-unknown-data-kind/train", 2)
def _(c):
    return ["train", "--data", "imagenet:/x", "--arch", "tiny", "--out", str(c.out / "run")], ["imagenet"]


@case("option-zero-batch-size/extract", 2)
def _(c):
    return (["extract", str(c.a.tiny), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "f.h5"), "--batch-size", "0"],
            ["--batch-size"])


@case("option-unknown-level/extract", 2)
def _(c):
    return (["extract", str(c.a.tiny), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "f.h5"), "--levels", "z7"],
            ["--levels", "z7"])


@case("option-negative-workers/extract", 2)
def _(c):
    return (["extract", str(c.a.tiny), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "f.h5"), "--workers", "-1"],
            ["--workers"])


@case("option-labels-zero/semisup", 2)
def _(c):
    return ["semisup", str(c.a.features), "--labels", "0"], ["--labels"]


@case("option-labels-not-multiple/semisup", 2)
def _(c):
    return ["semisup", str(c.a.features), "--labels", "15"], ["--labels 15"]


@case("option-labels-more-than-data/semisup", 3)
def _(c):
    return ["semisup", str(c.a.features), "--labels", "1000", "--seeds", "1"], ["--labels 1000"]


@case("option-seeds-zero/semisup", 2)
def _(c):
    return ["semisup", str(c.a.features), "--seeds", "0"], ["--seeds"]


@case("option-unknown-protocol/semisup", 2)
def _(c):
    return ["semisup", str(c.a.features), "--protocol", "magic"], ["magic"]


@case("option-n-negative/sample", 2)
def _(c):
    return ["sample", str(c.a.tiny), "-o", str(c.out / "s.png"), "-n", "-1"], ["-n"]


@case("option-steps-one/interpolate", 2)
def _(c):
    return (["interpolate", str(c.a.tiny), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "i.png"), "--steps", "1"],
            ["--steps"])


@case("option-limit-negative/reconstruct", 2)
def _(c):
    return (["reconstruct", str(c.a.tiny), "--data", f"mnist:{c.a.mnist}", "-o", str(c.out / "r.png"), "--limit", "-3"],
            ["--limit"])


@case("option-c-grid-garbage/probe", 2)
def _(c):
    return ["probe-attributes", str(c.a.features), "--C-grid", "lots"], ["--C-grid", "lots"]


@case("option-c-grid-negative/probe", 2)
def _(c):
    return ["probe-attributes", str(c.a.features), "--C-grid", "-1,0.5"], ["--C-grid", "positive"]


@case("option-c-grid-zero-count/probe", 2)
def _(c):
    return ["probe-attributes", str(c.a.features), "--C-grid", "1e-3:1e2:0"], ["--C-grid"]


@case("option-max-train-one/probe", 2)
def _(c):
    return ["probe-attributes", str(c.a.features), "--max-train", "1"], ["--max-train"]


@case("option-unknown-attribute/probe", 3)
def _(c):
    return ["probe-attributes", str(c.a.features), "--attributes", "Nope"], ["features.h5", "Nope"]


@case("option-bad-format/info", 2)
def _(c):
    return ["info", str(c.a.tiny), "--format", "xml"], ["--format", "xml"]


@case("data-folder-missing/data-info", 3)
def _(c):
    return ["data", "info", f"mnist:{c.inp / 'nowhere'}"], ["nowhere", "does not exist"]


@case("data-spec-is-a-file/extract", 3)
def _(c):
    path = c.write("mnist.zip", b"PK")
    return (["extract", str(c.a.tiny), "--data", f"mnist:{path}", "-o", str(c.out / "f.h5")],
            ["mnist.zip", "not a folder"])


@pytest.mark.parametrize("build, code", CASES)
def test_refused(build, code, assets, tmp_path):
    c = Case(tmp_path / "case", assets)
    c.out.mkdir(parents=True)
    c.inp.mkdir()
    args, mentions = build(c)
    before = snapshot(c.root)
    result = run_cli(["-q", *args])
    assert_refused(result, code, mentions)
    assert snapshot(c.root) == before, "the refused command created or changed files"
    assert not (c.root / "PWNED").exists(), "unpickling ran code from the file"


def test_catalogue_size():
    assert len(CASES) >= 40


# ---------------------------------------------------------------- the real entry point, in a subprocess
def _subprocess(*args: str, cwd: Path | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "halitool", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("build, code", [p for p in CASES if p.id in (
    "checkpoint-pt-would-run-code/info", "features-unknown-schema-version/semisup", "idx-truncated/extract",
    "option-c-grid-garbage/probe", "output-exists-no-force/extract")])
@pytest.mark.slow
def test_refused_through_python_m_halitool(build, code, assets, tmp_path):
    c = Case(tmp_path / "case", assets)
    c.out.mkdir(parents=True)
    c.inp.mkdir()
    args, mentions = build(c)
    before = snapshot(c.root)
    assert_refused(_subprocess(*args), code, mentions)
    assert snapshot(c.root) == before
    assert not (c.root / "PWNED").exists()


def test_unpickling_payload_does_run_code_when_loaded_unsafely(tmp_path):
    """The malicious-pickle cases above prove something only if their payload really runs when unpickled."""
    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()


# ---------------------------------------------------------------- odd but valid paths must work
ODD = ["with space", "ünïcödé", "日本語 データ", "quote'n dash-"]


@pytest.mark.parametrize("name", ODD)
def test_odd_paths_work(name, assets, tmp_path):
    folder = tmp_path / name
    mnist = copy(assets.mnist, folder / f"mnist {name}")
    ckpt = copy(assets.tiny, folder / f"model {name}.safetensors")
    out = folder / f"features {name}.h5"
    code, stdout, stderr = run_cli(["-q", "extract", str(ckpt), "--data", f"mnist:{mnist}", "-o", str(out),
                                    "--format", "json"])
    assert code == 0, stderr
    assert json.loads(stdout)["output"] == str(out)
    code, stdout, stderr = run_cli(["-q", "inspect", str(out), "--format", "json"])
    assert code == 0, stderr
    assert json.loads(stdout)["n_samples"] == 80
    png = folder / f"samples {name}.png"
    code, stdout, stderr = run_cli(["-q", "sample", str(ckpt), "-o", str(png), "-n", "4", "--format", "json"])
    assert code == 0, stderr
    assert png.stat().st_size > 0
    report = folder / f"semisup {name}.json"
    code, _, stderr = run_cli(["-q", "semisup", str(out), "--labels", "10", "--seeds", "1", "-o", str(report)])
    assert code == 0, stderr
    assert json.loads(report.read_text())["labels"] == 10


def test_odd_paths_work_through_python_m_halitool(assets, tmp_path):
    folder = tmp_path / "dossier été"
    ckpt = copy(assets.tiny, folder / "modèle tiny.safetensors")
    code, stdout, stderr = _subprocess("info", str(ckpt), "--format", "json")
    assert code == 0, stderr
    assert json.loads(stdout)["config"]["arch"] == "tiny"
