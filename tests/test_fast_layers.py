"""The faster CPU training layers of halitool.models.hali against torch's own layers: the same losses and
gradients for the whole training step (known answer: the model built from torch's stock layers, in the NCHW
layout), and each faster path on its own, with the layout it promises."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from halitool.models import ModelConfig, build_model, hali
from halitool.models.config import (ARCHITECTURES, PAPER_OBJECTIVE, RECOMMENDED_OBJECTIVE, SEMI_SUPERVISED_OBJECTIVE,
                                    Architecture)

STOCK = {"Conv2d": nn.Conv2d, "ConvTranspose2d": nn.ConvTranspose2d, "Dropout": nn.Dropout, "LeakyReLU": nn.LeakyReLU,
         "Flatten": nn.Flatten}

# A 3-channel conv architecture with a level below z1's map (covers the stride-2 path down, a valid 2x2
# convolution and the transposed convolution from 1x1 that a 1-channel "tiny" does not have).
TINY_RGB = Architecture(name="tiny-rgb-test", image_shape=(3, 16, 16), x_widths=(4, 8), z1_channels=2,
                        down_widths=(4,), hidden=8, z_dims=(4,), d_z1_widths=(4,), d_hidden=8)

NOISY = {**RECOMMENDED_OBJECTIVE, "instance_noise": 0.2, "d_noise": 0.3, "r1_weight": 1.0, "level_dropout": 0.25}
CASES = [
    ("tiny", RECOMMENDED_OBJECTIVE, 0),
    ("tiny", NOISY, 0),
    ("tiny", SEMI_SUPERVISED_OBJECTIVE, 3),
    ("tiny-rgb-test", RECOMMENDED_OBJECTIVE, 0),
    ("tiny-rgb-test", {**PAPER_OBJECTIVE, "d_noise": 0.3, "instance_noise": 0.1}, 0),
    ("tiny-mlp", SEMI_SUPERVISED_OBJECTIVE, 3),
]


@pytest.fixture
def tiny_rgb(monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, TINY_RGB.name, TINY_RGB)


def _stock_layers(monkeypatch):
    """Build (and run) models from torch's own layers, with no channels-last pass."""
    for name, layer in STOCK.items():
        monkeypatch.setattr(hali, name, layer)
    monkeypatch.setattr(hali, "_cpu_training_pass", lambda module, x: False)


def _step(arch: str, objective: dict, n_classes: int, dtype: torch.dtype, n_levels: int = 2):
    """One training step's losses and both players' gradients, as halitool.train's _update takes them."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the prior's draws too
    try:
        return _step_in_default_dtype(arch, objective, n_classes, dtype, n_levels)
    finally:
        torch.set_default_dtype(before)


def _step_in_default_dtype(arch: str, objective: dict, n_classes: int, dtype: torch.dtype, n_levels: int):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, n_levels=n_levels, n_classes=n_classes, **objective)).to(dtype).train()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(6, *model.image_shape, generator=gen, dtype=dtype)
    labelled = ((torch.rand(4, *model.image_shape, generator=gen, dtype=dtype), torch.tensor([0, 1, 2, 1]))
                if n_classes else None)
    torch.manual_seed(123)
    losses = model.losses(x, labelled)
    d_params, g_params = list(model.discriminator.parameters()), model.generator_parameters()
    d_grads = torch.autograd.grad(losses["d_loss"], d_params, retain_graph=True)
    g_grads = torch.autograd.grad(losses["g_loss"], g_params)
    values = {}
    for key, value in losses.items():  # posterior.<level> is a (mean, logvar) pair
        for i, v in enumerate(value if isinstance(value, tuple) else [value]):
            values[f"{key}.{i}" if isinstance(value, tuple) else key] = v.detach()
    return model, values, [*d_grads, *g_grads]


@pytest.mark.usefixtures("tiny_rgb")
@pytest.mark.parametrize("arch, objective, n_classes", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_training_step_equals_the_one_with_torchs_own_layers(arch, objective, n_classes, dtype, monkeypatch):
    fast_model, fast, fast_grads = _step(arch, objective, n_classes, dtype)
    with monkeypatch.context() as patch:
        _stock_layers(patch)
        stock_model, stock, stock_grads = _step(arch, objective, n_classes, dtype)
    assert type(stock_model.encoders[0].net[0]) in (nn.Conv2d, nn.Flatten)  # the reference really is torch's
    assert fast_model.state_dict().keys() == stock_model.state_dict().keys()  # the same checkpoint names
    for name, value in stock_model.state_dict().items():  # the same initial weights (and, after the step, buffers)
        assert torch.allclose(fast_model.state_dict()[name], value, rtol=1e-5, atol=1e-7), name
    if ARCHITECTURES[arch].kind == "conv":  # the channels-last pass ran
        assert fast["posterior.z1.0"].stride(1) == 1 and stock["posterior.z1.0"].stride(1) > 1
    # (The losses cast to float32 before their means: a float64 step agrees to float32's rounding there.)
    rtol, atol = (1e-6, 1e-9) if dtype == torch.float64 else (2e-4, 1e-6)
    assert fast.keys() == stock.keys()
    for name in stock:
        assert torch.allclose(fast[name], stock[name], rtol=rtol, atol=atol), name
    scale = max(float(g.abs().max()) for g in stock_grads)
    # (Biases right before a batch norm have an exact gradient of 0; in float32 theirs is rounding noise.)
    for mine, theirs in zip(fast_grads, stock_grads, strict=True):
        assert torch.allclose(mine, theirs, rtol=rtol, atol=atol * scale * (1 if dtype == torch.float64 else 100))


@pytest.mark.parametrize("arch", ["tiny", "tiny-mlp"])
def test_a_deep_hierarchy_step_equals_the_one_with_torchs_own_layers(arch, monkeypatch):
    """Four levels (main's --n-levels beyond two): the vector levels' layers too, in float64."""
    fast_model, fast, fast_grads = _step(arch, RECOMMENDED_OBJECTIVE, 0, torch.float64, n_levels=4)
    with monkeypatch.context() as patch:
        _stock_layers(patch)
        stock_model, stock, stock_grads = _step(arch, RECOMMENDED_OBJECTIVE, 0, torch.float64, n_levels=4)
    assert fast_model.config.n_levels == 4 and len(fast_model.config.z_dims) == 3
    assert fast_model.state_dict().keys() == stock_model.state_dict().keys()
    assert fast.keys() == stock.keys() and "posterior.z4.0" in fast
    for name in stock:
        assert torch.allclose(fast[name], stock[name], rtol=1e-6, atol=1e-9), name
    scale = max(float(g.abs().max()) for g in stock_grads)
    for mine, theirs in zip(fast_grads, stock_grads, strict=True):
        assert torch.allclose(mine, theirs, rtol=1e-6, atol=1e-9 * scale)


def test_dropout_draws_torchs_masks_in_the_logical_order_of_any_layout():
    x = torch.randn(5, 7, 6, 4)
    torch.manual_seed(9)
    expected = F.dropout(x, 0.3, training=True)
    layer = hali.Dropout(0.3).train()
    torch.manual_seed(9)
    assert torch.equal(layer(x), expected)
    torch.manual_seed(9)
    out = layer(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(out, expected) and out.stride(1) == 1  # same values, channels-last kept
    after = torch.rand(3)  # and the generator moved on exactly as torch's dropout moves it
    torch.manual_seed(9)
    F.dropout(x, 0.3, training=True)
    assert torch.equal(after, torch.rand(3))
    assert torch.equal(layer.eval()(x), x)


def _grads(out: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    seed = torch.Generator().manual_seed(4)
    return list(torch.autograd.grad(out, inputs, torch.randn(out.shape, generator=seed, dtype=out.dtype)))


def test_single_input_channel_convolution_in_a_training_pass_is_torchs_and_channels_last():
    torch.manual_seed(0)
    conv = hali.Conv2d(1, 5, 4, stride=2, padding=1).double().train()
    x = torch.randn(3, 1, 10, 12, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    expected = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
    assert out.shape == expected.shape == (3, 5, 5, 6) and out.stride(1) == 1
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(_grads(out, [x, conv.weight, conv.bias]), _grads(expected, [x, conv.weight, conv.bias])):
        assert torch.allclose(mine, theirs, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # outside a training pass: torch's own path and layout
        assert conv(x).is_contiguous()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_full_extent_convolution_is_one_matrix_product_with_torchs_values(layout):
    torch.manual_seed(0)
    conv = hali.Conv2d(3, 4, (5, 6)).double().train()
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    out = conv(x)
    expected = F.conv2d(x, conv.weight, conv.bias)
    assert out.shape == (2, 4, 1, 1) and torch.allclose(out, expected, rtol=1e-12, atol=1e-12)
    grad_x, *rest = _grads(out, [x, conv.weight, conv.bias])
    for mine, theirs in zip([grad_x, *rest], _grads(expected, [x, conv.weight, conv.bias])):
        assert torch.allclose(mine, theirs, rtol=1e-12, atol=1e-12)
    assert grad_x.is_contiguous(memory_format=layout)  # the gradient keeps the input's layout


@pytest.mark.parametrize("training", [True, False])
def test_transposed_convolutions_from_1x1_and_to_one_channel_are_torchs(training):
    torch.manual_seed(0)
    from_1x1 = hali.ConvTranspose2d(6, 4, 5).double().train(training)
    z = torch.randn(3, 6, 1, 1, dtype=torch.float64, requires_grad=True)
    to_one = hali.ConvTranspose2d(4, 1, 4, stride=2, padding=1, bias=False).double().train(training)
    h = from_1x1(z)
    assert h.shape == (3, 4, 5, 5) and torch.allclose(h, F.conv_transpose2d(z, from_1x1.weight, from_1x1.bias))
    assert (h.stride(1) == 1) == training  # channels-last in a training pass, as the layers after it run
    out = to_one(h)
    expected = F.conv_transpose2d(F.conv_transpose2d(z, from_1x1.weight, from_1x1.bias), to_one.weight,
                                  stride=2, padding=1)
    assert out.shape == (3, 1, 10, 10) and torch.allclose(out, expected, rtol=1e-12, atol=1e-12)
    params = [z, from_1x1.weight, from_1x1.bias, to_one.weight]
    for mine, theirs in zip(_grads(out, params), _grads(expected, params)):
        assert torch.allclose(mine, theirs, rtol=1e-12, atol=1e-12)


def test_leaky_relu_overwrites_fresh_tensors_and_leaves_views_alone():
    layer = hali.LeakyReLU(0.1)
    fresh = torch.tensor([-1.0, 2.0])
    assert layer(fresh).data_ptr() == fresh.data_ptr() and torch.equal(fresh, torch.tensor([-0.1, 2.0]))
    base = torch.tensor([[-1.0, 2.0]])
    view = base[0]
    out = layer(view)
    assert torch.equal(out, torch.tensor([-0.1, 2.0])) and torch.equal(base, torch.tensor([[-1.0, 2.0]]))
