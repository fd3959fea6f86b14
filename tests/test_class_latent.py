"""A partially specified top level: --class-latent K (y, style), cluster accuracy, halitool cluster, sample --class."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from halitool.checkpoint import load_checkpoint
from halitool.clustering import cluster_accuracy
from halitool.errors import BadInputError
from halitool.models import ModelConfig, build_model
from helpers import run_cli


# ------------------------------------------------------------------------------------------ cluster accuracy
def test_cluster_accuracy_matches_renamed_clusters_to_their_classes():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    renamed = np.array([5, 5, 3, 3, 9, 9, 9])  # the same partition under other names
    accuracy, mapping = cluster_accuracy(renamed, labels)
    assert accuracy == 1.0 and mapping == {3: 1, 5: 0, 9: 2}


def test_cluster_accuracy_is_the_best_one_to_one_matching_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    # cluster 0 holds classes 0,0,1; cluster 1 holds 0,1,1,2; cluster 2 holds 2. Best matching: 0->0 (2),
    # 1->1 (2), 2->2 (1) = 5 of 8; every other matching scores less (e.g. 0->1, 1->0: 1 + 1 + 1).
    clusters = np.array([0, 0, 1, 0, 1, 1, 1, 2])
    accuracy, mapping = cluster_accuracy(clusters, labels)
    assert accuracy == pytest.approx(5 / 8) and mapping == {0: 0, 1: 1, 2: 2}
    # One cluster for everything: only its best class counts.
    assert cluster_accuracy(np.zeros(8, dtype=int), labels)[0] == pytest.approx(3 / 8)
    # More clusters than classes: an unmatched cluster's images are errors.
    assert cluster_accuracy(np.arange(8), labels)[0] == pytest.approx(3 / 8)
    with pytest.raises(ValueError):
        cluster_accuracy(np.zeros(3), labels)


# ----------------------------------------------------------------------------------------------- the model
def test_class_latent_config_is_checked():
    with pytest.raises(BadInputError, match="2 levels or more"):
        ModelConfig(arch="tiny", n_levels=1, class_latent=3)
    with pytest.raises(BadInputError, match="cannot both"):
        ModelConfig(arch="tiny", class_latent=3, n_classes=3)
    with pytest.raises(BadInputError, match="at least 2"):
        ModelConfig(arch="tiny", class_latent=1)
    config = ModelConfig(arch="tiny", n_levels=3, class_latent=4)
    assert config.level_widths == (8, 4 + 4) and ModelConfig.from_dict(config.to_dict()) == config
    old = {k: v for k, v in ModelConfig(arch="tiny").to_dict().items() if k != "class_latent"}
    assert ModelConfig.from_dict(old).class_latent == 0  # checkpoints from before the field load unchanged


@pytest.mark.parametrize("arch", ["tiny", "tiny-mlp"])
def test_top_level_is_class_probabilities_then_style_and_samples_are_one_hot(arch):
    torch.manual_seed(0)
    k = 4
    model = build_model(ModelConfig(arch=arch, n_levels=2, class_latent=k)).eval()
    style = model.config.z_dims[-1]
    assert model.level_shapes["z2"] == (k + style,)
    x = torch.rand(6, *model.image_shape)
    with torch.no_grad():
        mean, logvar = model.encode_stats(x)["z2"]
        p = model.class_probabilities(x)
        assert torch.allclose(p.sum(dim=1), torch.ones(6)) and torch.equal(p, mean[:, :k])
        assert torch.allclose(logvar[:, :k], (p * (1 - p)).clamp(min=1e-8).log())
        drawn = model.encode(x, mode="sample")["z2"][:, :k]
        assert torch.equal(drawn.sum(dim=1), torch.ones(6)) and set(drawn.unique().tolist()) <= {0.0, 1.0}
        prior = model.sample_prior(5, classes=torch.tensor([3, 0, 1, 2, 3]))
        assert prior[:, :k].argmax(dim=1).tolist() == [3, 0, 1, 2, 3] and prior.shape == (5, k + style)
        assert torch.allclose(model.classify(x).exp(), p, atol=1e-6)


def test_a_drawn_class_passes_its_gradient_straight_through_to_the_probabilities():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny-mlp", n_levels=2, class_latent=3))
    x = torch.rand(5, *model.image_shape)
    top = model.encode(x, mode="sample")["z2"]
    (top[:, :3] * torch.tensor([1.0, 2.0, 3.0])).sum().backward()  # weighted: a plain sum of probabilities is 1
    assert model.encoders[1].net[0].weight.grad.abs().sum() > 0


def test_labelled_images_teach_the_top_encoder_and_the_cycle_recovers_the_drawn_class():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny-mlp", n_levels=2, class_latent=3, cycle_weight=1.0))
    x, xl, yl = torch.rand(6, 1, 28, 28), torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 0])
    out = model.losses(x, (xl, yl))
    assert "ce" in out and "class_logits" not in out
    # ce is the top encoder's: the discriminator gets no gradient from it.
    d_grads = torch.autograd.grad(out["ce"], list(model.discriminator.parameters()), allow_unused=True)
    assert all(g is None for g in d_grads)
    g = torch.autograd.grad(out["ce"], list(model.encoders[1].parameters()), allow_unused=True)
    assert any(t is not None and t.abs().sum() > 0 for t in g)

def test_the_cycle_is_the_style_mse_plus_the_cross_entropy_of_the_drawn_class(monkeypatch):
    torch.manual_seed(0)
    k = 3
    model = build_model(ModelConfig(arch="tiny-mlp", n_levels=2, class_latent=k, cycle_weight=1.0))
    generated = {}
    decode_levels = model.decode_levels

    def recording(*args, **kwargs):
        generated["x"], generated["z"] = out = decode_levels(*args, **kwargs)
        return out

    monkeypatch.setattr(model, "decode_levels", recording)
    out = model.losses(torch.rand(6, 1, 28, 28))
    z_drawn = generated["z"]["z2"].detach()
    z_hat = model.encode(generated["x"].detach())["z2"].detach()  # train mode, the same batch: the same values
    expected = torch.nn.functional.mse_loss(z_hat[:, k:], z_drawn[:, k:]) \
        - torch.log(z_hat[torch.arange(6), z_drawn[:, :k].argmax(dim=1)]).mean()
    assert float(out["cycle"].detach()) == pytest.approx(float(expected), rel=1e-5)


def test_imsat_information_term_is_conditional_minus_four_marginal_entropies_by_hand():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny-mlp", n_levels=2, class_latent=3, imsat_weight=1.0)).eval()
    x = torch.rand(8, 1, 28, 28)
    vat, information = model.imsat_terms(x)
    p = model.class_probabilities(x).detach().double().numpy()
    conditional = -(p * np.log(p)).sum(axis=1).mean()
    marginal = p.mean(axis=0)
    assert float(information.detach()) == pytest.approx(conditional + 4 * (marginal * np.log(marginal)).sum(), rel=1e-5)
    assert float(vat) == 0.0  # no radius: the smoothness term is off


def test_imsat_virtual_adversarial_direction_moves_q_more_than_random_ones():
    torch.manual_seed(0)
    eps = 0.5
    model = build_model(ModelConfig(arch="tiny-mlp", n_levels=2, class_latent=4, imsat_weight=1.0,
                                    vat_eps=eps)).eval()
    with torch.no_grad():  # larger weights than the initialisation's, so q(y | x) is not flat
        for layer in model.encoders.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(5)
    x = torch.rand(16, 1, 28, 28)
    vat, _ = model.imsat_terms(x)
    p = model.class_probabilities(x).detach()

    def kl(r):
        q = model.class_probabilities(x + r).detach()
        return float((p * (p.clamp(min=1e-12).log() - q.clamp(min=1e-12).log())).sum(dim=1).mean())

    random_kls = []
    for _ in range(20):
        r = torch.randn_like(x)
        random_kls.append(kl(eps * r / r.flatten(1).norm(dim=1).view(-1, 1, 1, 1)))
    assert float(vat) > 0 and float(vat) > 3 * max(random_kls)


def test_imsat_trains_the_encoders_only_and_checks_its_model():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny-mlp", n_levels=2, class_latent=3, imsat_weight=1.0, vat_eps=1.0))
    out = model.losses(torch.rand(6, 1, 28, 28))
    assert {"vat", "information"} <= set(out)
    terms = out["vat"] + out["information"]
    for part, reached in ((model.encoders, True), (model.decoders, False), (model.discriminator, False)):
        grads = torch.autograd.grad(terms, list(part.parameters()), allow_unused=True, retain_graph=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads) == reached
    with pytest.raises(BadInputError, match="class latent"):
        ModelConfig(arch="tiny-mlp", n_levels=2, imsat_weight=1.0)
    old = {k: v for k, v in ModelConfig(arch="tiny").to_dict().items() if k not in ("imsat_weight", "vat_eps")}
    assert ModelConfig.from_dict(old) == ModelConfig(arch="tiny")  # checkpoints from before the levers

# ------------------------------------------------------------------------------------------ the commands
def _train(mnist_dir, out, *extra):
    return run_cli(["train", "--data", f"mnist:{mnist_dir}", "--arch", "tiny-mlp", "--out", str(out),
                    "--class-latent", "10", "--batch-size", "50", "--steps", "3", "--log-every", "1",
                    "--eval-every", "3", *extra])


def test_unsupervised_class_latent_trains_clusters_and_samples_one_class(mnist_dir, tmp_path):
    code, _, stderr = _train(mnist_dir, tmp_path / "run", "--objective", "clustering")
    assert code == 0, stderr
    ckpt = tmp_path / "run" / "model.safetensors"
    loaded = load_checkpoint(ckpt)
    assert loaded.config.class_latent == 10 and loaded.classifier is None and loaded.config.n_classes == 0
    assert "cluster_accuracy" in loaded.metrics["validation"]
    # The preset: the recommended levers, no higher-level pixel reconstruction, IMSAT on q(y | x).
    assert (loaded.config.imsat_weight, loaded.config.vat_eps, loaded.config.recon2_weight) == (10.0, 2.0, 0.0)
    assert loaded.config.spectral_norm and loaded.config.recon_weight == 100.0
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(row["vat"] >= 0 and row["information"] < 0 for row in logged if "vat" in row) \
        and any("vat" in row for row in logged)
    code, stdout, stderr = run_cli(["cluster", str(ckpt), "--data", f"mnist:{mnist_dir}", "--format", "json"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["command"] == "cluster" and result["n_images"] == 50 and result["clusters"] == 10
    assert sum(result["cluster_sizes"]) == 50 and result["classifier_error"] is None
    assert 10.0 <= result["cluster_accuracy"] <= 100.0  # at least the largest class's share (5 of 50)
    # The matching's accuracy, recomputed from the model's own assignments.
    from halitool.data import open_dataset
    from halitool.predict import class_probabilities

    ds = open_dataset(f"mnist:{mnist_dir}")
    rows = ds.indices("test")
    assigned = class_probabilities(loaded.model, ds, rows).argmax(axis=1)
    assert result["cluster_accuracy"] == pytest.approx(100 * cluster_accuracy(assigned, ds.labels[rows])[0])
    code, stdout, stderr = run_cli(["sample", str(ckpt), "--class", "3", "-n", "4", "-o", str(tmp_path / "s.png"),
                                    "--format", "json"])
    assert code == 0, stderr
    assert json.loads(stdout)["class"] == 3
    code, _, stderr = run_cli(["sample", str(ckpt), "--class", "10", "-o", str(tmp_path / "t.png")])
    assert code == 2 and "0 to 9" in stderr and not (tmp_path / "t.png").exists()


def test_labelled_class_latent_has_a_classifier_section_predict_and_cluster_use(mnist_dir, tmp_path):
    code, _, stderr = _train(mnist_dir, tmp_path / "ssl", "--labels", "10")
    assert code == 0, stderr
    ckpt = tmp_path / "ssl" / "model.safetensors"
    loaded = load_checkpoint(ckpt)
    assert loaded.config.class_latent == 10 and loaded.config.n_classes == 0
    assert loaded.classifier["labelled"]["n"] == 10
    assert loaded.config.objective["feature_matching"] is False  # the recommended levers, not the D-classifier's
    code, stdout, stderr = run_cli(["cluster", str(ckpt), "--data", f"mnist:{mnist_dir}", "--format", "json"])
    assert code == 0, stderr
    result = json.loads(stdout)
    code, csv_text, stderr = run_cli(["predict", str(ckpt), "--data", f"mnist:{mnist_dir}"])
    assert code == 0, stderr
    predicted = [line.split(",")[1] for line in csv_text.splitlines()[1:]]
    from halitool.data import open_dataset

    ds = open_dataset(f"mnist:{mnist_dir}")
    labels = ds.labels[ds.indices("test")]
    error = 100 * np.mean(np.array(predicted, dtype=int) != labels)
    assert result["classifier_error"] == pytest.approx(error)
    # semisup's adversarial protocol evaluates it for its own draw, beside the other protocols.
    code, stdout, stderr = run_cli(["semisup", str(ckpt), "--data", f"mnist:{mnist_dir}", "--protocol", "adversarial",
                                    "--labels", "10", "--seeds", "1", "--seed-base", "0", "--format", "json"])
    assert code == 0, stderr
    semisup = json.loads(stdout)
    assert semisup["runs"][0]["error"] == pytest.approx(error)
    assert "q(y | x)" in semisup["classifier"] and "discriminator" not in semisup["classifier"]


def test_class_latent_usage_errors(mnist_dir, tmp_path, tiny_checkpoint):
    code, _, stderr = run_cli(["train", "--data", f"mnist:{mnist_dir}", "--arch", "tiny-mlp", "--steps", "1",
                               "--imsat-weight", "1", "--out", str(tmp_path / "i")])
    assert code == 2 and "--imsat-weight" in stderr and "--class-latent" in stderr
    assert not (tmp_path / "i").exists()
    code, _, stderr = run_cli(["train", "--data", f"mnist:{mnist_dir}", "--arch", "tiny-mlp", "--steps", "1",
                               "--objective", "clustering", "--out", str(tmp_path / "j")])
    assert code == 2 and "--objective clustering" in stderr and not (tmp_path / "j").exists()
    code, _, stderr = _train(mnist_dir, tmp_path / "a", "--n-levels", "1")
    assert code == 2 and "--n-levels 2 or more" in stderr
    code, _, stderr = _train(mnist_dir, tmp_path / "b", "--labels", "10", "--class-latent", "3")
    assert code == 2 and "10 classes" in stderr
    code, _, stderr = run_cli(["cluster", str(tiny_checkpoint), "--data", f"mnist:{mnist_dir}"])
    assert code == 3 and "no class latent" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = run_cli(["sample", str(tiny_checkpoint), "--class", "0", "-o", str(tmp_path / "c.png")])
    assert code == 2 and "no class latent" in stderr


def test_a_run_from_before_class_latent_resumes(mnist_dir, tmp_path):
    """state.json written before an option existed lacks its key; resuming takes the option's default."""
    out = tmp_path / "old"
    args = ["train", "--data", f"mnist:{mnist_dir}", "--arch", "tiny-mlp", "--out", str(out), "--batch-size", "50",
            "--log-every", "1", "--eval-every", "2", "--checkpoint-every", "2"]
    assert run_cli([*args, "--steps", "2"])[0] == 0
    state = json.loads((out / "state.json").read_text())
    for key in ("class_latent", "z_dims"):
        del state["options"][key]
    (out / "state.json").write_text(json.dumps(state))
    code, _, stderr = run_cli([*args, "--steps", "3", "--resume"])
    assert code == 0, stderr
