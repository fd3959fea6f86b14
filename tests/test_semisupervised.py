"""Semi-supervised HALI: train --labels, the checkpoint's classifier section, predict, semisup --protocol adversarial."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from halitool.checkpoint import load_checkpoint, save_checkpoint
from halitool.data import open_dataset
from halitool.data.idx import encode_idx
from halitool.draws import draw_hash, labelled_draw
from halitool.errors import BadInputError
from halitool.models import ModelConfig, build_model
from helpers import record_reads, run_cli


def write_clusters(root, n_train: int = 300, n_test: int = 100, seed: int = 0):
    """MNIST's layout with ten well-separated clusters: class k is a fixed random binary image plus a little noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28)) < 0.3
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = np.where(prototypes[labels], 220, 30) + rng.integers(-20, 21, (n, 28, 28))
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(encode_idx(images.clip(0, 255).astype(np.uint8)))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(encode_idx(labels))
    (root / "classes.txt").write_text("".join(f"{d}\n" for d in range(10)))
    return root


def _train_labelled(data_dir, out, *extra):
    return run_cli(["train", "--data", f"mnist:{data_dir}", "--arch", "tiny-mlp", "--out", str(out),
                    "--labels", "10", "--batch-size", "50", "--log-every", "1", "--eval-every", "2", *extra])


@pytest.fixture
def labelled_checkpoint(mnist_dir, tmp_path):
    code, _, stderr = _train_labelled(mnist_dir, tmp_path / "ssl", "--steps", "3", "--label-seed", "2")
    assert code == 0, stderr
    return tmp_path / "ssl" / "model.safetensors"


def test_train_labels_records_the_draw_semisup_makes_for_that_seed(mnist_dir, labelled_checkpoint):
    loaded = load_checkpoint(labelled_checkpoint)
    ds = open_dataset(f"mnist:{mnist_dir}")
    positions = labelled_draw(ds.labels[ds.indices("train")], 10, 2)
    assert loaded.config.n_classes == 10
    assert loaded.classifier["labelled"] == {**loaded.classifier["labelled"], "n": 10, "seed": 2,
                                             "indices_sha256": draw_hash(positions)}
    assert loaded.classifier["classes"] == [str(d) for d in range(10)]
    assert loaded.training["labelled"]["indices_sha256"] == draw_hash(positions)
    assert loaded.training["objective"]["feature_matching"] and loaded.training["objective"]["weight_norm"]
    assert "classifier_error" in loaded.metrics["validation"]
    # semisup's own runs name their draw with the same hash
    from halitool.semisup import evaluate

    x = np.random.default_rng(0).normal(size=(len(ds.indices("train")), 4))
    result = evaluate(x, ds.labels[ds.indices("train")], x[:20], ds.labels[ds.indices("train")][:20], n_labels=10,
                      protocol="linear", seeds=1, seed_base=2)
    assert result["runs"][0]["draw_sha256"] == draw_hash(positions)


def test_semi_supervised_training_never_reads_test_rows_and_reads_the_draw(mnist_dir, tmp_path, monkeypatch):
    from halitool import train as train_module

    read, opened = record_reads(monkeypatch, train_module)
    code, _, stderr = _train_labelled(mnist_dir, tmp_path / "run", "--steps", "6")
    assert code == 0, stderr
    ds = opened["ds"]
    assert read and not set(ds.indices("test").tolist()) & set(read)
    train_rows = ds.indices("train")
    drawn = set(train_rows[labelled_draw(ds.labels[train_rows], 10, 0)].tolist())
    assert drawn & set(read)  # labelled batches come from the draw (with replacement, so not all of it)


def test_classifier_section_round_trips_and_a_checkpoint_without_it_still_loads(tmp_path, tiny_checkpoint):
    model = build_model(ModelConfig(arch="tiny-mlp", n_classes=3, weight_norm=True, d_noise=0.5,
                                    feature_matching=True))
    section = {"classes": ["a", "b", "c"], "class_values": [0, 1, 2],
               "labelled": {"n": 3, "seed": 0, "indices_sha256": "0" * 64}}
    path = save_checkpoint(tmp_path / "ssl.safetensors", model, preprocessing={}, training={}, metrics={},
                           classifier=section)
    loaded = load_checkpoint(path)
    assert loaded.classifier == section
    x = torch.rand(5, 1, 28, 28)
    model.eval()
    assert torch.allclose(loaded.model.classify(x), model.classify(x), atol=1e-6)
    assert load_checkpoint(tiny_checkpoint).classifier is None
    with pytest.raises(BadInputError, match="no classifier section"):
        save_checkpoint(tmp_path / "bad.safetensors", model, preprocessing={}, training={}, metrics={})
    with pytest.raises(BadInputError, match="3 classes"):
        save_checkpoint(tmp_path / "bad.safetensors", model, preprocessing={}, training={}, metrics={},
                        classifier={**section, "classes": ["a"]})
    plain = load_checkpoint(tiny_checkpoint).model
    with pytest.raises(BadInputError, match="no class logits"):
        save_checkpoint(tmp_path / "bad.safetensors", plain, preprocessing={}, training={}, metrics={},
                        classifier=section)


def test_predict_writes_rows_in_data_set_order_and_reports_accuracy(mnist_dir, labelled_checkpoint, tmp_path):
    out = tmp_path / "preds.csv"
    code, stdout, stderr = run_cli(["predict", str(labelled_checkpoint), "--data", f"mnist:{mnist_dir}", "-o", str(out)])
    assert code == 0, stderr
    assert stdout == ""
    rows = list(csv.DictReader(out.open()))
    ds = open_dataset(f"mnist:{mnist_dir}")
    assert [int(r["sample_id"]) for r in rows] == ds.sample_ids[ds.indices("test")].tolist()
    probabilities = np.array([[float(r[f"p_{d}"]) for d in range(10)] for r in rows])
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert [r["class"] for r in rows] == [str(k) for k in probabilities.argmax(axis=1)]
    accuracy = np.mean([r["class"] == str(label) for r, label in zip(rows, ds.labels[ds.indices("test")])])
    assert f"accuracy {100 * accuracy:.2f} %" in stderr
    # an existing output is kept without --force; stdout gets the same rows
    code, _, stderr = run_cli(["predict", str(labelled_checkpoint), "--data", f"mnist:{mnist_dir}", "-o", str(out)])
    assert code == 2 and "already exists" in stderr
    code, stdout, _ = run_cli(["predict", str(labelled_checkpoint), "--data", f"mnist:{mnist_dir}"])
    assert code == 0 and stdout == out.read_text()


def test_predict_refuses_a_checkpoint_without_classifier(mnist_dir, tiny_checkpoint):
    code, stdout, stderr = run_cli(["predict", str(tiny_checkpoint), "--data", f"mnist:{mnist_dir}"])
    assert code == 3 and stdout == ""
    assert "has no classifier" in stderr and len(stderr.strip().splitlines()) == 1


def test_info_shows_the_classifier(labelled_checkpoint):
    code, stdout, stderr = run_cli(["info", str(labelled_checkpoint), "--format", "json"])
    assert code == 0, stderr
    assert json.loads(stdout)["classifier"]["labelled"]["seed"] == 2


def test_adversarial_protocol_evaluates_a_labelled_checkpoint_for_its_own_draw(mnist_dir, labelled_checkpoint):
    args = ["semisup", str(labelled_checkpoint), "--data", f"mnist:{mnist_dir}", "--protocol", "adversarial",
            "--labels", "10", "--format", "json"]
    code, stdout, stderr = run_cli([*args, "--seeds", "1", "--seed-base", "2"])
    assert code == 0, stderr
    result = json.loads(stdout)
    predicted = run_cli(["predict", str(labelled_checkpoint), "--data", f"mnist:{mnist_dir}"])[1]
    rows = list(csv.DictReader(io.StringIO(predicted)))
    ds = open_dataset(f"mnist:{mnist_dir}")
    error = 100 * np.mean([r["class"] != str(label) for r, label in zip(rows, ds.labels[ds.indices("test")])])
    assert result["protocol"] == "adversarial" and result["runs"][0]["seed"] == 2
    positions = labelled_draw(ds.labels[ds.indices("train")], 10, 2)
    assert result["runs"][0]["draw_sha256"] == draw_hash(positions)
    assert result["error_mean"] == pytest.approx(error)
    assert set(result) >= {"labels", "protocol", "classifier", "features", "error_mean", "error_std", "runs"}
    for wrong in (["--seeds", "1", "--seed-base", "0"], ["--seeds", "3", "--seed-base", "2"]):
        code, stdout, stderr = run_cli([*args, *wrong])
        assert code == 2 and stdout == ""
        assert "labelled draw" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = run_cli([*args[:-4], "--labels", "20", "--seeds", "1", "--seed-base", "2", "--format", "json"])
    assert code == 2 and len(stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_adversarial_protocol_reaches_zero_error_on_separated_clusters_with_ten_labels(tmp_path):
    root = write_clusters(tmp_path / "clusters")
    code, stdout, stderr = run_cli(["semisup", "--data", f"mnist:{root}", "--protocol", "adversarial", "--labels",
                                    "10", "--seeds", "1", "--epochs", "30", "--format", "json"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["error_mean"] == 0.0
    assert result["runs"][0]["train_seconds"] > 0 and result["runs"][0]["steps"] > 0


def test_semi_supervised_resume_with_ema_equals_the_uninterrupted_run(mnist_dir, tmp_path):
    from safetensors.torch import load_file

    assert _train_labelled(mnist_dir, tmp_path / "full", "--steps", "6", "--ema", "0.9")[0] == 0
    assert _train_labelled(mnist_dir, tmp_path / "part", "--steps", "3", "--ema", "0.9")[0] == 0
    code, _, stderr = _train_labelled(mnist_dir, tmp_path / "part", "--steps", "6", "--ema", "0.9", "--resume")
    assert code == 0, stderr
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    part = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert full.keys() == part.keys() and all(torch.equal(full[k], part[k]) for k in full)
    # the checkpoint holds the average, the training state the raw weights beside it
    state = load_file(str(tmp_path / "full" / "state.safetensors"))
    name = next(k for k in full if k.startswith("discriminator.") and full[k].is_floating_point())
    assert torch.equal(state[f"ema.{name}"], full[name]) and not torch.equal(state[f"model.{name}"], full[name])
    assert load_checkpoint(tmp_path / "full" / "model.safetensors").training["ema"]["decay"] == 0.9


def test_labels_on_a_data_set_without_labels_or_with_an_overlapping_validation_slice_are_refused(mnist_dir, tmp_path):
    code, _, stderr = _train_labelled(mnist_dir, tmp_path / "run", "--steps", "1", "--val-size", "100")
    assert code == 2 and "--val-size" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = _train_labelled(mnist_dir, tmp_path / "run", "--steps", "1", "--labels", "15")
    assert code == 2 and "multiple" in stderr


def _flat_discriminator_model(**levers):
    """A semi-supervised tiny-mlp model whose discriminator outputs zero logits for every class (last layer 0)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny-mlp", n_classes=4, **levers))
    last = model.discriminator.out[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return model


def test_semi_supervised_losses_by_hand_on_a_flat_discriminator():
    import math

    model = _flat_discriminator_model(entropy_weight=2.0)
    x, xl = torch.rand(6, 1, 28, 28), torch.rand(3, 1, 28, 28)
    out = model.losses(x, (xl, torch.tensor([0, 1, 3])))
    k = 4
    # every logit 0: the joint score is log K, the class prediction uniform
    assert torch.allclose(out["s_q.joint"], torch.full((6,), math.log(k)))
    assert out["ce"].item() == pytest.approx(math.log(k))
    assert out["entropy"].item() == pytest.approx(math.log(k))
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    ali = softplus(-math.log(k)) + softplus(math.log(k))  # ALI's discriminator loss at score log K
    assert out["d_loss"].item() == pytest.approx(math.log(k) + 0.5 * ali + 2.0 * math.log(k), rel=1e-5)
    assert out["class_logits"].shape == (3, k)
    with pytest.raises(ValueError, match="semi-supervised"):
        build_model(ModelConfig(arch="tiny-mlp")).losses(x, (xl, torch.tensor([0, 1, 3])))


def test_feature_matching_trains_the_decoders_on_features_and_the_encoders_adversarially():
    model = _flat_discriminator_model(feature_matching=True)
    out = model.losses(torch.rand(6, 1, 28, 28))
    assert set(out) >= {"fm", "adv"} and out["g_loss"].item() == pytest.approx((out["fm"] + out["adv"]).item())
    # the decoders' gradient comes from feature matching alone, the encoders' from their adversarial part
    enc = torch.autograd.grad(out["fm"], list(model.encoders.parameters()), allow_unused=True, retain_graph=True)
    dec = torch.autograd.grad(out["fm"], list(model.decoders.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in dec)
    assert all(g is None or g.abs().sum() == 0 for g in enc)


def test_level_dropout_zeroes_every_level_of_a_fraction_of_the_tuples(monkeypatch):
    model = _flat_discriminator_model(level_dropout=0.5)
    seen = {}
    original = model.discriminator.evaluate

    def recording(x, zs):
        seen["zs"] = zs
        return original(x, zs)

    monkeypatch.setattr(model.discriminator, "evaluate", recording)
    model.losses(torch.rand(400, 1, 28, 28))
    zeroed = torch.stack([z.flatten(1).abs().sum(dim=1) == 0 for z in seen["zs"]])
    assert torch.equal(zeroed[0], zeroed[1])  # a tuple loses all its levels or none
    assert 0.4 < zeroed[0].float().mean().item() < 0.6  # of 800 tuples (400 inference, 400 generative)
    with pytest.raises(BadInputError, match="level_dropout"):
        ModelConfig(arch="tiny-mlp", level_dropout=1.0)


def test_recalibrated_decoders_match_batch_statistics_and_leave_the_classifier_alone():
    from halitool.averaging import recalibrate_decoders

    # One level: the decoders see one reconstruction path, so their recalibrated statistics are its batch's.
    model = _flat_discriminator_model(n_levels=1)
    torch.nn.init.normal_(model.discriminator.out[-1].weight)  # a classifier whose outputs depend on the input
    model.train()
    x = torch.rand(400, 1, 28, 28)
    model.losses(x)  # a training pass: running statistics of a mix of generative and reconstruction batches
    for m in model.decoders.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.fill_(5.0)  # and make them plainly wrong
    model.eval()
    with torch.no_grad():
        logits = model.classify(x)
        recalibrate_decoders(model, x, batch_size=400)  # one batch: the average is that batch's statistics
        assert torch.equal(model.classify(x), logits)
        zs = model.encode(x)
        eval_recon = model.decode("z1", zs["z1"])
        for m in model.decoders.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.train()
        batch_recon = model.decode("z1", zs["z1"])
    assert torch.allclose(eval_recon, batch_recon, atol=1e-3)  # unbiased vs biased variance of 400 rows
