"""``halitool predict``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from halitool.commands.common import app, count_option, device_option, force_option, split_option
from halitool.fileio import atomic_write_bytes, check_output_path


@click.command("predict")
@click.argument("checkpoint")
@click.option("--data", "data_spec", required=True, metavar="SPEC", help="The data set: mnist[:DIR], celeba:DIR, folder:DIR.")
@split_option("test", "The images to classify.")
@click.option("-o", "--output", metavar="FILE|-", default="-", show_default=True,
              help="The CSV to write ('-' for stdout; a file is refused if it exists, unless --force).")
@count_option("--batch-size", 500, "Images per batch.", show_default=True)
@device_option
@force_option
def predict_command(checkpoint, data_spec, split, output, batch_size, device, force):
    """Classify the images of a split with a semi-supervised checkpoint (trained with `halitool train --labels`).

    Writes CSV, one row per image in data-set order: sample_id, class (the predicted class), and one
    probability column p_<class> per class. Where the data set has labels, the accuracy goes to stderr.

    \b
    Examples:
      halitool predict hali-mnist-ssl100 --data mnist -o preds.csv
      halitool predict runs/ssl/model.safetensors --data mnist --split train | head
    """
    from halitool.predict import predict, predictions_csv

    console = app().console
    if output != "-":
        check_output_path(Path(output), force)
    with app().progress.task("predict", total=None) as task:
        result = predict(checkpoint, data_spec, split=split, device=device, batch_size=batch_size,
                         on_batch=task.advance)
    text = predictions_csv(result)
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_bytes(Path(output), text.encode(), force=force)
    if result["accuracy"] is not None:
        console.print(f"accuracy {100 * result['accuracy']:.2f} % (error {result['error']:.2f} %) on "
                      f"{result['n_images']:,} {split} images")
