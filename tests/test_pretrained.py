"""The shipped model loads, describes itself, and matches its model card."""

import json
import re
from pathlib import Path

import torch

from conftest import run_cli
from halitool.checkpoint import load_checkpoint, resolve_checkpoint

CARD = Path(__file__).resolve().parents[1] / "pretrained" / "README.md"


def test_hali_mnist_loads_and_encodes():
    loaded = load_checkpoint("hali-mnist")
    model = loaded.model
    assert model.level_shapes == {"z1": (16, 7, 7), "z2": (64,)}
    x = torch.rand(4, 1, 28, 28)
    zs = model.encode(x)
    assert zs["z1"].shape == (4, 16, 7, 7) and zs["z2"].shape == (4, 64)
    assert all(torch.isfinite(z).all() for z in zs.values())


def test_card_matches_the_file():
    loaded = load_checkpoint("hali-mnist")
    card = CARD.read_text()
    assert loaded.sha256 in card
    assert loaded.training["command"].startswith("halitool train ")
    # The card quotes the command the file records, line breaks aside.
    flat = re.sub(r"\s*\\\n\s*", " ", card)
    assert loaded.training["command"] in flat
    assert resolve_checkpoint("hali-mnist").stat().st_size < 100_000_000


def test_info_shows_the_training_command():
    code, out, err = run_cli(["info", "hali-mnist", "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["training"]["command"].startswith("halitool train --data mnist:")
    assert doc["levels"] == {"z1": [16, 7, 7], "z2": [64]}
