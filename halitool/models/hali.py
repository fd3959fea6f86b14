"""Hierarchical ALI: Gaussian encoders q(z_l|z_l-1), decoders p(z_l-1|z_l), a deterministic p(x|z1) and one
discriminator over the whole tuple (x, z1, ..., zL). L = 1 is ALI.

Tensor names in checkpoints (stable, part of checkpoint format v1):

- ``encoders.{l-1}.*``   q(z_l | z_l-1), with z_0 = x; its last layer gives (mean, logvar) of z_l (with a class
                         latent the top one's first K "mean" outputs are the logits of y, its first K "logvar"
                         outputs are unused: :class:`ClassStyleHead`)
- ``decoders.0.*``       p(x | z1), deterministic, with ``decoders.0.pixel_bias`` the per-pixel output log-odds
- ``decoders.{l-1}.*``   p(z_l-1 | z_l) for l >= 2; its last layer gives (mean, logvar) of z_l-1
- ``discriminator.*``    ``x`` (the net on x), ``z1`` (joins z1), ``z.{i}`` and ``join.{i}`` (one per vector
                         level z2, z3, ...), ``out`` (the last layers: one logit, or in a semi-supervised model
                         K class logits: the classifier); with unary scores also ``unary_x``, ``unary_z1`` and
                         ``unary_z.{i}``. With spectral norm each layer's weight is stored as
                         ``...parametrizations.weight.original`` (plus the power iteration's ``_u``/``_v``),
                         with weight norm as ``...parametrizations.weight.original0`` (g) and ``original1``
                         (v), as torch's parametrisations name them.

Public inputs and outputs are float images in [0, 1], shape [n, C, H, W]; networks see 2x - 1 inside.
"""

from __future__ import annotations

import copy
import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from halitool.models.config import Architecture, ModelConfig

MODES = ("mean", "sample")


def discriminator_loss(s_q: Tensor, s_p: Tensor) -> Tensor:
    """ALI's discriminator loss: mean(softplus(-s_q) + softplus(s_p)); q = inference tuples, p = generative."""
    return (F.softplus(-s_q) + F.softplus(s_p)).mean()


def generator_loss(s_q: Tensor, s_p: Tensor) -> Tensor:
    """ALI's loss for the encoders and decoders together: mean(softplus(s_q) + softplus(-s_p))."""
    return (F.softplus(s_q) + F.softplus(-s_p)).mean()


def reparameterise(mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


class GaussianHead(nn.Module):
    """A network whose output channels split into (mean, logvar)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.net(h).chunk(2, dim=1)
        return mean, logvar

    def draw(self, mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A sample of the posterior given by ``forward``."""
        return reparameterise(mean, logvar, generator)


# The posterior "logvar" of a one-hot coordinate is the log of its Bernoulli variance p(1 - p), floored here.
_MIN_CLASS_VARIANCE = 1e-8

# The information term of ModelConfig.imsat_weight, as IMSAT weighs it (Hu et al. 2017): 0.1 x (H(y | x) - 4 H(y)).
IMSAT_INFORMATION_WEIGHT = 0.1
IMSAT_MARGINAL_WEIGHT = 4.0
# The norm of the random direction whose KL gradient finds the virtual adversarial one (one power iteration).
VAT_PROBE_NORM = 0.01


def class_log_probabilities(top: Tensor, n_classes: int) -> Tensor:
    """log q(y | .) [n, K] from a class-latent level's values (its first K coordinates: probabilities, or a
    one-hot draw), in float32, floored so that a zero probability has a finite log."""
    return top[:, :n_classes].float().clamp(min=1e-12).log()


class ClassStyleHead(GaussianHead):
    """The top encoder of a model with a class latent: q(y | h) a K-way categorical and q(style | h) Gaussian.

    Its net is a Gaussian head's over K + style dims (the first K "logvar" outputs are unused, so the tensor
    names and shapes follow the plain rule). ``forward`` gives the level's mean (the class probabilities, then
    the style's mean) and logvar (log p(1 - p) per class coordinate, the variance of its one-hot indicator; then
    the style's); ``draw`` samples a one-hot y, its gradient straight through the probabilities.
    """

    def __init__(self, net: nn.Module, n_classes: int):
        super().__init__(net)
        self.n_classes = n_classes

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        k = self.n_classes
        mean, logvar = self.net(h).chunk(2, dim=1)
        p = F.softmax(mean[:, :k].float(), dim=1).to(mean.dtype)
        class_logvar = (p.detach() * (1 - p.detach())).clamp(min=_MIN_CLASS_VARIANCE).log()
        return torch.cat([p, mean[:, k:]], dim=1), torch.cat([class_logvar, logvar[:, k:]], dim=1)

    def draw(self, mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        k = self.n_classes
        p = mean[:, :k]
        y = torch.multinomial(p.detach().float(), 1, generator=generator).squeeze(1)
        one_hot = F.one_hot(y, k).to(p.dtype)
        return torch.cat([one_hot + (p - p.detach()), reparameterise(mean[:, k:], logvar[:, k:], generator)], dim=1)


def _block(layer: nn.Module, width: int, leak: float, bn: bool) -> list[nn.Module]:
    return [layer, *([nn.BatchNorm2d(width)] if bn else []), LeakyReLU(leak)]


# ----------------------------------------------------------------------------------------- faster layers
# Drop-in subclasses of the torch layers the networks are built from: the same parameters and tensor names, the
# same values up to float rounding (the same dropout masks), faster on a CPU. A CPU training pass (train mode,
# autograd on) runs channels-last, the layout oneDNN's convolutions are fastest in, and what would break that
# layout keeps it. docs/benchmarks.md measures each path ("Measurements behind the code") and the whole step
# ("benchmarks/train.py").


def _cpu_training_pass(module: nn.Module, x: Tensor) -> bool:
    return x.device.type == "cpu" and module.training and torch.is_grad_enabled()


def _is_channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class LeakyReLU(nn.LeakyReLU):
    """``nn.LeakyReLU`` that overwrites its input unless the input is a view.

    Every one follows a convolution, linear layer or batch norm, whose output is a tensor of its own that its
    backward pass does not read, so no new activation buffer is needed (on a CPU, first-touch page faults on new
    buffers cost as much as the activation itself). A view (the matrix-product paths below return some) is left
    alone: overwriting it would make autograd copy its base."""

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope, inplace=self.inplace or x._base is None)


class _FlattenKeepingLayout(torch.autograd.Function):
    """``x.reshape(n, -1)`` whose gradient comes back channels-last, as ``x`` is: the layers before then see one
    layout (mixing layouts makes every elementwise kernel strided, several times slower)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.shape = x.shape
        return x.reshape(x.shape[0], -1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.reshape(ctx.shape).contiguous(memory_format=torch.channels_last)


def _flatten(x: Tensor) -> Tensor:
    if _is_channels_last(x) and x.requires_grad and torch.is_grad_enabled():
        return _FlattenKeepingLayout.apply(x)
    return x.reshape(x.shape[0], -1)


class Flatten(nn.Flatten):
    """``nn.Flatten()`` whose gradient keeps a channels-last input's layout."""

    def forward(self, x: Tensor) -> Tensor:
        if self.start_dim == 1 and self.end_dim == -1 and x.dim() >= 2:
            return _flatten(x)
        return super().forward(x)


@functools.cache
def _rand_draws_dropout_masks() -> bool:
    """Whether ``torch.rand(shape, dtype=float64) < 1 - p`` draws exactly the masks of torch's CPU dropout here.

    Where torch's CPU ``bernoulli_`` compares one 53-bit uniform per element, drawn in order from the default
    generator (one element at a time, under a lock: the slowest part of the discriminator's forward pass),
    ``torch.rand`` in float64 draws the same uniforms faster (docs/benchmarks.md, "Measurements behind the
    code"). Where it does not (with MKL on Intel CPUs it draws a stream of its own, in parallel), dropout stays
    torch's. Checked once per process, on a saved and restored generator state."""
    state = torch.get_rng_state()
    try:
        torch.default_generator.manual_seed(0)
        stock = F.dropout(torch.ones(4096), 0.5, True) > 0
        torch.default_generator.manual_seed(0)
        mine = torch.rand(4096, dtype=torch.float64) < 0.5
    finally:
        torch.set_rng_state(state)
    return torch.equal(stock, mine)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the same masks, drawn faster on the CPU (:func:`_rand_draws_dropout_masks`).

    The mask is drawn in the logical (NCHW) order of the input whatever its memory layout, so a channels-last
    tensor is dropped exactly as its contiguous copy would be; the output keeps the input's layout."""

    def forward(self, x: Tensor) -> Tensor:
        p = self.p
        if (not self.training or p == 0.0 or self.inplace or x.device.type != "cpu"
                or not _rand_draws_dropout_masks()):
            return super().forward(x)
        keep = torch.rand(x.shape, dtype=torch.float64) < 1 - p
        noise = keep.to(x.dtype, memory_format=torch.channels_last if _is_channels_last(x) else torch.preserve_format)
        noise.div_(1 - p)  # as torch's dropout: x * (mask / (1 - p))
        return x * noise


def _plain(layer: nn.Module, x: Tensor) -> bool:
    """A 2-d convolution without groups, dilation or output padding, on a CPU batch."""
    return (x.device.type == "cpu" and x.dim() == 4 and layer.groups == 1 and tuple(layer.dilation) == (1, 1)
            and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
            and tuple(getattr(layer, "output_padding", (0, 0))) == (0, 0))


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with two faster CPU paths:

    - a convolution whose kernel covers its whole unpadded input is one matrix product (oneDNN runs it several
      times slower, as :class:`_FullExtentLinear` notes);
    - in a training pass, one with a single input channel (an image's first layer) is unfold and one matrix
      product, its output channels-last (oneDNN's backward pass for it runs at a few GFLOP/s).
    """

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if _plain(self, x):
            n, k = x.shape[0], tuple(self.kernel_size)
            if tuple(self.padding) == (0, 0) and tuple(x.shape[2:]) == k:
                return F.linear(_flatten(x), weight.reshape(weight.shape[0], -1), bias)[:, :, None, None]
            if self.in_channels == 1 and _cpu_training_pass(self, x):
                (h, w), (sh, sw), (ph, pw) = x.shape[2:], self.stride, self.padding
                ho, wo = (h + 2 * ph - k[0]) // sh + 1, (w + 2 * pw - k[1]) // sw + 1
                cols = F.unfold(x, k, padding=self.padding, stride=self.stride)  # [n, kh kw, ho wo]
                out = torch.matmul(cols.transpose(1, 2), weight.reshape(weight.shape[0], -1).t())  # [n, ho wo, out]
                if bias is not None:
                    out = out + bias
                return out.view(n, ho, wo, -1).permute(0, 3, 1, 2)  # [n, out, ho, wo], channels-last
        return super()._conv_forward(x, weight, bias)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with two faster CPU paths:

    - from a 1x1 input it is one matrix product (channels-last in a training pass);
    - to a single output channel (an image's last layer) it is one matrix product and fold (oneDNN runs it at a
      few GFLOP/s).
    """

    def forward(self, x: Tensor, output_size=None) -> Tensor:
        if output_size is None and _plain(self, x):
            (n, cin, h, w), (kh, kw) = x.shape, self.kernel_size
            weight, bias = self.weight, self.bias
            if (h, w) == (1, 1) and tuple(self.padding) == (0, 0):
                if _cpu_training_pass(self, x):
                    out = x.reshape(n, cin) @ weight.permute(0, 2, 3, 1).reshape(cin, -1)  # [n, kh kw out]
                    out = out.view(n, kh, kw, -1).permute(0, 3, 1, 2)  # [n, out, kh, kw], channels-last
                else:
                    out = (x.reshape(n, cin) @ weight.reshape(cin, -1)).view(n, -1, kh, kw)
                return out if bias is None else out + bias.view(1, -1, 1, 1)
            if self.out_channels == 1:
                (sh, sw), (ph, pw) = self.stride, self.padding
                if _is_channels_last(x):
                    rows = x.permute(0, 2, 3, 1).reshape(n, h * w, cin)  # a view
                    cols = torch.matmul(rows, weight.reshape(cin, kh * kw)).transpose(1, 2)  # [n, kh kw, h w]
                else:
                    cols = torch.matmul(weight.reshape(cin, kh * kw).t(), x.reshape(n, cin, h * w))
                size = ((h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw)
                out = F.fold(cols, size, (kh, kw), padding=self.padding, stride=self.stride)
                return out if bias is None else out + bias.view(1, -1, 1, 1)
        return super().forward(x, output_size)


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode; the identity in eval mode (the semi-supervised GAN's regulariser)."""

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, h: Tensor) -> Tensor:
        return h + self.std * torch.randn(h.shape, dtype=h.dtype, device=h.device) if self.training else h


def _d_block(layer: nn.Module, width: int, leak: float, dropout: float, bn: bool = False,
             noise: float = 0.0) -> list[nn.Module]:
    # ALI: dropout on the inputs of every discriminator layer; the semi-supervised GAN: Gaussian noise there too.
    # (The noise module exists only when asked for: a module shifts the index, so the tensor names, of the layers
    # after it, and checkpoints without it must keep theirs.)
    regularise = [Dropout(dropout), *([GaussianNoise(noise)] if noise > 0 else [])]
    return [*regularise, layer, *([nn.BatchNorm2d(width)] if bn else []), LeakyReLU(leak)]


def _down2(cin: int, cout: int) -> nn.Conv2d:
    return Conv2d(cin, cout, 4, stride=2, padding=1)


def _up2(cin: int, cout: int, bias: bool = True) -> nn.ConvTranspose2d:
    return ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)


class DiscriminatorOutput(NamedTuple):
    """What one discriminator pass gives: every score (``joint`` and any unary ones, [n] each), the K class
    logits [n, K] of a semi-supervised model (else None) and the last hidden layer [n, d_hidden] (the features
    that feature matching compares)."""

    scores: dict[str, Tensor]
    class_logits: Tensor | None
    features: Tensor


class Discriminator(nn.Module):
    """D(x, z1, ..., zL) -> one joint logit, fusing the levels in stages: x, then z1 (spatially), then each vector.

    With ``unary`` it also gives BigBiGAN's unary logits: ``x`` from the image features alone (``unary_x``),
    ``z1`` from its own small conv path (``unary_z1``) and each vector level from its branch (``unary_z.{i}``).
    With ``spectral_norm`` (or ``weight_norm``) every layer is so normalised and there is no batch norm.
    With ``n_classes`` K > 0 the last layer gives K class logits and the joint logit is their log-sum-exp
    (Salimans et al. 2016: a K+1-way classifier whose "fake" logit is fixed at 0).
    """

    def __init__(self, arch: Architecture, z_dims: tuple[int, ...], leak: float, dropout: float, unary: bool = False,
                 spectral_norm: bool = False, weight_norm: bool = False, noise: float = 0.0, n_classes: int = 0):
        super().__init__()
        normalised = spectral_norm or weight_norm
        hid = arch.d_hidden

        def block(layer: nn.Module, width: int, bn: bool = False) -> list[nn.Module]:
            return _d_block(layer, width, leak, dropout, bn=bn and not normalised, noise=noise)

        c, w = arch.image_shape[0], arch.x_widths
        layers: list[nn.Module] = []
        if arch.kind == "mlp":
            layers, cin = [Flatten()], c * arch.image_shape[1] * arch.image_shape[2]
            for i, width in enumerate(arch.d_x_widths):
                # The first layer's input noise is the instance noise the training loss adds to x.
                layers += _d_block(nn.Linear(cin, width), width, leak, dropout, noise=noise if i > 0 else 0.0)
                cin = width
            self.x = nn.Sequential(*layers)
            x_features = cin
            self.z1 = nn.Sequential(*block(nn.Linear(cin + arch.z1_channels, hid), hid))
        else:
            for i, width in enumerate(w):
                layers += _d_block(_down2(c if i == 0 else w[i - 1], width), width, leak, dropout,
                                   bn=i > 0 and not normalised, noise=noise if i > 0 else 0.0)
            self.x = nn.Sequential(*layers)
            x_features = w[-1] * (arch.image_shape[1] // 2 ** len(w)) * (arch.image_shape[2] // 2 ** len(w))
            layers, cin = [], w[-1] + arch.z1_channels
            for width in arch.d_z1_widths:
                layers += block(Conv2d(cin, width, 3, padding=1), width)
                cin = width
            for width in arch.down_widths:
                layers += block(_down2(cin, width), width)
                cin = width
            k = arch.z1_size[0] // 2 ** len(arch.down_widths)
            layers += block(Conv2d(cin, hid, k), hid)
            self.z1 = nn.Sequential(*layers, Flatten())
        self.z = nn.ModuleList(nn.Sequential(*block(nn.Linear(d, hid), hid), *block(nn.Linear(hid, hid), hid))
                               for d in z_dims)
        self.join = nn.ModuleList(nn.Sequential(*block(nn.Linear(2 * hid, hid), hid)) for _ in self.z)
        head = block(nn.Linear(hid, hid), hid)
        self.n_features = len(head)  # out[:n_features] gives the features, the rest the logit(s)
        self.out = nn.Sequential(*head, Dropout(dropout), *([GaussianNoise(noise)] if noise > 0 else []),
                                 nn.Linear(hid, max(1, n_classes)))
        self.n_classes = n_classes
        self.unary = unary
        if unary:
            z1c = arch.z1_channels
            self.unary_x = nn.Sequential(Flatten(), Dropout(dropout), nn.Linear(x_features, 1))
            if arch.kind == "mlp":
                self.unary_z1 = nn.Sequential(*block(nn.Linear(z1c, hid), hid), Dropout(dropout), nn.Linear(hid, 1))
            else:
                h1, w1 = arch.z1_size
                self.unary_z1 = nn.Sequential(*block(Conv2d(z1c, arch.d_z1_widths[0], 3, padding=1),
                                                     arch.d_z1_widths[0]),
                                              Flatten(), Dropout(dropout),
                                              nn.Linear(arch.d_z1_widths[0] * h1 * w1, 1))
            self.unary_z = nn.ModuleList(nn.Sequential(Dropout(dropout), nn.Linear(hid, 1)) for _ in self.z)
        if normalised:
            from torch.nn.utils import parametrizations

            norm = parametrizations.spectral_norm if spectral_norm else parametrizations.weight_norm
            for module in list(self.modules()):
                for name, child in list(module.named_children()):
                    if isinstance(child, (nn.Conv2d, nn.Linear)):
                        setattr(module, name, norm(child))

    def forward(self, x: Tensor, zs: list[Tensor]) -> Tensor:
        return self.scores(x, zs)["joint"]

    def scores(self, x: Tensor, zs: list[Tensor]) -> dict[str, Tensor]:
        """Every logit [n]: ``joint`` and, with unary terms, ``x`` and one per level (``z1``, ``z2``, ...)."""
        return self.evaluate(x, zs).scores

    def evaluate(self, x: Tensor, zs: list[Tensor]) -> DiscriminatorOutput:
        """One pass: every score, the class logits (semi-supervised) and the last hidden layer."""
        hx = self.x(x)
        h = self.z1(torch.cat([hx, zs[0]], dim=1))
        branches = []
        for z, branch, join in zip(zs[1:], self.z, self.join):
            hz = branch(z)
            branches.append(hz)
            h = join(torch.cat([h, hz], dim=1))
        features = self.out[: self.n_features](h)
        logits = self.out[self.n_features:](features)
        class_logits = logits if self.n_classes else None
        out = {"joint": logits.float().logsumexp(dim=1).to(logits.dtype) if self.n_classes else logits.squeeze(1)}
        if self.unary:
            out["x"] = self.unary_x(hx).squeeze(1)
            out["z1"] = self.unary_z1(zs[0]).squeeze(1)
            for i, (hz, head) in enumerate(zip(branches, self.unary_z)):
                out[f"z{i + 2}"] = head(hz).squeeze(1)
        return DiscriminatorOutput(out, class_logits, features)


def r1_penalty(score_sum: Tensor, inputs: list[Tensor]) -> Tensor:
    """Mean over the batch of ||grad of the scores w.r.t. all ``inputs``||^2 (R1, Mescheder et al. 2018).

    ``score_sum`` is the sum over the batch of each tuple's score(s), so its gradient w.r.t. an input row is that
    row's gradient; the graph is kept so that the penalty itself can be differentiated.
    """
    grads = torch.autograd.grad(score_sum, inputs, create_graph=True)
    n = inputs[0].shape[0]
    return sum(g.float().pow(2).reshape(n, -1).sum(dim=1) for g in grads).mean()


def collapse_indicator(mean: Tensor, logvar: Tensor) -> tuple[float, float]:
    """(spread, std) of a Gaussian posterior over a batch: ``spread`` is the standard deviation across the batch
    of the posterior means, ``std`` the posterior's own standard deviation, both averaged over dimensions.

    An encoder that ignores its input has spread 0 whatever its std; a useful one has a spread well above its
    std (the posterior tells images apart). Needs a batch of at least 2.
    """
    spread, std = collapse_tensors(mean, logvar)
    return float(spread), float(std)


def collapse_tensors(mean: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`collapse_indicator` as two 0-d tensors on the posterior's device (no host synchronisation)."""
    m = mean.detach().float().flatten(1)
    return m.std(dim=0).mean(), torch.exp(0.5 * logvar.detach().float().flatten(1)).mean()


class HALI(nn.Module):
    """A HALI model with ``config.n_levels`` levels; see the module docstring for the tensor names."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        arch = self.arch = config.architecture
        leak, L = config.leak, config.n_levels
        c, h, w = arch.image_shape
        self.level_names = [f"z{i}" for i in range(1, L + 1)]
        z_dims = config.level_widths  # with a class latent the top level is K + style wide
        self.level_shapes = {"z1": arch.z1_shape, **{f"z{i + 2}": (d,) for i, d in enumerate(z_dims)}}
        self.image_shape = tuple(arch.image_shape)
        if arch.kind == "mlp":
            encoders, decoders = self._mlp_chain(arch, z_dims, leak)
        else:
            encoders, decoders = self._conv_chain(arch, z_dims, leak)
        for lvl in range(3, L + 1):
            d_in, d_out = z_dims[lvl - 3], z_dims[lvl - 2]
            encoders.append(GaussianHead(_mlp(d_in, arch.hidden, 2 * d_out, leak)))
            decoders.append(GaussianHead(_mlp(d_out, arch.hidden, 2 * d_in, leak)))
        if config.class_latent:
            encoders[-1] = ClassStyleHead(encoders[-1].net, config.class_latent)
        self.encoders = nn.ModuleList(encoders)
        self.decoders = nn.ModuleList(decoders)
        self.discriminator = Discriminator(arch, z_dims, leak, config.dropout, unary=config.unary_scores,
                                           spectral_norm=config.spectral_norm, weight_norm=config.weight_norm,
                                           noise=config.d_noise, n_classes=config.n_classes)
        self.reset_parameters()

    @staticmethod
    def _mlp_chain(arch: Architecture, z_dims: tuple[int, ...], leak: float) -> tuple[list[nn.Module], list[nn.Module]]:
        """q(z1|x), p(x|z1) and (L >= 2) q(z2|z1), p(z1|z2) of an ``mlp`` architecture."""
        c, h, w = arch.image_shape
        dims = [c * h * w, *arch.x_widths]
        layers: list[nn.Module] = [Flatten()]
        for d_in, d_out in zip(dims, dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), LeakyReLU(leak)]
        encoders: list[nn.Module] = [GaussianHead(nn.Sequential(*layers, nn.Linear(dims[-1], 2 * arch.z1_channels)))]
        dims = [arch.z1_channels, *reversed(arch.x_widths)]
        layers = []
        for d_in, d_out in zip(dims, dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), LeakyReLU(leak)]
        layers += [nn.Linear(dims[-1], c * h * w, bias=False), nn.Unflatten(1, (c, h, w))]
        decoders: list[nn.Module] = [PixelDecoder(nn.Sequential(*layers), arch.image_shape)]
        if z_dims:
            encoders.append(GaussianHead(_mlp(arch.z1_channels, arch.hidden, 2 * z_dims[0], leak)))
            decoders.append(GaussianHead(_mlp(z_dims[0], arch.hidden, 2 * arch.z1_channels, leak)))
        return encoders, decoders

    @staticmethod
    def _conv_chain(arch: Architecture, z_dims: tuple[int, ...], leak: float) -> tuple[list[nn.Module], list[nn.Module]]:
        """q(z1|x), p(x|z1) and (L >= 2) q(z2|z1), p(z1|z2) of a ``conv`` architecture."""
        c = arch.image_shape[0]
        xw, z1c = arch.x_widths, arch.z1_channels
        k = arch.z1_size[0] // 2 ** len(arch.down_widths)  # spatial size left before the "valid" conv to a vector
        # q(z1 | x)
        layers: list[nn.Module] = []
        for i, width in enumerate(xw):
            layers += _block(_down2(c if i == 0 else xw[i - 1], width), width, leak, bn=True)
        encoders = [GaussianHead(nn.Sequential(*layers, Conv2d(xw[-1], 2 * z1c, 3, padding=1)))]
        # p(x | z1): deterministic; per-pixel output bias as ALI
        layers = _block(Conv2d(z1c, xw[-1], 3, padding=1), xw[-1], leak, bn=True)
        for i in range(len(xw) - 1, 0, -1):
            layers += _block(_up2(xw[i], xw[i - 1]), xw[i - 1], leak, bn=True)
        decoders: list[nn.Module] = [PixelDecoder(nn.Sequential(*layers, _up2(xw[0], c, bias=False)), arch.image_shape)]

        if z_dims:
            dw = arch.down_widths
            # q(z2 | z1): convolve the map down to a vector
            layers, cin = [], z1c
            for width in dw:
                layers += _block(_down2(cin, width), width, leak, bn=True)
                cin = width
            layers += _block(Conv2d(cin, arch.hidden, k), arch.hidden, leak, bn=True)
            encoders.append(GaussianHead(nn.Sequential(*layers, Flatten(), nn.Linear(arch.hidden, 2 * z_dims[0]))))
            # p(z1 | z2): the mirror image
            top = dw[-1] if dw else xw[-1]
            layers = [nn.Unflatten(1, (z_dims[0], 1, 1))]
            layers += _block(ConvTranspose2d(z_dims[0], top, k), top, leak, bn=True)
            for i in range(len(dw) - 1, -1, -1):
                out = dw[i - 1] if i > 0 else xw[-1]
                layers += _block(_up2(dw[i], out), out, leak, bn=True)
            decoders.append(GaussianHead(nn.Sequential(*layers, Conv2d(xw[-1], 2 * z1c, 3, padding=1))))
        return encoders, decoders

    # ----------------------------------------------------------------------------------------------- set-up
    def reset_parameters(self) -> None:
        """ALI's initialisation: weights ~ N(0, init_std), biases 0 (batch norm: scale 1, shift 0).

        An ``mlp`` architecture keeps PyTorch's default initialisation (scaled to each layer's fan-in), as the
        semi-supervised GANs' MLPs did. A model built on the meta device (to be filled from a checkpoint) has no
        values to set.
        """
        if self.arch.kind == "mlp":
            return
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and not m.weight.is_meta:
                if hasattr(m, "parametrizations"):
                    # Spectrally normalised: the weight is divided by its largest singular value, so ALI's scale
                    # N(0, init_std) means nothing; keep PyTorch's default initialisation from construction.
                    continue
                nn.init.normal_(m.weight, 0.0, self.config.init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.no_grad()
    def init_pixel_bias(self, mean_image: Tensor) -> None:
        """Set p(x|z1)'s output bias to the log-odds of the per-pixel data mean (ALI); ``mean_image`` in [0, 1]."""
        p = mean_image.to(self.decoders[0].pixel_bias).clamp(1e-3, 1 - 1e-3)
        self.decoders[0].pixel_bias.copy_(torch.log(p) - torch.log1p(-p))

    def generator_parameters(self) -> list[nn.Parameter]:
        """The encoders' and decoders' parameters (trained together against the discriminator)."""
        return [*self.encoders.parameters(), *self.decoders.parameters()]

    def parameter_counts(self) -> dict[str, int]:
        counts = {
            "encoders": sum(p.numel() for p in self.encoders.parameters()),
            "decoders": sum(p.numel() for p in self.decoders.parameters()),
            "discriminator": sum(p.numel() for p in self.discriminator.parameters()),
        }
        counts["total"] = sum(counts.values())
        return counts

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------------------------------ public API
    def encode_stats(self, x: Tensor, mode: str = "mean", generator: torch.Generator | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """(mean, logvar) of q(z_l | z_l-1) for every level; z_l-1 fed upward is the mean or a sample (``mode``)."""
        return self.encode_chain(x, mode, generator)[1]

    def encode(self, x: Tensor, mode: str = "mean", generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Every level's latent: the posterior means (``mode="mean"``) or one reparameterised sample chain."""
        return self.encode_chain(x, mode, generator)[0]

    def encode_chain(self, x: Tensor, mode: str = "mean", generator: torch.Generator | None = None
                     ) -> tuple[dict[str, Tensor], dict[str, tuple[Tensor, Tensor]]]:
        """Up the inference chain once: every level's latent (the mean or a reparameterised sample, ``mode``),
        which is what the next level reads, and every level's (mean, logvar). :meth:`encode` and
        :meth:`encode_stats` are its two halves."""
        _check_mode(mode)
        h, zs, stats = x * 2 - 1, {}, {}
        for name, encoder in zip(self.level_names, self.encoders):
            mean, logvar = encoder(h)
            stats[name] = (mean, logvar)
            h = zs[name] = mean if mode == "mean" else encoder.draw(mean, logvar, generator)
        return zs, stats

    def decode_levels(self, level: str, z: Tensor, mode: str = "mean", generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """x in [0, 1] from ``z`` at ``level`` down the generative chain, and every z on the way."""
        _check_mode(mode)
        if level not in self.level_names:
            raise ValueError(f"unknown level {level!r}; this model has {self.level_names}")
        lvl = self.level_names.index(level) + 1
        zs = {level: z}
        for i in range(lvl, 1, -1):
            mean, logvar = self.decoders[i - 1](z)
            z = zs[f"z{i - 1}"] = mean if mode == "mean" else reparameterise(mean, logvar, generator)
        return self.decoders[0](z), zs

    def decode(self, level: str, z: Tensor, mode: str = "mean", generator: torch.Generator | None = None) -> Tensor:
        """x in [0, 1] from ``z`` at ``level`` through p(z_l-1|z_l) ... p(x|z1) (means, or samples with ``mode``)."""
        return self.decode_levels(level, z, mode, generator)[0]

    def reconstruct(self, x: Tensor, level: str, mode: str = "mean", generator: torch.Generator | None = None) -> Tensor:
        """x -> z1 -> ... -> ``level`` -> ... -> z1 -> x'."""
        return self.decode(level, self.encode(x, mode, generator)[level], mode, generator)

    def sample_prior(self, n: int, generator: torch.Generator | None = None, classes: Tensor | None = None) -> Tensor:
        """n draws of the top level's prior: N(0, I); with a class latent, a one-hot y (uniform, or the class
        indices ``classes`` [n]) and then N(0, I) style."""
        top = self.level_names[-1]
        k = self.config.class_latent
        if not k:
            if classes is not None:
                raise ValueError("classes need a model with a class latent")
            return torch.randn((n, *self.level_shapes[top]), generator=generator, device=self.device)
        if classes is None:
            classes = torch.randint(0, k, (n,), generator=generator, device=self.device)
        style = torch.randn((n, self.level_shapes[top][0] - k), generator=generator, device=self.device)
        return torch.cat([F.one_hot(classes.to(self.device), k).to(style.dtype), style], dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None, classes: Tensor | None = None) -> Tensor:
        """n images: z_top from its prior (of class ``classes`` with a class latent), then a sample of each
        p(z_l-1|z_l), then p(x|z1)."""
        return self.decode(self.level_names[-1], self.sample_prior(n, generator, classes), "sample", generator)

    def class_probabilities(self, x: Tensor) -> Tensor:
        """q(y | x) [n, K] of a model with a class latent: the top posterior's class probabilities."""
        if not self.config.class_latent:
            raise ValueError("this model has no class latent")
        return self.encode(x)[self.level_names[-1]][:, : self.config.class_latent]

    def interpolations(self, xa: torch.Tensor, xb: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
        """Per level, images [pairs, steps, C, H, W] decoded from z = (1 - t) z(xa) + t z(xb), t = 0 .. 1 in
        ``steps`` even steps, with z the posterior means of that level."""
        za, zb = self.encode(xa), self.encode(xb)
        t = torch.linspace(0, 1, steps, device=xa.device)
        out = {}
        for level in self.level_names:
            a, b = za[level], zb[level]
            shape = (1, steps) + (1,) * (a.dim() - 1)
            z = (a.unsqueeze(1) * (1 - t.view(shape)) + b.unsqueeze(1) * t.view(shape)).flatten(0, 1)
            out[level] = self.decode(level, z).view(len(xa), steps, *xa.shape[1:])
        return out

    def classify(self, x: Tensor, means: dict[str, Tensor] | None = None) -> Tensor:
        """A semi-supervised model's class logits [n, K]: the discriminator on (x, posterior means of z1..zL);
        with a class latent, the log of q(y | x). ``means`` (from :meth:`encode`) saves encoding ``x`` again."""
        k = self.config.class_latent
        if not (self.config.n_classes or k):
            raise ValueError("this model has no classifier (it was trained without labels)")
        zs = self.encode(x) if means is None else means
        if k:
            return class_log_probabilities(zs[self.level_names[-1]], k)
        return self.discriminator.evaluate(x * 2 - 1, [zs[name] for name in self.level_names]).class_logits

    def discriminate(self, x: Tensor, zs: dict[str, Tensor]) -> Tensor:
        """The discriminator's logit [n] for tuples (x, z1, ..., zL); high means "from the inference chain"."""
        return self.discriminator(x * 2 - 1, [zs[name] for name in self.level_names])

    # ------------------------------------------------------------------------------------------- training
    def losses(self, x: Tensor, labelled: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """One batch of the game: inference tuples from ``x``, as many generative tuples, one discriminator pass,
        plus the levers of ``config`` (see :class:`~halitool.models.config.ModelConfig`).

        A semi-supervised model (``n_classes`` > 0) also takes ``labelled`` = (images, class indices): their
        inference tuples go through the same pass and the discriminator learns their class (cross-entropy over
        the K logits, ``ce``); the adversarial part is then weighted 1/2 as in Salimans et al. (2016). A model
        with a class latent takes ``labelled`` too: the encoders learn their class as q(y | x) (``ce``, in
        ``g_loss``), and the discriminator does not see them.

        Returns ``d_loss`` and ``g_loss`` (the totals each player minimises), their parts (``adv``: the
        adversarial part of ``g_loss``, or ``fm``, the feature-matching loss that replaces it; ``recon``,
        ``recon2``, ``cycle``, ``r1``, ``ce`` where their lever is on), the logits of every score as
        ``s_q.<name>`` / ``s_p.<name>`` (``joint``, and ``x``, ``z1``, ... with unary scores), with labels the
        labelled tuples' ``class_logits`` and, per level, the posterior ``(mean, logvar)`` of the inference
        tuples as ``posterior.<level>``.
        """
        cfg, n = self.config, x.shape[0]
        class_labelled = None  # with a class latent, labelled images teach the top encoder, not the discriminator
        if cfg.class_latent and labelled is not None:
            class_labelled, labelled = labelled, None
        if labelled is not None and not cfg.n_classes:
            raise ValueError("labelled images need a semi-supervised model (n_classes > 0)")
        m = 0 if labelled is None else labelled[0].shape[0]
        x_in = x if labelled is None else torch.cat([x, labelled[0]])
        if self.arch.kind == "conv" and _cpu_training_pass(self, x_in):
            x_in = x_in.contiguous(memory_format=torch.channels_last)  # see "faster layers" above
        zq, stats = self.encode_chain(x_in, "sample")
        xp, zp = self.decode_levels(self.level_names[-1], self.sample_prior(n), "sample")
        # Every tuple in one batch: one pass, and batch norm sees the same statistics for all.
        x_all = torch.cat([x_in, xp]) * 2 - 1
        if cfg.instance_noise > 0:
            x_all = x_all + cfg.instance_noise * torch.randn(x_all.shape, dtype=x_all.dtype, device=x_all.device)
        z_all = [torch.cat([zq[name], zp[name]]) for name in self.level_names]
        if cfg.level_dropout > 0:
            # Some tuples show the discriminator x alone (every level zeroed), so its image path must learn both
            # tasks by itself rather than lean on the latents.
            keep = (torch.rand(x_all.shape[0], device=x_all.device) >= cfg.level_dropout).to(x_all.dtype)
            z_all = [z * keep.view(-1, *([1] * (z.dim() - 1))) for z in z_all]
        seen = self.discriminator.evaluate(x_all, z_all)
        out: dict[str, Tensor] = {}
        d_loss = g_loss = encoder_adv = 0.0
        for name, s in seen.scores.items():
            s = s.float()
            s_q, s_p = s[:n], s[n + m:]
            out[f"s_q.{name}"], out[f"s_p.{name}"] = s_q, s_p
            d_loss = d_loss + discriminator_loss(s_q, s_p)
            g_loss = g_loss + generator_loss(s_q, s_p)
            encoder_adv = encoder_adv + F.softplus(s_q).mean()  # the encoders' part of generator_loss
        if cfg.n_classes:
            d_loss = 0.5 * d_loss
            if m:
                out["class_logits"] = logits = seen.class_logits[n: n + m].float()
                out["ce"] = F.cross_entropy(logits, labelled[1])
                d_loss = d_loss + out["ce"]
            if cfg.entropy_weight > 0:
                # Confident class predictions on the unlabelled inference tuples (Grandvalet & Bengio 2005).
                log_p = F.log_softmax(seen.class_logits[:n].float(), dim=1)
                out["entropy"] = -(log_p.exp() * log_p).sum(dim=1).mean()
                d_loss = d_loss + cfg.entropy_weight * out["entropy"]
        if cfg.feature_matching:
            # The decoders match the inference tuples' mean features, the target as data are for a GAN's generator
            # (Salimans et al. 2016); the encoders get no gradient from it (matching both ways lets them chase the
            # generator, and their posterior variance then grows without bound) and keep their adversarial part.
            features = seen.features.float()
            out["fm"] = (features[:n].detach().mean(dim=0) - features[n + m:].mean(dim=0)).pow(2).mean()
            out["adv"] = encoder_adv
            g_loss = out["fm"] + encoder_adv
        else:
            out["adv"] = g_loss
        zq = {name: z[:n] for name, z in zq.items()}
        stats = {name: (mean[:n], logvar[:n]) for name, (mean, logvar) in stats.items()}
        x_all, z_all = torch.cat([x_all[:n], x_all[n + m:]]), [torch.cat([z[:n], z[n + m:]]) for z in z_all]
        if cfg.r1_weight > 0:
            # On the inference tuples as the discriminator sees them, detached: the penalty trains D only.
            inputs = [x_all[:n].detach().requires_grad_(True)] + [z[:n].detach().requires_grad_(True) for z in z_all]
            r1_scores = self.discriminator.scores(inputs[0], inputs[1:])
            out["r1"] = r1_penalty(sum(v.float().sum() for v in r1_scores.values()), inputs)
            d_loss = d_loss + 0.5 * cfg.r1_weight * out["r1"]
        if cfg.recon_weight > 0:
            out["recon"] = F.mse_loss(self.decoders[0](zq["z1"]).float(), x.float())
            g_loss = g_loss + cfg.recon_weight * out["recon"]
        if cfg.recon2_weight > 0 and len(self.level_names) > 1:
            recon2 = sum(F.mse_loss(self.decode(level, zq[level]).float(), x.float()) for level in self.level_names[1:])
            out["recon2"] = recon2
            g_loss = g_loss + cfg.recon2_weight * recon2
        k, top = cfg.class_latent, self.level_names[-1]
        if cfg.cycle_weight > 0:
            z_hat = self.encode(xp)[top].float()  # posterior means up the chain
            out["cycle"] = F.mse_loss(z_hat[:, k:], zp[top][:, k:].float())
            if k:  # the class the image was drawn from, recovered by q(y | x) (InfoGAN's mutual-information term)
                out["cycle"] = out["cycle"] + F.nll_loss(class_log_probabilities(z_hat, k), zp[top][:, :k].argmax(1))
            g_loss = g_loss + cfg.cycle_weight * out["cycle"]
        if cfg.imsat_weight > 0:
            out["vat"], out["information"] = self.imsat_terms(x)
            g_loss = g_loss + cfg.imsat_weight * (out["vat"] + IMSAT_INFORMATION_WEIGHT * out["information"])
        if class_labelled is not None:
            out["ce"] = F.nll_loss(class_log_probabilities(self.encode(class_labelled[0])[top], k), class_labelled[1])
            g_loss = g_loss + out["ce"]
        out["d_loss"], out["g_loss"] = d_loss, g_loss
        out["s_q"], out["s_p"] = out["s_q.joint"], out["s_p.joint"]
        for name, stat in stats.items():
            out[f"posterior.{name}"] = stat
        return out

    def imsat_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The two terms of ``imsat_weight`` on images ``x`` (see :class:`ModelConfig`): the virtual adversarial
        smoothness KL(q(y | x) || q(y | x + r)), ||r|| = ``vat_eps`` (0 without a radius), and H(y | x) - 4 H(y)
        with H(y) the entropy of the batch's mean q(y | x). Gradients reach the encoders only through
        q(y | x + r) and the entropies; the target q(y | x) of the KL is fixed, as in VAT."""
        k, top, eps = self.config.class_latent, self.level_names[-1], self.config.vat_eps

        def log_q(images: Tensor) -> Tensor:
            return class_log_probabilities(self.encode(images)[top], k)

        log_p = log_q(x)
        p = log_p.exp()
        vat = log_p.new_zeros(())
        if eps > 0:
            def unit(v: Tensor) -> Tensor:  # each image's perturbation scaled to norm 1
                return F.normalize(v.flatten(1), dim=1, eps=1e-12).view_as(v)

            target = p.detach()
            probe = (VAT_PROBE_NORM * unit(torch.randn_like(x))).requires_grad_(True)
            kl = F.kl_div(log_q(x + probe), target, reduction="batchmean")
            direction, = torch.autograd.grad(kl, probe)
            vat = F.kl_div(log_q(x + eps * unit(direction)), target, reduction="batchmean")
        marginal = p.mean(dim=0)
        conditional_entropy = -(p * log_p).sum(dim=1).mean()
        marginal_entropy = -(marginal * marginal.clamp(min=1e-12).log()).sum()
        return vat, conditional_entropy - IMSAT_MARGINAL_WEIGHT * marginal_entropy


class PixelDecoder(nn.Module):
    """p(x | z1): a deterministic net, plus a per-pixel bias, through a sigmoid to [0, 1]."""

    def __init__(self, net: nn.Module, image_shape: tuple[int, int, int]):
        super().__init__()
        self.net = net
        self.pixel_bias = nn.Parameter(torch.zeros(image_shape))

    def forward(self, z1: Tensor) -> Tensor:
        return torch.sigmoid(self.net(z1) + self.pixel_bias)


def _mlp(d_in: int, hidden: int, d_out: int, leak: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), LeakyReLU(leak), nn.Linear(hidden, d_out))


def images_to_input(images, device: torch.device | str | None = None, non_blocking: bool = False) -> Tensor:
    """uint8 images ``[n, C, H, W]`` (numpy or torch) as the float ``[0, 1]`` input every model API takes."""
    x = torch.as_tensor(images)
    if device is not None:
        x = x.to(device, non_blocking=non_blocking)
    return x.float().div_(255)


class _FullExtentLinear(nn.Module):
    """A convolution whose kernel covers its whole (unpadded) input, computed as one matrix product.

    oneDNN runs such a convolution several times slower than the equivalent ``linear`` on the flattened input
    (docs/benchmarks.md, "Measurements behind the code"). Same FLOPs, same values up to float rounding; the output keeps the convolution's ``[n, out, 1, 1]`` shape.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().reshape(conv.out_channels, -1).clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(h.reshape(h.shape[0], -1), self.weight, self.bias)[:, :, None, None]


# Layers whose output is a tensor of their own, so a LeakyReLU right after them may overwrite it.
_FRESH_OUTPUT = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, _FullExtentLinear)


def inference_copy(model: HALI) -> HALI:
    """A copy of ``model`` whose encoders are rewritten for fast inference; decoders and discriminator are shared.

    In eval mode the rewrites give the same latents up to float rounding (about 1e-6 relative) and skip work:

    - batch norm is an affine map per channel, so it is folded into the preceding convolution or linear layer
      (one pass less over every activation);
    - LeakyReLU runs in place after a layer that made a fresh tensor (no new activation buffer: on a CPU,
      first-touch page faults on new buffers cost as much as the activation itself);
    - a convolution covering its whole input becomes one matrix product (:class:`_FullExtentLinear`);
    - the encoders' weights are channels-last, the layout oneDNN's convolutions are fastest with and that suits
      tensor cores on a GPU.

    (What each rewrite saves is measured in docs/benchmarks.md, "Measurements behind the code".) The encoders of
    ``model`` are not touched; the copy shares the (unchanged) decoders and discriminator with it, so it is
    for encoding only, never for training.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    shared = {id(model.decoders): model.decoders, id(model.discriminator): model.discriminator}
    fast = copy.deepcopy(model, memo=shared)  # the memo makes deepcopy keep these two as they are
    fast.encoders.eval()
    input_sizes = {}  # Conv2d -> the spatial size of its input, seen on one example

    def note_input_size(conv: nn.Module, args: tuple) -> None:
        input_sizes[conv] = tuple(args[0].shape[2:])

    hooks = [m.register_forward_pre_hook(note_input_size) for m in fast.encoders.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        fast.encode(torch.zeros(1, *fast.image_shape, device=fast.device))
    for hook in hooks:
        hook.remove()
    for seq in fast.encoders.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq)):
            layer, after = seq[i], seq[i + 1] if i + 1 < len(seq) else None
            input_size = input_sizes.get(layer)
            if isinstance(layer, nn.Conv2d) and isinstance(after, nn.BatchNorm2d):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(layer, after), nn.Identity()
            elif isinstance(layer, nn.Linear) and isinstance(after, nn.BatchNorm1d):
                seq[i], seq[i + 1] = fuse_linear_bn_eval(layer, after), nn.Identity()
            layer = seq[i]
            if (isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) == input_size
                    and layer.padding in (0, (0, 0), "valid") and layer.groups == 1
                    and tuple(layer.dilation) == (1, 1)):
                seq[i] = _FullExtentLinear(layer)
        layers = [m for m in seq if not isinstance(m, nn.Identity)]
        for before, layer in zip(layers, layers[1:]):
            if isinstance(layer, nn.LeakyReLU) and isinstance(before, _FRESH_OUTPUT):
                layer.inplace = True
    fast.encoders.to(memory_format=torch.channels_last)
    return fast


def build_model(config: ModelConfig) -> HALI:
    """A freshly initialised HALI model for ``config``."""
    return HALI(config)
