"""``halitool probe-attributes``: linear probes for every binary attribute of a features file, per level."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from halitool.choices import CLASS_WEIGHTS, DEFAULT_C_GRID, PROBE_METRICS as METRICS, PROBE_SOLVERS as SOLVERS
from halitool.commands.common import app, count_option, device_option, force_option, output_options, seed_option
from halitool.commands.report import emit

if TYPE_CHECKING:  # rich.table loads when a table is drawn, not with the CLI
    from rich.table import Table


# presentation -------------------------------------------------------------------------------------------
def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{100 * value:.1f}"


def results_table(result: dict) -> Table:
    """Attributes down, levels and baselines across: test accuracy / balanced accuracy in percent."""
    from rich.table import Table

    sources = [(name, r) for name, r in result["levels"].items()] + [
        (f"{name}*", r) for name, r in result["baselines"].items()]
    table = Table(title=f"linear probes on {result['features']} (test accuracy/balanced accuracy, %; "
                        f"C chosen by {result['metric']} on {result['selection']['split']})", title_justify="left")
    table.add_column("attribute", style="bold", no_wrap=True)
    table.add_column("pos. %", justify="right", no_wrap=True)
    for name, _ in sources:
        table.add_column(name, justify="right", no_wrap=True)
    names = [a["name"] for a in next(iter(result["levels"].values()))["attributes"]] if result["levels"] else []
    for i, attr in enumerate(names):
        first = next(iter(result["levels"].values()))["attributes"][i]
        cells = [f"{_pct(r['attributes'][i]['accuracy'])}/{_pct(r['attributes'][i]['balanced_accuracy'])}"
                 for _, r in sources]
        table.add_row(attr, _pct(first["positive_rate"]), *cells)
    table.add_section()
    table.add_row("mean", "", *[f"{_pct(r['mean_accuracy'])}/{_pct(r['mean_balanced_accuracy'])}" for _, r in sources])
    table.add_row("AUROC", "", *[_pct(r.get("mean_auroc")) for _, r in sources])
    table.caption = "* baseline"
    return table


def published_table() -> Table:
    from rich.table import Table

    from halitool.probe_features import CELEBA_PUBLISHED

    table = Table(title="CelebA, published means over the 40 attributes (as quoted in the literature; unverified)",
                  title_justify="left")
    for column in ("method", "metric", "mean %"):
        table.add_column(column)
    for method, metric, value in CELEBA_PUBLISHED:
        table.add_row(method, metric, _pct(value))
    return table


def csv_rows(result: dict):
    for kind, group in (("level", result["levels"]), ("baseline", result["baselines"])):
        for source, r in group.items():
            for attr in r["attributes"]:
                yield {"kind": kind, "source": source, **attr}


@click.command("probe-attributes")
@click.argument("features", type=click.Path(path_type=Path))
@click.option("--levels", default=None, metavar="SPECS",
              help="Comma list of levels and joins, e.g. z1,z2,z1+z2 [default: each level and all joined].")
@click.option("--attributes", default="all", show_default=True, metavar="NAMES|all", help="Attributes to probe.")
@click.option("--C-grid", "c_grid", default=DEFAULT_C_GRID, show_default=True, metavar="GRID",
              help="Values of C: LOW:HIGH:COUNT (log-spaced) or a comma list (scikit-learn's C).")
@click.option("--metric", type=click.Choice(METRICS), default="accuracy", show_default=True,
              help="What selects C on the valid split.")
@click.option("--class-weight", type=click.Choice(CLASS_WEIGHTS), default="none", show_default=True,
              help="'balanced' weighs each class by n / (2 n_class), as scikit-learn does.")
@click.option("--max-train", type=click.IntRange(min=2), default=None, metavar="N",
              help="Fit on a stratified, seeded subsample of N training rows.")
@click.option("--solver", type=click.Choice(["auto", *SOLVERS]), default="auto", show_default=True,
              help="torch: every attribute and C at once (fast); sklearn: one LogisticRegression per fit (reference).")
@device_option
@seed_option("Seed of subsampling, of a train hold-out and of --project's projections.")
@click.option("--memory-budget", default=None, metavar="SIZE",
              help="Most memory the probes may use (e.g. 16GB, 512MB) [default: 80 % of the memory available]. A "
                   "feature set that does not fit in memory is streamed from the file; one that fits neither way "
                   "is refused before any work.")
@count_option("--project", None, "Replace every level wider than WIDTH by a seeded Gaussian random projection of "
              "its standardised values to WIDTH columns (an approximation, recorded in the result).",
              metavar="WIDTH")
@click.option("--pixel-baseline/--no-pixel-baseline", default=True, show_default=True,
              help="Also probe raw pixels reloaded from the data set the file records (skipped if unavailable).")
@click.option("--plot", type=click.Path(path_type=Path), default=None, metavar="PNG",
              help="Draw per-attribute accuracy bars per level with the majority baseline marked "
                   "(needs matplotlib: pip install 'halitool[plot]').")
@output_options
@force_option
def probe_attributes_command(features, levels, attributes, c_grid, metric, class_weight, max_train, solver, device,
                             seed, memory_budget, project, pixel_baseline, plot, fmt, output, force):
    """Linear probes for every binary attribute of FEATURES.h5, for each level and joins of levels.

    Standardises with train statistics, fits an L2 logistic probe per attribute and C, chooses C per attribute
    on the valid split (a stratified 15 % of train when there is none), and reports test accuracy, balanced
    accuracy and AUROC once, beside the majority-class and raw-pixel baselines. Exit 3 for a file that cannot be
    probed (not a complete features file, no attributes, NaN features, unknown attribute). Feature sets larger
    than the memory budget are streamed from the file in bounded memory (docs/probes.md has the memory model).

    \b
    Examples:
      halitool probe-attributes features.h5
      halitool probe-attributes features.h5 --levels z1,z1+z2 --metric balanced_accuracy --format json
      halitool probe-attributes celeba.h5 --attributes Smiling,Male --C-grid 1e-3,1e-2,1e-1 -o probes.json
      halitool probe-attributes celeba64.h5 --memory-budget 16GB --project 2048 -o probes.json
    """
    from halitool.fileio import check_output_path
    from halitool.probe_features import CELEBA_ATTRIBUTES, probe_attributes  # numpy, h5py, torch: not at start-up
    from halitool.probe_streamed import parse_size

    ctx = app()
    if plot is not None:
        from halitool import plots

        plots.require_matplotlib("--plot")  # fail in a second, not after minutes of probes
    if output not in (None, "-"):
        check_output_path(Path(output), force)
    if plot is not None:
        check_output_path(plot, force)
    result = probe_attributes(features, levels=levels, attributes=attributes, c_grid=c_grid, metric=metric,
                              class_weight=class_weight, max_train=max_train, solver=solver, device=device,
                              seed=seed, pixel_baseline=pixel_baseline, project=project, progress=ctx.progress,
                              memory_budget=parse_size(memory_budget) if memory_budget is not None else None)

    def table(res: dict):
        names = {a["name"] for r in res["levels"].values() for a in r["attributes"]}
        if names and names <= set(CELEBA_ATTRIBUTES) and len(names) == len(CELEBA_ATTRIBUTES):
            ctx.console.print(results_table(res))
            return published_table()
        return results_table(res)

    emit(result, command="probe-attributes", fmt=fmt, output=output, console=ctx.console, table=table,
         csv_rows=csv_rows, force=force)
    if plot is not None:
        plots.probe_accuracy(result, plot, force=force)
