"""Model configuration (a frozen dataclass that travels inside checkpoints) and the architecture registry."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from halitool.errors import BadInputError


@dataclass(frozen=True)
class Architecture:
    """The widths and shapes of one named HALI architecture, of one of two kinds.

    ``kind="conv"``: the image (C, H, W) goes through stride-2 4x4 convolutions of ``x_widths`` (each halves H
    and W) to a spatial ``z1`` of ``z1_channels`` x H/2^k x W/2^k. Every later level is a vector: ``q(z2|z1)`` convolves
    ``z1`` down with stride-2 4x4 convolutions of ``down_widths`` and one "valid" convolution over what is
    left to a ``hidden`` wide vector; ``q(z_l|z_l-1)`` for l > 2 is a pair of 1x1 layers of ``hidden``.
    Decoders mirror their encoders with transposed convolutions. The discriminator mirrors the x encoder
    (``x_widths``), joins z1 and convolves down (``d_z1_widths`` then ``down_widths``, then one valid
    convolution to ``d_hidden``), joins every vector level through its own two 1x1 layers of ``d_hidden``,
    and ends in 1x1 layers of ``d_hidden`` and one logit (K class logits in a semi-supervised model).

    ``kind="mlp"``: every network is fully connected and every level a vector. ``q(z1|x)`` is an MLP of hidden
    widths ``x_widths`` from the flattened image to ``z1_channels`` dimensions, ``p(x|z1)`` its mirror; the higher
    levels are pairs of ``hidden``-wide layers; the discriminator's image path is an MLP of ``d_x_widths``, each
    level joins through a layer of ``d_hidden``, and the output is a ``d_hidden`` layer and the logit(s). This is
    the shape of the semi-supervised GANs' MNIST networks (Salimans et al. 2016), and fast on a CPU.
    """

    name: str
    image_shape: tuple[int, int, int]
    x_widths: tuple[int, ...]
    z1_channels: int
    down_widths: tuple[int, ...]
    hidden: int
    z_dims: tuple[int, ...]  # the listed sizes of the vector levels z2, z3, ... (see default_z_dims beyond)
    d_z1_widths: tuple[int, ...]
    d_hidden: int
    description: str = ""
    kind: str = "conv"
    d_x_widths: tuple[int, ...] = ()  # mlp only: the discriminator's image path

    @property
    def z1_size(self) -> tuple[int, int]:
        k = 2 ** len(self.x_widths)
        return self.image_shape[1] // k, self.image_shape[2] // k

    @property
    def z1_shape(self) -> tuple[int, ...]:
        """z1's shape per image: a map (channels, H, W) for conv, a vector (dims,) for mlp."""
        return (self.z1_channels,) if self.kind == "mlp" else (self.z1_channels, *self.z1_size)


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    ARCHITECTURES[arch.name] = arch
    return arch


register_architecture(Architecture(
    name="mnist",
    image_shape=(1, 28, 28),
    x_widths=(32, 64),
    z1_channels=16,
    down_widths=(),
    hidden=256,
    z_dims=(64, 32),
    d_z1_widths=(32,),
    d_hidden=256,
    description="MNIST 1x28x28; z1 16x7x7 spatial, z2 64 (z3 32 with --levels 3). Sized to train on a CPU.",
))

# The capacity lever of docs/training.md's ablation: `mnist` with twice the widths everywhere.
register_architecture(Architecture(
    name="mnist-wide",
    image_shape=(1, 28, 28),
    x_widths=(64, 128),
    z1_channels=16,
    down_widths=(),
    hidden=512,
    z_dims=(64, 32),
    d_z1_widths=(64,),
    d_hidden=512,
    description="MNIST 1x28x28 as `mnist` with doubled widths (encoder, decoder and discriminator).",
))

# ALI's published CelebA model (Dumoulin et al. 2016, appendix) with its widths (64..512 in the encoder, 256-d top latent,
# 1024-wide D(z), 2048-wide joint layers, LeakyReLU 0.02, dropout 0.2), rearranged into two levels: padded
# stride-2 4x4 convolutions so that z1 is a 64x16x16 map instead of ALI's unpadded 7x7/5x5 chain to 1x1.
register_architecture(Architecture(
    name="celeba64",
    image_shape=(3, 64, 64),
    x_widths=(64, 128),
    z1_channels=64,
    down_widths=(256, 512),
    hidden=512,
    z_dims=(256, 128),
    d_z1_widths=(256,),
    d_hidden=1024,
    description="CelebA 3x64x64 (ALI's CelebA widths); z1 64x16x16 spatial, z2 256 (z3 128 with --levels 3).",
))

# The semi-supervised GANs' MNIST shape (Salimans et al. 2016: discriminator 784-1000-500-250-250-250, generator
# 500-500-784) as a two-level HALI: q(z1|x) 784-500-500-64, q(z2|z1) 64-256-32 and mirrors; the discriminator's
# image path 1000-500-250-250, each level joined through 250 units.
register_architecture(Architecture(
    name="mnist-mlp",
    image_shape=(1, 28, 28),
    x_widths=(500, 500),
    z1_channels=64,
    down_widths=(),
    hidden=256,
    z_dims=(32, 16),
    d_z1_widths=(),
    d_hidden=250,
    kind="mlp",
    d_x_widths=(1000, 500, 250, 250),
    description="MNIST 1x28x28, fully connected; z1 64, z2 32 (z3 16 with --levels 3). Fast on a CPU; the "
                "semi-supervised recipe's architecture.",
))

register_architecture(Architecture(
    name="tiny-mlp",
    image_shape=(1, 28, 28),
    x_widths=(16,),
    z1_channels=8,
    down_widths=(),
    hidden=16,
    z_dims=(4, 4),
    d_z1_widths=(),
    d_hidden=16,
    kind="mlp",
    d_x_widths=(16,),
    description="Test-sized 1x28x28, fully connected; z1 8, z2 4 (z3 4 with --levels 3). For tests only.",
))

register_architecture(Architecture(
    name="tiny",
    image_shape=(1, 28, 28),
    x_widths=(4, 8),
    z1_channels=2,
    down_widths=(),
    hidden=16,
    z_dims=(8, 4),
    d_z1_widths=(8,),
    d_hidden=16,
    description="Test-sized 1x28x28; z1 2x7x7 spatial, z2 8 (z3 4 with --levels 3). For tests only.",
))


# The deepest hierarchy a model may have (levels z1 .. z16).
MAX_LEVELS = 16
# The narrowest vector level the width rule of default_z_dims gives.
MIN_RULE_WIDTH = 8


def default_z_dims(arch: Architecture, n_levels: int) -> tuple[int, ...]:
    """The widths of the vector levels z2 .. z_L when none are given: the architecture's listed widths, then
    each further level half as wide as the one below it, never narrower than :data:`MIN_RULE_WIDTH` (or the
    last listed width, if that is narrower). ``mnist`` with 6 levels: 64, 32, 16, 8, 8."""
    dims = list(arch.z_dims[: max(0, n_levels - 1)])
    while len(dims) < n_levels - 1:
        dims.append(max(dims[-1] // 2, min(MIN_RULE_WIDTH, dims[-1])))
    return tuple(dims)


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise BadInputError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None


# The levers that make the adversarial game learn on a small budget (docs/training.md measures each one).
# A checkpoint written before a lever existed lacks its key and was trained without it: LEGACY gives the
# value that rebuilds such a model exactly as it was.
LEGACY = {"spectral_norm": False, "instance_noise": 0.0, "r1_weight": 0.0, "unary_scores": False,
          "recon2_weight": 0.0, "cycle_weight": 0.0, "weight_norm": False, "d_noise": 0.0,
          "feature_matching": False, "n_classes": 0, "entropy_weight": 0.0,
          "level_dropout": 0.0, "z_dims": None, "class_latent": 0, "imsat_weight": 0.0, "vat_eps": 0.0}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: the architecture name, the number of levels and the widths of the
    vector levels, the hyperparameters and the training objective.

    ``z_dims`` are the widths of z2 .. z_L (``n_levels - 1`` of them); left out (None), they follow
    :func:`default_z_dims`, and the config keeps the widths so resolved, so a checkpoint always records them.

    The objective is ALI's game over the whole tuple (x, z1, ..., zL) plus these levers (each 0/False turns it
    off; all off is the paper's purely adversarial HALI, :data:`PAPER_OBJECTIVE`):

    - ``spectral_norm``: spectral normalisation of every discriminator layer (Miyato et al. 2018); the
      discriminator then has no batch norm.
    - ``instance_noise``: std of Gaussian noise added to the discriminator's image input (in [-1, 1] units).
    - ``r1_weight``: gamma of the R1 penalty gamma/2 * E ||grad D(x, z1, ...)||^2 on inference tuples
      (Mescheder et al. 2018).
    - ``unary_scores``: BigBiGAN's unary terms (Donahue & Simonyan 2019): besides the joint score, one score
      for x alone and one for each level alone, each with its own adversarial loss.
    - ``recon_weight``: weight of the level-1 pixel MSE of x -> z1 sample -> x'.
    - ``recon2_weight``: weight of the pixel MSE of each higher level's reconstruction x -> ... -> z_l sample
      -> posterior-mean decoding back to x (summed over levels 2..L).
    - ``cycle_weight``: weight of the latent cycle (ALICE-style, in latent space): z_L ~ N(0, I) down the
      generative chain to x, re-encoded to the posterior mean of z_L; the MSE against the z_L drawn.
    - ``weight_norm``: weight normalisation of every discriminator layer (Salimans & Kingma 2016).
    - ``d_noise``: std of Gaussian noise added to the input of every discriminator layer after the first
      (the semi-supervised GAN's regulariser, Salimans et al. 2016; ``instance_noise`` is the first layer's).
    - ``feature_matching``: the decoders minimise, instead of their adversarial loss, the squared distance
      between the mean discriminator features (its last hidden layer) of generative tuples and of inference
      tuples (Salimans et al. 2016); the inference tuples are the fixed target, and the encoders keep their
      adversarial loss.
    - ``entropy_weight``: (semi-supervised) weight of the mean entropy of the class prediction on unlabelled
      inference tuples, minimised by the discriminator (entropy minimisation, Grandvalet & Bengio 2005).
    - ``level_dropout``: the fraction of tuples (of every kind) whose levels are all zeroed in the
      discriminator's input during training, so that it sees x alone.
    - ``imsat_weight``: (class latent) weight of an information-maximising regulariser on q(y | x) of the
      real images (IMSAT, Hu et al. 2017), minimised by the encoders: the virtual adversarial smoothness term
      (``vat_eps`` below) plus 0.1 x (H(y | x) - 4 H(y)), the entropies over the batch; so the encoder's y
      partitions the data into confident, balanced clusters that small changes of an image do not move.
    - ``vat_eps``: the radius (L2, in [0, 1] pixel units) of the virtual adversarial perturbation (Miyato et
      al. 2018) of that smoothness term: the KL divergence of q(y | x + r) from q(y | x) for the r of this norm
      that changes q(y | x) most; 0 drops that term (the information term stays).

    ``n_classes`` K > 0 makes the model semi-supervised: the joint discriminator gives K class logits, and its
    joint score (inference tuple against generative tuple) is their log-sum-exp, the "fake" logit being fixed at 0.

    ``class_latent`` K > 0 partially specifies the top level: z_L is (y, style), y a K-way categorical (uniform
    prior, one-hot in the tuple) and style Gaussian (``z_dims[-1]`` wide), so the level is K + ``z_dims[-1]``
    wide. The top encoder predicts q(y | z_L-1); a sample of the inference chain draws a one-hot y from it (its
    gradient straight through the probabilities) and its posterior mean is the probabilities. With
    ``cycle_weight`` the latent cycle also asks the encoders to recover the y a generated image was drawn from
    (cross-entropy, InfoGAN's mutual-information term); with labelled images the top encoder learns their
    class (cross-entropy). The discriminator sees y like any level. Needs 2 levels or more; not with n_classes.
    """

    arch: str = "mnist"
    n_levels: int = 2
    leak: float = 0.02  # LeakyReLU slope (ALI CelebA)
    dropout: float = 0.2  # on the inputs of discriminator layers (ALI)
    init_std: float = 0.01  # weights ~ N(0, init_std), biases 0 (ALI)
    recon_weight: float = 0.0
    spectral_norm: bool = False
    instance_noise: float = 0.0
    r1_weight: float = 0.0
    unary_scores: bool = False
    recon2_weight: float = 0.0
    cycle_weight: float = 0.0
    weight_norm: bool = False
    d_noise: float = 0.0
    feature_matching: bool = False
    n_classes: int = 0
    entropy_weight: float = 0.0
    level_dropout: float = 0.0
    z_dims: tuple[int, ...] | None = None
    class_latent: int = 0
    imsat_weight: float = 0.0
    vat_eps: float = 0.0

    def __post_init__(self) -> None:
        arch = get_architecture(self.arch)
        if isinstance(self.n_levels, bool) or not isinstance(self.n_levels, int) \
                or not 1 <= self.n_levels <= MAX_LEVELS:
            raise BadInputError(f"a model has 1 to {MAX_LEVELS} levels, not {self.n_levels!r}")
        z_dims = default_z_dims(arch, self.n_levels) if self.z_dims is None else self.z_dims
        if not isinstance(z_dims, (list, tuple)) or len(z_dims) != self.n_levels - 1 \
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in z_dims):
            raise BadInputError(f"z_dims must be {self.n_levels - 1} positive integers (the widths of z2 .. "
                                f"z{self.n_levels}), not {self.z_dims!r}")
        object.__setattr__(self, "z_dims", tuple(z_dims))  # frozen; a JSON list becomes the tuple a config holds
        k = self.class_latent
        if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k == 1:
            raise BadInputError(f"class_latent must be 0 (none) or at least 2 classes, not {k!r}")
        if k and self.n_levels < 2:
            raise BadInputError("class_latent needs 2 levels or more (the top level holds the class)")
        if k and self.n_classes:
            raise BadInputError("class_latent and n_classes cannot both be set (the class is either a latent "
                                "or the discriminator's)")
        if not 0.0 <= self.dropout < 1.0:
            raise BadInputError(f"dropout must be in [0, 1), not {self.dropout!r}")
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, int) or self.n_classes < 0 \
                or self.n_classes == 1:
            raise BadInputError(f"n_classes must be 0 (unsupervised) or at least 2, not {self.n_classes!r}")
        if (self.imsat_weight or self.vat_eps) and not k:
            raise BadInputError("imsat_weight and vat_eps apply to a model with a class latent (train with "
                                "--class-latent)")
        if self.entropy_weight and not self.n_classes:
            raise BadInputError("entropy_weight applies to a semi-supervised model (train with --labels)")
        if self.spectral_norm and self.weight_norm:
            raise BadInputError("spectral_norm and weight_norm cannot both be on (each reparametrises the weights)")
        for name in ("recon_weight", "instance_noise", "r1_weight", "recon2_weight", "cycle_weight", "d_noise",
                     "entropy_weight", "level_dropout", "imsat_weight", "vat_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise BadInputError(f"{name} must be a number >= 0, not {value!r}")
        if not self.level_dropout < 1.0:
            raise BadInputError(f"level_dropout must be in [0, 1), not {self.level_dropout!r}")
        for name in ("spectral_norm", "unary_scores", "weight_norm", "feature_matching"):
            if not isinstance(getattr(self, name), bool):
                raise BadInputError(f"{name} must be true or false, not {getattr(self, name)!r}")

    @property
    def objective(self) -> dict:
        """The objective's levers (the fields of :data:`PAPER_OBJECTIVE`) and their values."""
        return {name: getattr(self, name) for name in PAPER_OBJECTIVE}

    @property
    def class_outputs(self) -> int:
        """K of the model's class prediction: the discriminator's class logits, or the class latent's; 0 if none."""
        return self.n_classes or self.class_latent

    @property
    def level_widths(self) -> tuple[int, ...]:
        """The widths of the vector levels z2 .. z_L as the networks see them (the top one holds y and style)."""
        return (*self.z_dims[:-1], self.z_dims[-1] + self.class_latent) if self.z_dims else ()

    @property
    def architecture(self) -> Architecture:
        return get_architecture(self.arch)

    def to_dict(self) -> dict:
        """The config as its JSON reads back (the widths a list), so a dict from a file compares equal."""
        return {**dataclasses.asdict(self), "z_dims": list(self.z_dims)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Build from a dict; unknown keys are an error (a config from a newer or different tool)."""
        if not isinstance(d, dict):
            raise BadInputError(f"model config must be a JSON object, not {type(d).__name__}")
        if "levels" in d and "n_levels" not in d:  # the count's name in checkpoints of halitool 0.1
            d = {("n_levels" if k == "levels" else k): v for k, v in d.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise BadInputError(f"unknown model config keys: {', '.join(unknown)}")
        try:
            return cls(**{**LEGACY, **d})
        except TypeError as exc:
            raise BadInputError(f"bad model config {json.dumps(d)}: {exc}") from None


# The paper's objective: ALI's game over the whole tuple, nothing else.
PAPER_OBJECTIVE = {"spectral_norm": False, "instance_noise": 0.0, "r1_weight": 0.0, "unary_scores": False,
                   "recon_weight": 0.0, "recon2_weight": 0.0, "cycle_weight": 0.0, "weight_norm": False,
                   "d_noise": 0.0, "feature_matching": False, "entropy_weight": 0.0, "level_dropout": 0.0,
                   "imsat_weight": 0.0, "vat_eps": 0.0}

# What `halitool train` uses unless told otherwise: the levers that made the mnist model learn on a CPU budget
# (docs/training.md has the ablation behind each value).
RECOMMENDED_OBJECTIVE = {**PAPER_OBJECTIVE, "spectral_norm": True, "unary_scores": True,
                         "recon_weight": 100.0, "recon2_weight": 100.0, "cycle_weight": 1.0}

# What `halitool train --labels N` uses unless told otherwise: the semi-supervised GAN's regularisers on the joint
# discriminator (docs/semisup.md measures each one).
SEMI_SUPERVISED_OBJECTIVE = {**PAPER_OBJECTIVE, "weight_norm": True, "instance_noise": 0.3, "d_noise": 0.5,
                             "feature_matching": True, "recon_weight": 100.0, "recon2_weight": 100.0,
                             "level_dropout": 0.5}

# What finds MNIST's classes with a class latent (`halitool train --class-latent 10 --objective clustering`):
# the recommended levers without the higher levels' pixel reconstruction (which lets the style carry the digit)
# and with IMSAT's regulariser on q(y | x) (docs/hierarchy.md measures both). The radius is in [0, 1] pixel
# units, chosen on MNIST's validation slice.
CLUSTERING_OBJECTIVE = {**RECOMMENDED_OBJECTIVE, "recon2_weight": 0.0, "imsat_weight": 10.0, "vat_eps": 2.0}

# The presets of `halitool train --objective`.
OBJECTIVES = {"recommended": RECOMMENDED_OBJECTIVE, "paper": PAPER_OBJECTIVE, "semi-supervised": SEMI_SUPERVISED_OBJECTIVE,
              "clustering": CLUSTERING_OBJECTIVE}
