"""The shipped model loads, describes itself, and matches its model card."""

import json
import re
from pathlib import Path

import torch

from helpers import run_cli
from halitool.checkpoint import load_checkpoint, resolve_checkpoint
from halitool.models.config import CLUSTERING_OBJECTIVE

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


def test_hali_mnist_ssl100_has_its_classifier_and_matches_its_card():
    loaded = load_checkpoint("hali-mnist-ssl100")
    assert loaded.config.n_classes == 10 and loaded.config.arch == "mnist-mlp"
    assert loaded.classifier["classes"] == [str(d) for d in range(10)]
    assert {k: loaded.classifier["labelled"][k] for k in ("n", "seed")} == {"n": 100, "seed": 0}
    logits = loaded.model.classify(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    card = CARD.read_text()
    assert loaded.sha256 in card
    assert loaded.training["command"].startswith("halitool ") and " train --data " in loaded.training["command"]
    assert "--labels 100" in loaded.training["command"]
    assert loaded.training["command"] in re.sub(r"\s*\\\n\s*", " ", card)
    assert resolve_checkpoint("hali-mnist-ssl100").stat().st_size < 100_000_000


def test_hali_mnist_ssl100_answers_only_for_its_own_draw():
    for extra in (["--seeds", "1", "--seed-base", "1"], ["--seeds", "3"], ["--labels", "50", "--seeds", "1"]):
        code, out, err = run_cli(["semisup", "hali-mnist-ssl100", "--protocol", "adversarial", "--labels", "100",
                                  *extra, "--format", "json"])
        assert code == 2 and out == "", err
        assert "labelled draw of --labels 100 --seed-base 0" in err


def test_hali_mnist_6level_has_six_levels_by_the_width_rule_and_matches_its_card():
    loaded = load_checkpoint("hali-mnist-6level")
    assert loaded.config.n_levels == 6 and loaded.config.z_dims == (64, 32, 16, 8, 8)
    assert loaded.model.level_shapes["z6"] == (8,)
    card = CARD.read_text()
    assert loaded.sha256 in card
    assert loaded.training["command"] in re.sub(r"\s*\\\n\s*", " ", card)
    x = torch.rand(3, 1, 28, 28)
    loaded.model.eval()
    with torch.no_grad():
        for level in loaded.model.level_names:
            assert loaded.model.reconstruct(x, level).shape == x.shape
    assert resolve_checkpoint("hali-mnist-6level").stat().st_size < 100_000_000


def test_hali_mnist_cluster_has_a_ten_way_class_latent_and_matches_its_card():
    loaded = load_checkpoint("hali-mnist-cluster")
    config = loaded.config
    assert config.class_latent == 10 and config.n_classes == 0 and loaded.classifier is None
    assert {name: getattr(config, name) for name in CLUSTERING_OBJECTIVE} == CLUSTERING_OBJECTIVE
    card = CARD.read_text()
    assert loaded.sha256 in card
    for leg in loaded.training["legs"]:
        assert leg["command"] in card
    loaded.model.eval()
    with torch.no_grad():
        p = loaded.model.class_probabilities(torch.rand(4, 1, 28, 28))
        images = loaded.model.sample(3, classes=torch.tensor([0, 4, 9]))
    assert p.shape == (4, 10) and torch.allclose(p.sum(dim=1), torch.ones(4))
    assert images.shape == (3, 1, 28, 28)
