"""The training objective's levers: each term against a hand computation, which weights each term moves, the
collapse indicator, and checkpoints written before the levers existed."""

from __future__ import annotations

import json

import pytest
import torch

from halitool.checkpoint import load_checkpoint, save_checkpoint
from halitool.errors import BadInputError
from halitool.models import HALI, ModelConfig, build_model
from halitool.models.config import LEGACY, PAPER_OBJECTIVE, RECOMMENDED_OBJECTIVE
from halitool.models.hali import collapse_indicator, r1_penalty, reparameterise

ALL_LEVERS = {"spectral_norm": True, "unary_scores": True, "instance_noise": 0.1, "r1_weight": 2.0,
              "recon_weight": 3.0, "recon2_weight": 5.0, "cycle_weight": 7.0}


def _softplus(v: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(v))


def test_r1_penalty_of_a_linear_score_is_the_squared_norm_of_its_weights():
    w1, w2 = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.0])
    x = torch.randn(4, 3, requires_grad=True)
    z = torch.randn(4, 2, requires_grad=True)
    scores = x @ w1 + z @ w2  # d score / d (x, z) = (w1, w2) for every row
    penalty = r1_penalty(scores.sum(), [x, z])
    assert penalty.item() == pytest.approx(1 + 4 + 0.25 + 9, rel=1e-6)
    # Quadratic score x^2: gradient 2x per row, penalty mean(4 x^2).
    x = torch.tensor([[1.0], [2.0]], requires_grad=True)
    assert r1_penalty((x ** 2).sum(), [x]).item() == pytest.approx((4 * 1 + 4 * 4) / 2)


def test_collapse_indicator_by_hand():
    mean = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # per-dimension std across the batch: sqrt(2) each
    logvar = torch.log(torch.tensor([[0.25, 0.25], [0.25, 0.25]]))  # std 0.5
    spread, std = collapse_indicator(mean, logvar)
    assert spread == pytest.approx(2 ** 0.5, rel=1e-6) and std == pytest.approx(0.5, rel=1e-6)


def test_collapse_indicator_is_zero_for_an_encoder_that_ignores_its_input_and_large_otherwise():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny", n_levels=2)).eval()
    convs = [m for m in model.encoders[0].modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for m in convs:  # a working encoder: weights of a usual scale ...
            torch.nn.init.normal_(m.weight, 0, 0.5)
        convs[-1].weight[convs[-1].out_channels // 2:].zero_()  # ... and logvar 0: posterior std 1
    x = torch.rand(32, *model.image_shape)
    with torch.no_grad():
        spread, std = collapse_indicator(*model.encode_stats(x)["z1"])
    assert spread > 0.5 * std
    ignoring = model.encoders[0].net[0]  # the first convolution: zero weights, so q(z1|x) is the same for every x
    with torch.no_grad():
        ignoring.weight.zero_()
        spread, std = collapse_indicator(*model.encode_stats(x)["z1"])
    assert spread < 1e-6 and std > 0.1


@pytest.mark.slow
def test_every_term_of_the_objective_matches_a_hand_computation():
    torch.manual_seed(0)
    config = ModelConfig(arch="tiny", n_levels=2, **{**ALL_LEVERS, "spectral_norm": False})
    model: HALI = build_model(config).eval()  # eval: no dropout, batch norm on running statistics
    x = torch.rand(6, *model.image_shape)
    torch.manual_seed(123)
    out = model.losses(x)
    # The same draws in the same order: z1, z2 from q, z2 from the prior, z1 from p(z1|z2), instance noise.
    torch.manual_seed(123)
    m1, v1 = model.encoders[0](x * 2 - 1)
    zq1 = reparameterise(m1, v1)
    m2, v2 = model.encoders[1](zq1)
    zq2 = reparameterise(m2, v2)
    zp2 = torch.randn(6, 8)
    mp1, vp1 = model.decoders[1](zp2)
    zp1 = reparameterise(mp1, vp1)
    xp = model.decoders[0](zp1)
    x_all = torch.cat([x, xp]) * 2 - 1
    x_all = x_all + 0.1 * torch.randn_like(x_all)
    z_all = [torch.cat([zq1, zp1]), torch.cat([zq2, zp2])]
    scores = model.discriminator.scores(x_all, z_all)
    assert set(scores) == {"joint", "x", "z1", "z2"}
    d = sum((_softplus(-s[:6]) + _softplus(s[6:])).mean() for s in scores.values())
    adv = sum((_softplus(s[:6]) + _softplus(-s[6:])).mean() for s in scores.values())
    # R1 by finite differences of the summed scores (no autograd in the hand computation).
    inputs = [x_all[:6].detach(), z_all[0][:6].detach(), z_all[1][:6].detach()]
    r1 = _finite_difference_r1(model, inputs)
    recon = ((model.decoders[0](zq1) - x) ** 2).mean()
    mean_z1, _ = model.decoders[1](zq2)
    recon2 = ((model.decoders[0](mean_z1) - x) ** 2).mean()
    top, _ = model.encoders[1](model.encoders[0](xp * 2 - 1)[0])
    cycle = ((top - zp2) ** 2).mean()
    assert out["adv"].item() == pytest.approx(adv.item(), rel=1e-5)
    assert out["recon"].item() == pytest.approx(recon.item(), rel=1e-5)
    assert out["recon2"].item() == pytest.approx(recon2.item(), rel=1e-5)
    assert out["cycle"].item() == pytest.approx(cycle.item(), rel=1e-5)
    assert out["r1"].item() == pytest.approx(r1, rel=2e-2)
    assert out["d_loss"].item() == pytest.approx(d.item() + 0.5 * 2.0 * out["r1"].item(), rel=1e-5)
    expected_g = adv + 3.0 * recon + 5.0 * recon2 + 7.0 * cycle
    assert out["g_loss"].item() == pytest.approx(expected_g.item(), rel=1e-5)


def _finite_difference_r1(model: HALI, inputs: list[torch.Tensor], eps: float = 1e-2) -> float:
    """mean over rows of ||d(sum of scores)/d inputs||^2 by central differences, in float64."""
    disc = model.discriminator.double()
    inputs = [t.double() for t in inputs]

    def total(ts):
        return sum(v.sum() for v in disc.scores(ts[0], ts[1:]).values()).item()

    squared = 0.0
    with torch.no_grad():
        for k, t in enumerate(inputs):
            flat = t.reshape(-1)
            for j in range(flat.numel()):
                saved = flat[j].item()
                flat[j] = saved + eps
                up = total(inputs)
                flat[j] = saved - eps
                down = total(inputs)
                flat[j] = saved
                squared += ((up - down) / (2 * eps)) ** 2
    disc.float()
    return squared / inputs[0].shape[0]


def _grads(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[bool]:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [g is not None and bool(g.abs().sum() > 0) for g in grads]


def test_each_term_moves_the_weights_it_should_and_no_others():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny", n_levels=2, **ALL_LEVERS)).train()
    out = model.losses(torch.rand(8, *model.image_shape))
    d_params = list(model.discriminator.parameters())
    g_params = model.generator_parameters()
    encoder_params = list(model.encoders.parameters())
    pixel_decoder = list(model.decoders[0].parameters())
    z1_decoder = list(model.decoders[1].parameters())
    # Reconstruction and cycle terms train the encoders and decoders, never the discriminator.
    for name in ("recon", "recon2", "cycle"):
        assert not any(_grads(out[name], d_params)), name
    assert any(_grads(out["recon"], encoder_params)) and all(_grads(out["recon"], [pixel_decoder[-1]]))
    assert not any(_grads(out["recon"], z1_decoder))  # level 1 does not go through p(z1|z2)
    assert any(_grads(out["recon2"], z1_decoder)) and any(_grads(out["recon2"], list(model.encoders[1].parameters())))
    assert any(_grads(out["cycle"], z1_decoder)) and any(_grads(out["cycle"], encoder_params))
    # R1 trains the discriminator only (its inputs are detached from the encoders).
    assert not any(_grads(out["r1"], g_params)) and any(_grads(out["r1"], d_params))
    # Every unary head gets a gradient from the discriminator's loss.
    for head in (model.discriminator.unary_x, model.discriminator.unary_z1, *model.discriminator.unary_z):
        assert any(_grads(out["d_loss"], list(head.parameters())))


def test_spectral_norm_bounds_every_discriminator_layer():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny", n_levels=2, spectral_norm=True)).train()
    for _ in range(30):  # power iterations run in training mode
        model.discriminator.scores(torch.rand(4, 1, 28, 28), [torch.randn(4, 2, 7, 7), torch.randn(4, 8)])
    linears = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(hasattr(m, "parametrizations") for m in linears)
    for m in linears:
        assert torch.linalg.matrix_norm(m.weight.detach(), ord=2).item() == pytest.approx(1.0, rel=0.05)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.discriminator.modules())


def test_paper_objective_is_all_levers_off_and_recommended_turns_some_on():
    assert ModelConfig(arch="tiny").objective == PAPER_OBJECTIVE
    assert set(RECOMMENDED_OBJECTIVE) == set(PAPER_OBJECTIVE) == (set(LEGACY) - {"n_classes", "z_dims", "class_latent"}) | {"recon_weight"}
    assert RECOMMENDED_OBJECTIVE != PAPER_OBJECTIVE
    with pytest.raises(BadInputError, match="cycle_weight"):
        ModelConfig(arch="tiny", cycle_weight=-1.0)
    with pytest.raises(BadInputError, match="spectral_norm"):
        ModelConfig(arch="tiny", spectral_norm=1)


def test_a_checkpoint_written_before_the_levers_loads_as_it_was(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny", n_levels=2, recon_weight=5.0)).eval()
    path = save_checkpoint(tmp_path / "old.safetensors", model, preprocessing={}, training={}, metrics={})
    _rewrite_config(path, lambda config: {k: v for k, v in config.items() if k not in LEGACY})
    loaded = load_checkpoint(path)
    assert loaded.config == ModelConfig(arch="tiny", n_levels=2, recon_weight=5.0)
    x = torch.rand(3, *model.image_shape)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode(x)["z2"], model.encode(x)["z2"])


def test_a_checkpoint_whose_tensors_do_not_match_its_config_is_exit_3(tmp_path):
    from helpers import run_cli

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny", n_levels=2)).eval()
    path = save_checkpoint(tmp_path / "old.safetensors", model, preprocessing={}, training={}, metrics={})
    # A config that claims a lever the tensors were not trained with (spectral norm renames D's weights).
    _rewrite_config(path, lambda config: {**config, "spectral_norm": True})
    code, _, stderr = run_cli(["info", str(path)])
    assert code == 3 and "do not match" in stderr and str(path) in stderr


def _rewrite_config(path, change) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    metadata["config"] = json.dumps(change(json.loads(metadata["config"])))
    save_file(tensors, str(path), metadata=metadata)


def test_levers_that_are_off_add_no_terms():
    model = build_model(ModelConfig(arch="tiny", n_levels=2)).train()
    out = model.losses(torch.rand(4, *model.image_shape))
    assert not {"recon", "recon2", "cycle", "r1"} & set(out)
    assert {"s_q.joint", "s_p.joint", "posterior.z1", "posterior.z2"} <= set(out)
    assert torch.isfinite(out["d_loss"]) and torch.isfinite(out["g_loss"])


def test_few_label_linear_error_is_zero_for_separable_classes_and_chance_for_noise():
    import numpy as np

    from halitool.validation import few_label_linear_error

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 50)
    separable = np.eye(10)[labels] * 5 + rng.normal(0, 0.1, (500, 10))
    assert few_label_linear_error(separable, labels) == 0.0
    noise = rng.normal(size=(500, 10))
    assert few_label_linear_error(noise, labels) > 0.75  # chance is 0.9
    assert few_label_linear_error(noise, labels, seed=1) != few_label_linear_error(noise, labels, seed=2)
    ten_each = np.arange(100) % 10
    assert few_label_linear_error(noise[:100], ten_each) is None  # 10 per class leaves none to score
