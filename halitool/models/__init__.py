"""HALI models: the configuration, the architecture registry and the model itself.

Shapes and parameter counts of the registered architectures (levels=2; ``halitool info`` reports them for
any checkpoint):

- ``mnist``    1x28x28; z1 16x7x7, z2 64.
- ``celeba64`` 3x64x64; z1 64x16x16, z2 256 (ALI's CelebA widths).
- ``tiny``     1x28x28; z1 2x7x7, z2 8 (tests only).
"""

from halitool.models.config import ARCHITECTURES, Architecture, ModelConfig, get_architecture
from halitool.models.hali import HALI, build_model, discriminator_loss, generator_loss, images_to_input

__all__ = [
    "ARCHITECTURES", "Architecture", "HALI", "ModelConfig", "build_model", "discriminator_loss",
    "generator_loss", "get_architecture", "images_to_input",
]
