"""The weights' exponential moving average (``halitool train --ema``) and the batch-norm statistics it needs."""

from __future__ import annotations

import torch

from halitool.models import HALI


@torch.no_grad()
def update_average(averaged: HALI, model: HALI, decay: float, step: int) -> None:
    """One step of the weights' exponential moving average (Polyak averaging, as the semi-supervised GAN
    evaluated with), with the usual warm-up so that the first steps do not weigh the initialisation; buffers
    (batch-norm statistics) are copied."""
    rate = 1.0 - min(decay, (1.0 + step) / (10.0 + step))
    torch._foreach_lerp_(list(averaged.parameters()), list(model.parameters()), rate)
    for mine, theirs in zip(averaged.buffers(), model.buffers()):
        mine.copy_(theirs)


@torch.no_grad()
def recalibrate_decoders(model: HALI, x: torch.Tensor, batch_size: int = 500) -> None:
    """Recompute the decoders' batch-norm statistics as the exact average over the reconstruction path of the
    images ``x`` (each level decoded from the posterior means), the path reconstruct and interpolate use.

    The weights' moving average needs it: its copied running statistics belong to the raw weights, and those
    mix generative with reconstruction batches (measured on the 100-label model: level-1 validation MSE 0.048
    in eval mode against 0.006 after recalibration). Encoders and discriminator are untouched, so the
    classifier's outputs do not change."""
    norms = [m for m in model.decoders.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
        m.train()
    for i in range(0, len(x), batch_size):
        zs = model.encode(x[i: i + batch_size].to(model.device))
        for level in model.level_names:
            model.decode(level, zs[level])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
        m.eval()
    model.train(was_training)
