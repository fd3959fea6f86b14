"""``halitool reconstruct``, ``halitool sample`` and ``halitool interpolate``: PNG grids (+ fidelity metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from halitool.commands.common import (
    app,
    artifact_output_option,
    count_option,
    device_option,
    force_option,
    seed_option,
    split_option,
    summary_format_option,
)
from halitool.commands.report import default_format, emit

if TYPE_CHECKING:  # rich.table loads when a table is drawn, not with the CLI
    from rich.table import Table

_format_option = summary_format_option("json on stdout, or the grid's path on stdout and a table on stderr "
                                       "[default: table on a terminal, else json].")
_output_option = artifact_output_option("GRID.png", "The PNG grid to write (refused if it exists, unless --force).")


def _finish(result: dict, command: str, fmt: str | None, table) -> None:
    """JSON on stdout, or the grid's path on stdout with a table for people on stderr."""
    console = app().console
    fmt = fmt or default_format(None)
    emit(result, command=command, fmt=fmt, output=None, console=console, table=table)
    if fmt == "table":
        click.echo(result["output"])


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _reconstruct_table(result: dict) -> Table:
    from rich.table import Table

    table = Table(title=f"fidelity on {result['n_images']:,} {result['split']} images of {result['data']}",
                  title_justify="left")
    for name, justify in (("level", "left"), ("pixel MSE", "right"), ("class kept", "right"),
                          ("agreement", "right")):
        table.add_column(name, justify=justify)
    for level, m in result["levels"].items():
        table.add_row(level, f"{m['mse']:.5f}", _pct(m["class_kept"]), _pct(m["agreement"]))
    table.caption = f"reference classifier on the real images: {_pct(result['reference_accuracy'])}"
    return table


def _grid_table(result: dict) -> Table:
    from rich.table import Table

    table = Table(show_header=False, title=f"grid {result['output']}", title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    for key in ("checkpoint", "rows", "columns", "seed", "device"):
        table.add_row(key, str(result[key]))
    return table


@click.command("reconstruct")
@click.argument("checkpoint")
@click.option("--data", "data_spec", required=True, metavar="SPEC", help="The data set: mnist[:DIR], celeba:DIR, folder:DIR.")
@_output_option
@count_option(("-n", "n"), 16, "Images shown in the grid (a seeded random choice of the split).")
@split_option("test", "Where the images come from.", with_all=False)
@seed_option("Seed of the choice of the images shown.")
@count_option("--limit", None,
              help="Measure the metrics on the first N images of the split [default: all of them].")
@count_option("--batch-size", 500, "Images per batch.")
@device_option
@force_option
@_format_option
def reconstruct_command(checkpoint, data_spec, output, n, split, seed, limit, batch_size, device, force, fmt):
    """A grid of real images (first row) and their reconstructions through each level (one row per level:
    x -> z1 -> x, then x -> z1 -> z2 -> z1 -> x, ...), and the fidelity of each level.

    The metrics are always measured, on the whole split or its first --limit images: the pixel MSE (images in
    [0, 1]) and, where the data set has class labels, class_kept: the fraction of reconstructions a reference
    classifier assigns to the input's true class; reference_accuracy is the same classifier on the real
    images. The reference classifier is trained once on the real training split and cached
    (docs/fidelity.md).

    \b
    Examples:
      halitool reconstruct hali-mnist --data mnist -o recon.png
      halitool reconstruct hali-mnist --data mnist:~/mnist -o recon.png --limit 2000 --format json
    """
    from halitool.visualize import reconstruct

    result = reconstruct(checkpoint, data_spec, output, n=n, split=split, seed=seed, limit=limit,
                         batch_size=batch_size, device=device, force=force, progress=app().progress)
    _finish(result, "reconstruct", fmt, _reconstruct_table)


@click.command("sample")
@click.argument("checkpoint")
@_output_option
@count_option(("-n", "n"), 64, "Number of samples (laid out in ceil(sqrt(n)) columns).")
@seed_option("Seed of the prior draws.")
@count_option(("--class", "class_index"), None, "A model with a class latent: draw every sample with y = K "
              "(0 .. K-1; in a model trained with labels, the class listed K-th by `halitool info`).", minimum=0)
@device_option
@force_option
@_format_option
def sample_command(checkpoint, output, n, seed, class_index, device, force, fmt):
    """A grid of samples: the top level ~ N(0, I), then each p(z_l-1 | z_l), then p(x | z1).

    \b
    Examples:
      halitool sample hali-mnist -o samples.png
      halitool sample hali-mnist -o samples.png -n 100 --seed 3
      halitool sample runs/cl10/model.safetensors --class 3 -o threes.png
    """
    from halitool.visualize import sample

    result = sample(checkpoint, output, n=n, seed=seed, class_index=class_index, device=device, force=force)
    _finish(result, "sample", fmt, _grid_table)


@click.command("interpolate")
@click.argument("checkpoint")
@click.option("--data", "data_spec", required=True, metavar="SPEC", help="The data set: mnist[:DIR], celeba:DIR, folder:DIR.")
@_output_option
@count_option("--pairs", 4, "Pairs of real images (a seeded random choice of the split).")
@count_option("--steps", 8, "Decoded images per row, both endpoints included.", minimum=2)
@split_option("test", "Where the images come from.", with_all=False)
@seed_option("Seed of the choice of pairs.")
@device_option
@force_option
@_format_option
def interpolate_command(checkpoint, data_spec, output, pairs, steps, split, seed, device, force, fmt):
    """A grid of interpolations between pairs of real images, linear in each level's posterior mean.

    For each pair, one row per level (z1, then z2, ...): the first real image, --steps images decoded from
    (1 - t) z(a) + t z(b) for t from 0 to 1, and the second real image.

    \b
    Examples:
      halitool interpolate hali-mnist --data mnist -o interp.png
      halitool interpolate hali-mnist --data mnist -o interp.png --pairs 8 --steps 10 --seed 1
    """
    from halitool.visualize import interpolate

    result = interpolate(checkpoint, data_spec, output, pairs=pairs, steps=steps, split=split, seed=seed,
                         device=device, force=force)
    _finish(result, "interpolate", fmt, _grid_table)
