"""HALI models: the configuration, the architecture registry and the model itself.

Shapes and parameter counts of the registered architectures (levels=2; ``halitool info`` reports them for
any checkpoint):

- ``mnist``    1x28x28; z1 16x7x7, z2 64.
- ``celeba64`` 3x64x64; z1 64x16x16, z2 256 (ALI's CelebA widths).
- ``tiny``     1x28x28; z1 2x7x7, z2 8 (tests only).
"""

from halitool.models.config import ARCHITECTURES, Architecture, ModelConfig, get_architecture

# The model itself needs torch (over a second to import): halitool.models.hali loads on the first use of one of
# these names, so that the CLI can read the architectures and objectives (halitool.models.config) at start-up.
_HALI_NAMES = ("HALI", "build_model", "discriminator_loss", "generator_loss", "images_to_input")


def __getattr__(name: str):
    if name in _HALI_NAMES:
        from halitool.models import hali

        globals().update({n: getattr(hali, n) for n in _HALI_NAMES})  # bound once, as an eager import binds them
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HALI_NAMES})


__all__ = [
    "ARCHITECTURES", "Architecture", "HALI", "ModelConfig", "build_model", "discriminator_loss",
    "generator_loss", "get_architecture", "images_to_input",
]
