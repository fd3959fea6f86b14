"""``halitool semisup``: semi-supervised classification with N labels, several seeds, beside published results."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from halitool.commands.common import app, count_option, device_option, force_option, output_options, seed_option
from halitool.fileio import check_output_path
from halitool.commands.report import emit

if TYPE_CHECKING:  # rich.table loads when a table is drawn, not with the CLI
    from rich.table import Table

# MNIST, 100 labels, test error % as each original paper reports it.
PUBLISHED = (
    ("VAE M1+M2 (Kingma et al. 2014)", "3.33 +- 0.14"),
    ("VAT (2015)", "2.33"),
    ("CatGAN (2015)", "1.91 +- 0.10"),
    ("Adversarial autoencoder (2015)", "1.90 +- 0.10"),
    ("SDGM (2016)", "1.32 +- 0.07"),
    ("PixelGAN autoencoder (2017)", "1.08 +- 0.15"),
    ("Ladder network (2015)", "1.06 +- 0.37"),
    ("ADGM (2016)", "0.96 +- 0.02"),
    ("Improved GAN, feature matching (2016)", "0.93 +- 0.065"),
    ("Triple-GAN (2017)", "0.91 +- 0.58"),
    ("Bad GAN (2017)", "0.795 +- 0.098"),
    ("HALI (2018), claimed", "< 0.795"),
)


def _per_protocol(result: dict) -> dict[str, dict]:
    return result["protocols"] if "protocols" in result else {result["protocol"]: result}


def results_table(result: dict) -> Table:
    """Per-seed errors (one column per protocol), mean +- std, then the published MNIST-100 results."""
    from rich.table import Table

    entries = _per_protocol(result)
    table = Table(title=f"semi-supervised, {result['labels']} labels, features {result['features']}: "
                        "test error %", title_justify="left")
    table.add_column("seed / method")
    for name in entries:
        table.add_column(name, justify="right")
    seeds = [run["seed"] for run in next(iter(entries.values()))["runs"]]
    for i, seed in enumerate(seeds):
        table.add_row(f"seed {seed}", *(f"{e['runs'][i]['error']:.2f}" for e in entries.values()))
    table.add_section()
    table.add_row("[bold]mean +- std (ours)", *(f"[bold]{e['error_mean']:.2f} +- {e['error_std']:.2f}"
                                                 for e in entries.values()))
    table.add_row("labels used", *(str(e["labels_used"]) for e in entries.values()))
    table.add_section()
    for method, error in PUBLISHED:
        table.add_row(f"[dim]{method}", f"[dim]{error}", *([""] * (len(entries) - 1)))
    notes = sorted({f"{name}: {note}" for name, e in entries.items() for note in e["notes"]})
    table.caption = "\n".join(notes + ["published rows: original papers, MNIST 100 labels"])
    table.caption_justify = "left"
    return table


def csv_rows(result: dict):
    for name, entry in _per_protocol(result).items():
        for run in entry["runs"]:
            yield {"protocol": name, "labels": entry["labels"], "features": result["features"], **run}


@click.command("semisup")
@click.argument("source", required=False)
@count_option(("--labels", "n_labels"), 100,
              help="Labelled training images N, drawn N/classes per class (per seed).")
@click.option("--protocol", default="linear",
              help="linear (CV on the N labels), linear-heldout (ALI: C on 10,000 held-out labelled images), "
                   "spread (transductive label spreading), finetune (the inference network; needs a checkpoint), "
                   "all (these four), or adversarial (per seed, train a semi-supervised HALI with the labels, or "
                   "evaluate a checkpoint trained with them).")
@click.option("--features", "levels", default=None, metavar="LEVELS",
              help="Levels to use, joined with + (z1, z2, z1+z2) [default: every level, z1+z2 for hali-mnist].")
@count_option("--seeds", 10, "Number of labelled draws (seeds seed-base .. seed-base+K-1).")
@seed_option("First seed.", name="--seed-base")
@click.option("--data", default=None, metavar="SPEC",
              help="Data set for a checkpoint SOURCE [default: mnist at $HALITOOL_DATA/mnist, fetched if missing].")
@click.option("--epochs", type=float, default=None,
              help="finetune: passes over the pseudo-labelled images [default: 2]; adversarial: epochs of "
                   "training per seed [default: the recipe's, docs/semisup.md].")
@count_option("--max-unlabelled", 10_000, minimum=0,
              help="finetune: most confident pseudo-labelled training images used (bounds the cost).")
@device_option
@output_options
@force_option
def semisup_command(source, n_labels, protocol, levels, seeds, seed_base, data, epochs, max_unlabelled, device, fmt,
                    output, force):
    """Semi-supervised classification with N labels: error on the test set, mean +- std over seeds.

    SOURCE is a features file (.h5 from `halitool extract`), a checkpoint (path or shipped name; its features
    are extracted once and cached), or nothing: the shipped hali-mnist model on MNIST. Per seed, a class-balanced
    draw of N labelled training images; the rest of train is unlabelled. The same seed gives the same draw for
    every protocol.

    \b
    Examples:
      halitool semisup --labels 100
      halitool semisup features.h5 --labels 100 --protocol all --format json
      halitool semisup hali-mnist --features z2 --seeds 5 -o semisup.json
    """
    from halitool.semisup import semisup

    if output not in (None, "-"):
        check_output_path(Path(output), force)
    result = semisup(source, n_labels=n_labels, protocol=protocol, levels=levels, seeds=seeds, seed_base=seed_base,
                     data=data, device=device, progress=app().progress, epochs=epochs, max_unlabelled=max_unlabelled)
    emit(result, command="semisup", fmt=fmt, output=output, console=app().console, table=results_table,
         csv_rows=csv_rows, force=force)
