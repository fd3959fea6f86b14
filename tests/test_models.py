"""The HALI model: shapes for every registered architecture, the API, and ALI's losses by hand."""

from __future__ import annotations

import math

import pytest
import torch

from halitool.errors import BadInputError
from halitool.models import ARCHITECTURES, HALI, ModelConfig, build_model, discriminator_loss, generator_loss
from halitool.models.hali import reparameterise

CASES = [(arch, levels) for arch in sorted(ARCHITECTURES) for levels in range(1, len(ARCHITECTURES[arch].z_dims) + 2)]


@pytest.mark.parametrize("arch, levels", CASES)
def test_every_level_has_its_documented_shape(arch, levels):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, n_levels=levels)).eval()
    a = ARCHITECTURES[arch]
    assert model.image_shape == a.image_shape
    assert model.level_names == [f"z{i}" for i in range(1, levels + 1)]
    h, w = a.image_shape[1] // 4, a.image_shape[2] // 4  # two stride-2 convolutions in every registered conv arch
    z1 = (a.z1_channels,) if a.kind == "mlp" else (a.z1_channels, h, w)  # an mlp's levels are all vectors
    expected = {"z1": z1, **{f"z{i + 2}": (d,) for i, d in enumerate(a.z_dims[: levels - 1])}}
    assert model.level_shapes == expected
    n = 2
    x = torch.rand(n, *model.image_shape)
    with torch.no_grad():
        for mode in ("mean", "sample"):
            zs = model.encode(x, mode=mode)
            assert {k: tuple(v.shape[1:]) for k, v in zs.items()} == expected
            stats = model.encode_stats(x, mode=mode)
            assert {k: (tuple(m.shape[1:]), tuple(v.shape[1:])) for k, (m, v) in stats.items()} == \
                   {k: (s, s) for k, s in expected.items()}
        for level in model.level_names:
            y = model.reconstruct(x, level)
            assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
            assert model.decode(level, zs[level]).shape == x.shape
        samples = model.sample(3, generator=torch.Generator().manual_seed(1))
        assert samples.shape == (3, *model.image_shape)
        assert model.discriminate(x, zs).shape == (n,)
    counts = model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())


def test_encode_mean_feeds_means_upward_and_matches_encode_stats():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny", n_levels=3)).eval()
    x = torch.rand(4, *model.image_shape)
    with torch.no_grad():
        zs = model.encode(x, mode="mean")
        stats = model.encode_stats(x, mode="mean")
        for name in model.level_names:
            assert torch.equal(zs[name], stats[name][0])
        a = model.encode(x, mode="sample", generator=torch.Generator().manual_seed(5))
        b = model.encode(x, mode="sample", generator=torch.Generator().manual_seed(5))
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not torch.equal(a["z1"], zs["z1"])


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_ali_losses_match_a_hand_computation():
    s_q = torch.tensor([0.5, -1.0, 2.0])
    s_p = torch.tensor([-0.3, 1.5, 0.0])
    d = sum(_softplus(-q) + _softplus(p) for q, p in zip(s_q.tolist(), s_p.tolist())) / 3
    g = sum(_softplus(q) + _softplus(-p) for q, p in zip(s_q.tolist(), s_p.tolist())) / 3
    assert discriminator_loss(s_q, s_p).item() == pytest.approx(d, rel=1e-6)
    assert generator_loss(s_q, s_p).item() == pytest.approx(g, rel=1e-6)
    # At s = 0 both players are at log 4, the value of the game at the optimum.
    zero = torch.zeros(5)
    assert discriminator_loss(zero, zero).item() == pytest.approx(math.log(4), rel=1e-6)


def test_model_losses_on_a_fixed_batch_match_the_tuples_by_hand():
    torch.manual_seed(0)
    model: HALI = build_model(ModelConfig(arch="tiny", n_levels=2, recon_weight=0.5)).eval()  # eval: no dropout
    x = torch.rand(6, *model.image_shape)
    torch.manual_seed(123)
    with torch.no_grad():
        out = model.losses(x)
    # The same draws in the same order: z1, z2 from q, then z2 from the prior, then z1 from p(z1|z2).
    torch.manual_seed(123)
    with torch.no_grad():
        m1, v1 = model.encoders[0](x * 2 - 1)
        zq1 = reparameterise(m1, v1)
        m2, v2 = model.encoders[1](zq1)
        zq2 = reparameterise(m2, v2)
        zp2 = torch.randn(6, 8)
        mp1, vp1 = model.decoders[1](zp2)
        zp1 = reparameterise(mp1, vp1)
        xp = model.decoders[0](zp1)
        s_q = model.discriminate(x, {"z1": zq1, "z2": zq2}).tolist()
        s_p = model.discriminate(xp, {"z1": zp1, "z2": zp2}).tolist()
        recon = ((model.decoders[0](zq1) - x) ** 2).mean().item()
    d = sum(_softplus(-q) + _softplus(p) for q, p in zip(s_q, s_p)) / 6
    g = sum(_softplus(q) + _softplus(-p) for q, p in zip(s_q, s_p)) / 6
    assert out["d_loss"].item() == pytest.approx(d, rel=1e-5)
    assert out["recon"].item() == pytest.approx(recon, rel=1e-5)
    assert out["g_loss"].item() == pytest.approx(g + 0.5 * recon, rel=1e-5)


def test_initialisation_follows_ali():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mnist"))
    weight = model.discriminator.z1[1].weight
    assert weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert all(not m.bias.any() for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None)
    mean_image = torch.full(model.image_shape, 0.25)
    model.init_pixel_bias(mean_image)
    assert torch.allclose(model.decoders[0].pixel_bias, torch.full(model.image_shape, math.log(0.25 / 0.75)))


def test_config_round_trips_and_rejects_unknown_keys_and_bad_values():
    config = ModelConfig(arch="tiny", n_levels=3, recon_weight=2.0)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(BadInputError, match="unknown model config keys: colour"):
        ModelConfig.from_dict({**config.to_dict(), "colour": 1})
    with pytest.raises(BadInputError, match="unknown architecture"):
        ModelConfig(arch="resnet")
    with pytest.raises(BadInputError, match="1 to 16 levels"):
        ModelConfig(arch="tiny", n_levels=17)
    with pytest.raises(BadInputError, match="z_dims must be 2 positive integers"):
        ModelConfig(arch="tiny", n_levels=3, z_dims=(8,))
    with pytest.raises(BadInputError, match="z_dims"):
        ModelConfig(arch="tiny", n_levels=2, z_dims=(0,))
    with pytest.raises(BadInputError):
        ModelConfig(arch="tiny", recon_weight=-1)


def test_level_widths_follow_the_rule_unless_given_and_a_checkpoint_config_records_them():
    from halitool.models.config import default_z_dims

    mnist = ARCHITECTURES["mnist"]
    assert default_z_dims(mnist, 1) == ()
    assert default_z_dims(mnist, 3) == mnist.z_dims == (64, 32)
    assert default_z_dims(mnist, 6) == (64, 32, 16, 8, 8)  # halved, floored at 8
    assert default_z_dims(ARCHITECTURES["tiny-mlp"], 5) == (4, 4, 4, 4)  # never wider than the last listed
    config = ModelConfig(arch="tiny", n_levels=4)
    assert config.z_dims == (8, 4, 4) and config.to_dict()["z_dims"] == [8, 4, 4]  # as JSON reads it back
    given = ModelConfig(arch="tiny", n_levels=3, z_dims=[5, 3])  # a JSON list
    assert given.z_dims == (5, 3) and ModelConfig.from_dict(given.to_dict()) == given
    # A config of a checkpoint written before the widths were recorded rebuilds the architecture's widths.
    old = {k: v for k, v in ModelConfig(arch="tiny", n_levels=3).to_dict().items() if k != "z_dims"}
    assert ModelConfig.from_dict(old).z_dims == (8, 4)


@pytest.mark.parametrize("arch", ["tiny", "tiny-mlp"])
def test_a_twelve_level_hierarchy_encodes_decodes_and_trains(arch):
    torch.manual_seed(0)
    widths = tuple(range(12, 1, -1))  # z2 .. z12: 12, 11, ..., 2
    model = build_model(ModelConfig(arch=arch, n_levels=12, z_dims=widths, recon_weight=1.0, recon2_weight=1.0,
                                    cycle_weight=1.0, unary_scores=True))
    assert model.level_names == [f"z{i}" for i in range(1, 13)]
    assert [model.level_shapes[f"z{i}"] for i in range(2, 13)] == [(d,) for d in widths]
    x = torch.rand(4, *model.image_shape)
    out = model.losses(x)
    (out["d_loss"] + out["g_loss"]).backward()
    assert all(p.grad is not None for p in model.encoders[-1].parameters())  # the top level is in the game
    model.eval()
    with torch.no_grad():
        zs = model.encode(x)
        for level in model.level_names:
            assert model.reconstruct(x, level).shape == x.shape
        assert model.sample(3).shape == (3, *model.image_shape)
        assert model.discriminate(x, zs).shape == (4,)


@pytest.mark.parametrize("levels", [2, 3])
def test_inference_copy_keeps_latents_and_leaves_the_model_alone(levels):
    from torch import nn

    from halitool.models.hali import _FullExtentLinear, inference_copy

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mnist", n_levels=levels))
    model.train()
    for _ in range(3):  # give batch norm non-trivial running statistics
        model.encode(torch.rand(32, 1, 28, 28))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_copy(model)
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        want, got = model.encode_stats(x), fast.encode_stats(x)
        want_sample = model.encode(x, "sample", torch.Generator().manual_seed(1))
        got_sample = fast.encode(x, "sample", torch.Generator().manual_seed(1))
    for name in want:
        for w, g in zip(want[name], got[name]):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_sample[name], want_sample[name], rtol=1e-5, atol=1e-5)
    fast_layers = list(fast.encoders.modules())
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in fast_layers)
    assert any(isinstance(m, _FullExtentLinear) for m in fast_layers)  # z2's 7x7 conv over the 7x7 z1 map
    assert any(isinstance(m, nn.LeakyReLU) and m.inplace for m in fast_layers)
    # the original keeps its layers and weights; the copy shares only the untouched decoders and discriminator
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.encoders.modules())
    assert not any(isinstance(m, nn.LeakyReLU) and m.inplace for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert fast.decoders is model.decoders and fast.encoders is not model.encoders
