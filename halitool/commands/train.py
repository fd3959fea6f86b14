"""``halitool train``."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from halitool.choices import KEEP
from halitool.commands.common import app, count_option, device_option, force_option, precision_option, seed_option
from halitool.models.config import ARCHITECTURES, OBJECTIVES  # no torch: the model itself loads in train()
from halitool.runtime import command_line


@click.command("train")
@click.option("--data", "data", required=True, metavar="SPEC", help="Data set (mnist[:DIR], celeba:DIR, folder:DIR); its train split is used.")
@click.option("--arch", type=click.Choice(sorted(ARCHITECTURES)), default="mnist", help="Architecture.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder.")
@count_option(("--n-levels", "--levels", "n_levels"), 2, "Number of latent levels (1 = ALI; up to 16).")
@click.option("--z-dims", "z_dims", metavar="W2,W3,...", default=None, callback=lambda ctx, param, value: _widths(value),
              help="Widths of the vector levels z2 .. zL, one per level above z1 [default: the architecture's, "
                   "then each level half the one below, not under 8].")
@click.option("--epochs", type=float, default=None, help="Train this many epochs in all [default: 1 unless --steps].")
@count_option("--steps", None, "Train this many steps in all (counted from the run's start).")
@count_option("--batch-size", 100, "Images per step (the global batch under torchrun).")
@click.option("--lr", type=float, default=None,
              help="Adam learning rate (the encoders and decoders; the discriminator too unless --lr-d) "
                   "[default: 3e-4; with --labels and no --class-latent the semi-supervised recipe's, 1e-3].")
@click.option("--beta1", type=float, default=0.5)
@click.option("--beta2", type=float, default=0.999)
@seed_option("Seed of the initialisation, the data order, noise and dropout.")
@device_option
@precision_option("bf16 runs under torch.autocast.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (same options).")
@force_option
@count_option("--sample-every", 1000, "Write sample and reconstruction grids every N steps.")
@count_option("--checkpoint-every", 500, "Write the checkpoint and training state every N steps.")
@count_option("--log-every", 10, "Append averaged losses to metrics.jsonl every N steps.")
@click.option("--lr-d", type=float, default=None, help="The discriminator's learning rate [default: --lr].")
@count_option("--class-latent", 0, "K: the top level becomes (y, style), y a K-way categorical latent "
              "(uniform prior) that the encoders predict; unsupervised it finds K clusters (halitool cluster), "
              "with --labels the labelled images teach it their class; --objective clustering is the recipe that "
              "finds MNIST's classes. 0: none.", minimum=0)
@count_option("--labels", None,
              "Semi-supervised: N labelled training images (N/classes per class, the draw `halitool semisup` "
              "makes for --label-seed); the discriminator learns K class logits (with --class-latent: the class "
              "latent learns their class) and the checkpoint gets a classifier.")
@click.option("--init-from", metavar="CHECKPOINT", default=None,
              help="Start from this checkpoint's tensors where name and shape match (e.g. a semi-supervised run "
                   "from an unsupervised model of the same architecture); the rest starts fresh.")
@seed_option("Seed of the labelled draw (with --labels).", name="--label-seed")
@click.option("--objective", type=click.Choice(sorted(OBJECTIVES)), default=None,
              help="Starting values of the levers below: 'recommended' (what docs/training.md found to learn), "
                   "'paper' (HALI's purely adversarial game: every lever off), 'semi-supervised' (the semi-"
                   "supervised GAN's regularisers, docs/semisup.md) or 'clustering' (with --class-latent: "
                   "recommended, no higher-level pixel reconstruction, IMSAT on q(y|x), docs/hierarchy.md) "
                   "[default: semi-supervised with --labels and no --class-latent, else recommended]. A lever "
                   "given explicitly wins.")
@click.option("--spectral-norm/--no-spectral-norm", default=None, help="Spectral normalisation of the discriminator.")
@click.option("--unary-scores/--no-unary-scores", default=None,
              help="BigBiGAN's unary discriminator scores for x and for each level, beside the joint score.")
@click.option("--instance-noise", type=float, default=None, help="Std of Gaussian noise on the discriminator's image input.")
@click.option("--r1-weight", type=float, default=None, help="Gamma of the R1 gradient penalty on inference tuples.")
@click.option("--recon-weight", type=float, default=None, help="Weight of the level-1 pixel MSE (x -> z1 -> x').")
@click.option("--recon2-weight", type=float, default=None,
              help="Weight of the pixel MSE of the higher levels' reconstructions (x -> z1 -> z2 -> z1 -> x'').")
@click.option("--cycle-weight", type=float, default=None,
              help="Weight of the latent cycle: top z ~ N(0, I) -> x -> re-encoded top z, MSE.")
@click.option("--weight-norm/--no-weight-norm", default=None, help="Weight normalisation of the discriminator.")
@click.option("--d-noise", type=float, default=None,
              help="Std of Gaussian noise on the inputs of the discriminator's hidden layers.")
@click.option("--feature-matching/--no-feature-matching", default=None,
              help="Encoders and decoders match the mean discriminator features of inference and generative tuples "
                   "instead of playing the adversarial loss.")
@click.option("--entropy-weight", type=float, default=None,
              help="Semi-supervised: weight of the class prediction's entropy on unlabelled images (minimised).")
@click.option("--imsat-weight", type=float, default=None,
              help="Class latent: weight of IMSAT's regulariser on q(y|x) of the real images (virtual adversarial "
                   "smoothness plus confident, balanced clusters), minimised by the encoders.")
@click.option("--vat-eps", type=float, default=None,
              help="Class latent: radius (L2, pixels in [0, 1]) of the virtual adversarial perturbation of "
                   "--imsat-weight's smoothness term; 0 leaves it out.")
@click.option("--level-dropout", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Fraction of tuples whose levels are zeroed in the discriminator's input (it sees x alone).")
@click.option("--ema", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Decay of an exponential moving average of the weights (e.g. 0.999): evaluation, pictures and "
                   "the checkpoint use the average; 0 keeps the raw weights [default: 0; with --labels and no --class-latent 0.999].")
@click.option("--val-size", type=int, default=None,
              help="Hold the last N images of the train split out of training, for --eval-every and --keep best "
                   "[default: 1,000, or a tenth of a smaller train split].")
@count_option("--eval-every", 500, "Every N steps: each level's reconstruction MSE, class kept and collapse "
              "indicator on the held-out slice.", show_default=True)
@click.option("--keep", type=click.Choice(KEEP), default="last", show_default=True,
              help="model.safetensors holds the last snapshot, or the checkpoint with the lowest top-level "
                   "reconstruction MSE on the held-out slice (no labels, no test data).")
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
    from halitool.models.config import PAPER_OBJECTIVE
    from halitool.train import (
        DEFAULT_LR, SEMI_SUPERVISED_EMA, SEMI_SUPERVISED_LR, TrainOptions, semi_supervised_discriminator, train,
    )

    recipe = semi_supervised_discriminator(kwargs["labels"], kwargs["class_latent"])
    if kwargs["lr"] is None:
        kwargs["lr"] = SEMI_SUPERVISED_LR if recipe else DEFAULT_LR
    if kwargs["ema"] is None:
        kwargs["ema"] = SEMI_SUPERVISED_EMA if recipe else 0.0
    preset = kwargs.pop("objective")
    levers = {name: kwargs.pop(name) for name in PAPER_OBJECTIVE}
    # No preset named: TrainOptions takes the default one (semi-supervised with --labels, else recommended).
    objective = dict(OBJECTIVES[preset]) if preset is not None else {}
    objective.update({name: value for name, value in levers.items() if value is not None})
    kwargs["objective"] = objective
    command = _command_line(click.get_current_context())
    console = app().console
    summary = train(TrainOptions(command=command, **kwargs), app().progress)
    if summary["rank"] != 0:  # under torchrun only the first process reports
        return
    console.print(f"trained {summary['steps']} steps in {summary['seconds']:.1f} s; checkpoint {summary['output']}")
    click.echo(summary["output"])


def _widths(value: str | None) -> tuple[int, ...] | None:
    """``--z-dims 64,32,16`` as (64, 32, 16); a usage error unless every width is a positive integer."""
    if value is None:
        return None
    try:
        widths = tuple(int(part) for part in value.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of positive integers", param_hint="--z-dims")
    return widths


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
        flag = next((name for name in param.opts if name.startswith("--")), param.opts[0])
        args += [flag] if value is True else [flag, str(value)]
    return shlex.join(args)
