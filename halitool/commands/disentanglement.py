"""``halitool disentanglement``: MIG and MIG-sup of each level of a features file against its factors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from halitool.choices import DISENTANGLEMENT_BINS
from halitool.commands.common import app, count_option, force_option, output_options, split_option
from halitool.commands.report import emit

if TYPE_CHECKING:  # rich.table loads when a table is drawn, not with the CLI
    from rich.table import Table


def _score(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def results_table(result: dict) -> Table:
    """Levels down; MIG, MIG-sup and each factor's own MIG gap across."""
    from rich.table import Table

    names = [f["name"] for f in result["factors"]]
    table = Table(title=f"disentanglement of {result['features']} ({result['split']}, {result['rows']:,} rows, "
                        f"{result['discretization']['bins']} bins; per factor: its MIG gap)", title_justify="left")
    for column in ("level", "dims (active)", "MIG", "MIG-sup", *names):
        table.add_column(column, justify="left" if column == "level" else "right", no_wrap=True)
    for level, r in result["levels"].items():
        active = "" if r["active_dimensions"] is None else f" ({r['active_dimensions']:,})"
        table.add_row(level, f"{r['dimensions']:,}{active}", _score(r["mig"]), _score(r["mig_sup"]),
                      *[_score(f["mig"]) for f in r["factors"]])
    table.caption = "entropy (nats): " + ", ".join(f"{f['name']} {f['entropy']:.2f}" for f in result["factors"])
    return table


def csv_rows(result: dict):
    """One row per level and factor: the factor's MIG gap and its two most informative dimensions, beside the
    level's MIG and MIG-sup."""
    entropy = {f["name"]: f["entropy"] for f in result["factors"]}
    for level, r in result["levels"].items():
        for f in r["factors"]:
            yield {"level": level, "level_mig": r["mig"], "level_mig_sup": r["mig_sup"], "factor": f["name"],
                   "entropy": entropy[f["name"]], **{k: v for k, v in f.items() if k != "name"}}


def mutual_information_rows(result: dict):
    """The mutual-information matrices as rows: one per level and dimension (its flat index, C order), one
    column per factor (nats)."""
    names = [f["name"] for f in result["factors"]]
    for level, r in result["levels"].items():
        matrix = r["mutual_information"]
        for j in range(matrix.shape[1]):
            yield {"level": level, "dimension": j, **{name: float(matrix[k, j]) for k, name in enumerate(names)}}


@click.command("disentanglement")
@click.argument("features", type=click.Path(path_type=Path))
@click.option("--levels", default=None, metavar="SPECS",
              help="Comma list of levels and joins, e.g. z1,z2,z1+z2 [default: each level].")
@click.option("--factors", default="all", show_default=True, metavar="NAMES|all",
              help="Factors to measure against: the file's /labels/factors and, where it has classes, 'class'.")
@count_option("--bins", DISENTANGLEMENT_BINS, "Equal-width bins per latent dimension and per continuous factor "
              "(disentanglement_lib's default).", minimum=2, show_default=True)
@split_option("test", "Rows measured (the split whose numbers the probes report; 'all' for every row).")
@click.option("--mi-csv", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="CSV",
              help="Also write the mutual-information matrices: one row per level and dimension, one column per "
                   "factor (nats).")
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="PNG",
              help="Draw the normalised mutual information I(z_j; v_k) / H(v_k) as a heat map per level, factors "
                   "by dimensions (needs matplotlib: pip install 'halitool[plot]').")
@output_options
@force_option
def disentanglement_command(features, levels, factors, bins, split, mi_csv, plot, fmt, output, force):
    """MIG and MIG-sup of each level of FEATURES.h5 against its factors.

    MIG (Chen et al. 2018) asks, per factor, whether one latent dimension holds much more information about it
    than any other; MIG-sup (Li et al. 2020) asks, per dimension, whether it informs about one factor much more
    than any other. Both come from the mutual information between each dimension and each factor, on codes
    binned as disentanglement_lib does; spatial levels count as their flattened dimensions. Factors are the
    file's /labels/factors (MNIST's stroke thickness, slant, width, vertical spread, ink area) and the class.
    Exit 3 for a file that cannot be measured (not a complete features file, no factors and no classes, a
    factor with a single value on the rows); exit 2 for an unknown level or factor. docs/disentanglement.md
    explains the numbers.

    \b
    Examples:
      halitool disentanglement features.h5
      halitool disentanglement features.h5 --levels z1,z2,z1+z2 --factors thickness,slant,class --format json
      halitool disentanglement features.h5 --mi-csv mi.csv --plot mi.png -o disentanglement.json
    """
    from halitool.disentanglement_features import disentanglement, without_matrices  # numpy, h5py: not at start-up
    from halitool.fileio import atomic_write_bytes, check_output_path

    ctx = app()
    if plot is not None:
        from halitool import plots

        plots.require_matplotlib("--plot")
    for path in (Path(output) if output not in (None, "-") else None, mi_csv, plot):
        if path is not None:
            check_output_path(path, force)
    result = disentanglement(features, levels=levels, factors=factors, bins=bins, split=split,
                             progress=ctx.progress)
    if mi_csv is not None:
        from halitool.commands.report import to_csv

        atomic_write_bytes(mi_csv, to_csv(mutual_information_rows(result)).encode(), force=force)
    if plot is not None:
        plots.mutual_information_heatmap(result, plot, force=force)
    emit(without_matrices(result), command="disentanglement", fmt=fmt, output=output, console=ctx.console,
         table=results_table, csv_rows=csv_rows, force=force)
