"""``halitool train``."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from halitool.commands.common import app, device_option, force_option
from halitool.models import ARCHITECTURES
from halitool.runtime import command_line


@click.command("train")
@click.option("--data", "data", required=True, metavar="SPEC", help="Data set (mnist[:DIR], celeba:DIR, folder:DIR); its train split is used.")
@click.option("--arch", type=click.Choice(sorted(ARCHITECTURES)), default="mnist", help="Architecture.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder.")
@click.option("--levels", type=int, default=2, help="Number of latent levels (1 = ALI).")
@click.option("--epochs", type=float, default=None, help="Train this many epochs in all [default: 1 unless --steps].")
@click.option("--steps", type=int, default=None, help="Train this many steps in all (counted from the run's start).")
@click.option("--batch-size", type=int, default=100)
@click.option("--lr", type=float, default=1e-4, help="Adam learning rate (both players).")
@click.option("--beta1", type=float, default=0.5)
@click.option("--beta2", type=float, default=0.999)
@click.option("--seed", type=int, default=0, help="Seed of the initialisation, the data order, noise and dropout.")
@device_option
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", help="bf16 runs under torch.autocast.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (same options).")
@force_option
@click.option("--sample-every", type=int, default=1000, help="Write sample and reconstruction grids every N steps.")
@click.option("--checkpoint-every", type=int, default=500, help="Write the checkpoint and training state every N steps.")
@click.option("--log-every", type=int, default=10, help="Append averaged losses to metrics.jsonl every N steps.")
@click.option("--recon-weight", type=float, default=0.0,
              help="Add this weight x the level-1 pixel MSE (x -> z1 -> x') to the encoder/decoder loss. "
                   "Not part of HALI (0 = the paper's purely adversarial model); recorded in the config.")
def train_command(**kwargs):
    """Train a HALI model on the train split of SPEC; checkpoints, samples and metrics go to --out.

    The run folder gets model.safetensors (release checkpoint with the exact command), state.safetensors and
    state.json (for --resume), metrics.jsonl and samples-STEP.png / recon-STEP.png grids (recon rows: the
    images, then their reconstruction through z1, z2, ...). A loss that turns NaN or infinite stops the run
    with exit 1 and keeps the last good checkpoint. Under torchrun the same command trains data-parallel
    (--batch-size is the global batch, split across the processes; NCCL on GPUs, gloo on CPUs).

    \b
    Examples:
      halitool train --data mnist --arch mnist --epochs 10 --out runs/mnist
      halitool train --data mnist --arch mnist --epochs 20 --out runs/mnist --resume
      halitool train --data celeba:/data/celeba --arch celeba64 --device cuda --precision bf16 --out runs/celeba
      torchrun --nproc-per-node=4 -m halitool train --data celeba:/data/celeba --arch celeba64 --out runs/c4
    """
    from halitool.train import TrainOptions, train

    for name in ("steps", "batch_size", "sample_every", "checkpoint_every", "log_every"):
        if kwargs[name] is not None and kwargs[name] < 1:
            raise click.BadParameter("must be at least 1", param_hint="--" + name.replace("_", "-"))
    command = _command_line(click.get_current_context())
    console = app().console
    summary = train(TrainOptions(command=command, **kwargs), console)
    if summary["rank"] != 0:  # under torchrun only the first process reports
        return
    console.print(f"trained {summary['steps']} steps in {summary['seconds']:.1f} s; checkpoint {summary['output']}")
    click.echo(summary["output"])


def _command_line(ctx: click.Context) -> str:
    """The command as typed when run as ``halitool``/``python -m halitool``, else rebuilt from the options given."""
    typed = command_line()
    if typed:
        return typed
    args = ["halitool", "train"]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        value = ctx.params.get(param.name)
        if source is click.core.ParameterSource.DEFAULT or value is None or value is False:
            continue
        flag = param.opts[-1] if param.opts[-1].startswith("--") else param.opts[0]
        args += [flag] if value is True else [flag, str(value)]
    return shlex.join(args)
