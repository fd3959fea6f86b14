"""``halitool data fetch`` and ``halitool data info``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from halitool.commands.common import app, force_option, output_options
from halitool.errors import UsageError
from halitool.commands.report import emit

if TYPE_CHECKING:  # rich.table loads when a table is drawn, not with the CLI
    from rich.table import Table


@click.group("data")
def data_group():
    """Obtain and describe data sets (SPEC: mnist[:DIR], celeba:DIR, folder:DIR)."""


@data_group.command("fetch")
@click.argument("name", type=click.Choice(["mnist"]))
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the files [default: $HALITOOL_DATA/mnist or ~/.cache/halitool/mnist].")
def fetch(name: str, root: Path | None):
    """Obtain MNIST as the four official IDX files, verify their MD5s, print the folder.

    \b
    Examples:
      halitool data fetch mnist
      halitool data fetch mnist --root ./data/mnist
    """
    from halitool.data import default_root
    from halitool.data.fetch import fetch_mnist

    console = app().console
    with console.status(f"fetching {name}"):
        folder = fetch_mnist(root or default_root(name))
    click.echo(str(folder.resolve()))


def _info_table(result: dict) -> Table:
    from rich.table import Table

    table = Table(title=f"{result['kind']} data set at {result['root']}", title_justify="left")
    table.add_column("property", style="bold")
    table.add_column("value")
    table.add_row("samples", str(result["n_samples"]))
    table.add_row("splits", ", ".join(f"{k} {v}" for k, v in result["splits"].items()))
    table.add_row("image shape (C, H, W)", str(tuple(result["image_shape"])))
    if result["classes"]:
        table.add_row("classes", str(result["classes"]["count"]))
    for attr in result["attributes"]:
        table.add_row(f"attribute {attr['name']}", f"{attr['positive_rate']:.3f} positive")
    return table


@data_group.command("info")
@click.argument("spec")
@click.option("--check", is_flag=True,
              help="Decode every image once; the first missing or undecodable file is an error.")
@output_options
@force_option
def info(spec: str, check: bool, fmt: str | None, output: str | None, force: bool):
    """What a data set holds: samples per split, image shape, classes, attributes.

    \b
    Examples:
      halitool data info mnist
      halitool data info celeba:/data/celeba --format json
      halitool data info folder:./faces --check
    """
    from halitool.data.summary import dataset_summary

    result = dataset_summary(spec, check=check, progress=app().progress)
    emit(result, command="data info", fmt=fmt, output=output, console=app().console, table=_info_table,
         force=force)


@data_group.command("cache")
@click.argument("spec")
@click.option("--crop", type=click.IntRange(min=1), default=140, show_default=True, help="Centre crop (pixels).")
@click.option("--size", type=click.IntRange(min=1), default=64, show_default=True, help="Side after resizing.")
@click.option("--rebuild", is_flag=True, help="Decode again even when a valid cache exists.")
@output_options
def cache(spec: str, crop: int, size: int, rebuild: bool, fmt: str | None, output: str | None):
    """Build (or check) the decode-once image cache of a CelebA SPEC.

    Later commands on the same SPEC and preprocessing read the cache instead of decoding JPEGs. The cache lives
    in $HALITOOL_CACHE_DIR, else $HALITOOL_DATA/cache or ~/.cache/halitool/cache; HALITOOL_CACHE=on|off|auto
    (default auto: data sets of 10,000 images or more) decides whether other commands use it.

    \b
    Examples:
      halitool data cache celeba:/data/celeba
      halitool data cache celeba:/data/celeba --crop 108 --rebuild
    """
    from halitool.data import open_dataset, parse_spec
    from halitool.data.cache import build_cache

    kind, _ = parse_spec(spec)
    if kind != "celeba":
        raise UsageError(f"data cache: SPEC {spec!r}: only celeba data sets have an image cache")
    result = build_cache(open_dataset(spec, crop=crop, size=size, cache=True), rebuild=rebuild, progress=app().progress)
    emit(result, command="data cache", fmt=fmt, output=output, console=app().console)
