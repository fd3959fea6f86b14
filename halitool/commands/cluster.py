"""``halitool cluster``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from halitool.commands.common import app, count_option, device_option, force_option, output_options, split_option
from halitool.commands.report import emit

if TYPE_CHECKING:
    from rich.table import Table


def _table(result: dict) -> Table:
    from rich.table import Table

    table = Table(title=f"class latent of {result['checkpoint']} on {result['n_images']:,} {result['split']} images",
                  title_justify="left")
    table.add_column("y", justify="right")
    table.add_column("images", justify="right")
    table.add_column("matched class", justify="right")
    for y, size in enumerate(result["cluster_sizes"]):
        table.add_row(str(y), f"{size:,}", str(result["matching"].get(str(y), "-")))
    caption = (f"cluster accuracy {result['cluster_accuracy']:.2f} %, NMI {result['nmi']:.3f}, "
               f"{result['clusters_used']} of {result['clusters']} values used")
    if result["classifier_error"] is not None:
        caption += f"; as a classifier (trained with labels): error {result['classifier_error']:.2f} %"
    table.caption = caption
    return table


@click.command("cluster")
@click.argument("checkpoint")
@click.option("--data", "data_spec", required=True, metavar="SPEC", help="A labelled data set: mnist[:DIR], folder:DIR.")
@split_option("test", "The images to cluster.")
@count_option("--batch-size", 500, "Images per batch.", show_default=True)
@device_option
@output_options
@force_option
def cluster_command(checkpoint, data_spec, split, batch_size, device, fmt, output, force):
    """How well a model's class latent (`halitool train --class-latent K`) finds the classes: each image goes to
    its most probable y, and the clusters are matched one to one to the data set's classes (cluster accuracy,
    the best matching's accuracy; NMI beside it). A model trained with --labels also reports its error as a
    classifier.

    \b
    Examples:
      halitool cluster runs/cl10/model.safetensors --data mnist
      halitool cluster runs/cl10/model.safetensors --data mnist --format json | jq .cluster_accuracy
    """
    from halitool.clustering import cluster

    with app().progress.task("cluster", total=None) as task:
        result = cluster(checkpoint, data_spec, split=split, device=device, batch_size=batch_size,
                         on_batch=task.advance)
    emit(result, command="cluster", fmt=fmt, output=output, console=app().console, table=_table, force=force)
