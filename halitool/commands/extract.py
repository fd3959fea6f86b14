"""``halitool extract`` and ``halitool inspect``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from halitool import settings
from halitool.choices import LATENTS
from halitool.commands.common import (
    app,
    artifact_output_option,
    count_option,
    device_option,
    force_option,
    precision_option,
    seed_option,
    split_option,
    summary_format_option,
)
from halitool.commands.report import emit

if TYPE_CHECKING:  # rich.table loads when a table is drawn, not with the CLI
    from rich.table import Table


def _extract_table(result: dict) -> Table:
    from rich.table import Table

    table = Table(title=f"features {result['output']}", show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("rows", f"{result['n_samples']:,}")
    for name, shape in result["levels"].items():
        table.add_row(f"level {name}", "x".join(map(str, shape)))
    table.add_row("device", result["device"])
    table.add_row("seconds", f"{result['seconds']:.1f}")
    rate = result["images_per_second"]
    table.add_row("images/s", f"{rate:,.0f}" if rate else "-")
    return table


@click.command("extract")
@click.argument("checkpoint")
@click.option("--data", "data_spec", required=True, metavar="SPEC",
              help="The data set: mnist[:DIR], celeba:DIR or folder:DIR.")
@artifact_output_option("OUT.h5", "The features file to write (HDF5 schema v1).")
@split_option("all", "Which rows to encode.")
@click.option("--levels", default=None, metavar="z1,z2",
              help="Comma-separated levels to store [default: every level].")
@click.option("--latent", type=click.Choice(LATENTS), default="mean",
              help="The posterior mean, or one sample (seeded by --seed).")
@seed_option("Seed of --latent sample (recorded in the file).")
@click.option("--with-logvar", is_flag=True, help="Also store each level's posterior log-variance.")
@count_option("--batch-size", 256, "Images per batch.")
@device_option
@precision_option("Compute precision (bf16 autocast on CPU and CUDA; features are stored as float32).")
@count_option("--workers", 0, "Threads decoding images ahead of the encoder (0: decode in the main thread).", minimum=0)
@click.option("--compile", "compile_", is_flag=True,
              help="Encode through torch.compile (pays on GPUs for large data sets; falls back without it).")
@click.option("--resume", is_flag=True, help="Finish the partial file an interrupted run left beside OUT.")
@force_option
@summary_format_option()
def extract_command(checkpoint, data_spec, output, split, levels, latent, seed, with_logvar, batch_size, device,
                    precision, workers, compile_, resume, force, fmt):
    """Per-level latent features of every image of a data set, written to an HDF5 features file.

    CHECKPOINT is a path or a shipped model name (hali-mnist). Rows keep the data set's order. The file is
    written beside OUT as OUT.partial and renamed when complete; an interrupted run leaves the partial, which
    --resume finishes if the checkpoint, data and options are the same. Under torchrun
    (torchrun --nproc-per-node=K -m halitool extract ...) the rows are split across the ranks.

    \b
    Examples:
      halitool extract hali-mnist --data mnist -o features.h5
      halitool extract hali-mnist --data mnist:~/mnist --split test --levels z2 -o z2.h5 --format json
      halitool extract model.safetensors --data celeba:~/celeba -o celeba.h5 --workers 4 --resume
      torchrun --nproc-per-node=2 -m halitool extract hali-mnist --data mnist -o features.h5
    """
    from halitool.extract import extract_features

    console = app().console
    result = extract_features(
        checkpoint, data_spec, output, split=split, levels=levels, latent=latent, seed=seed,
        with_logvar=with_logvar, batch_size=batch_size, device=device, precision=precision, workers=workers,
        compile=compile_, resume=resume, force=force, progress=app().progress,
    )
    if settings.torchrun().rank == 0:  # under torchrun, one summary for the whole run
        emit(result, command="extract", fmt=fmt, output=None, console=console, table=_extract_table)


def _fmt(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _inspect_table(result: dict) -> Table:
    from rich.table import Table

    table = Table(title=f"features {result['path']}", show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("format", f"{result['format']} v{result['format_version']}")
    table.add_row("complete", "yes" if result["complete"] else f"no ({result['rows_done']:,} rows written)")
    table.add_row("rows", f"{result['n_samples']:,} ("
                  + ", ".join(f"{k} {v:,}" for k, v in result["splits"].items()) + ")")
    for name, level in result["levels"].items():
        table.add_row(f"level {name}", "x".join(map(str, level["shape"]))
                      + f" (D = {level['dim']}{', with logvar' if level['logvar'] else ''})")
    table.add_row("classes", ", ".join(result["classes"]) if result["classes"] is not None else "-")
    table.add_row("attributes", f"{len(result['attributes'])}: " + ", ".join(result["attributes"])
                  if result["attributes"] else "-")
    table.add_row("factors", f"{len(result['factors'])}: " + ", ".join(result["factors"])
                  if result["factors"] else "-")
    for key, value in result["provenance"].items():
        if key != "extract_options":  # resume bookkeeping, in the JSON output only
            table.add_row(key, _fmt(value))
    return table


@click.command("inspect")
@click.argument("features", type=click.Path(dir_okay=False))
@summary_format_option("json on stdout, or a table on stderr [default: table on a terminal].")
def inspect_command(features, fmt):
    """What a features file holds: schema version, provenance, rows per split, levels, labels, completeness.

    \b
    Examples:
      halitool inspect features.h5
      halitool inspect features.h5 --format json | jq .levels
    """
    from halitool.features import describe_features

    emit(describe_features(features), command="inspect", fmt=fmt, output=None, console=app().console,
         table=_inspect_table)
