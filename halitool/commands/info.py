"""``halitool info``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from halitool.commands.common import app, force_option, output_options
from halitool.commands.report import emit

if TYPE_CHECKING:  # rich.table loads when a table is drawn, not with the CLI
    from rich.table import Table


def checkpoint_summary(name_or_path: str) -> dict:
    """What a checkpoint is: config, level shapes, parameter counts, provenance, metrics, hash."""
    from halitool.checkpoint import load_checkpoint

    loaded = load_checkpoint(name_or_path)
    model = loaded.model
    return {
        "path": str(loaded.path.resolve()),
        "sha256": loaded.sha256,
        "config": loaded.config.to_dict(),
        "architecture": model.arch.description,
        "image_shape": list(model.image_shape),
        "levels": {name: list(shape) for name, shape in model.level_shapes.items()},
        "parameters": model.parameter_counts(),
        "preprocessing": loaded.preprocessing,
        "training": loaded.training,
        "metrics": loaded.metrics,
        "classifier": loaded.classifier,
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):  # records (training legs): one line each
            return "\n".join(_fmt(v) for v in value)
        return "x".join(map(str, value)) if all(isinstance(v, int) for v in value) else str(value)
    return str(value)


def _table(result: dict) -> Table:
    from rich.table import Table

    table = Table(title=f"checkpoint {result['path']}", show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    cfg = result["config"]
    table.add_row("architecture", f"{cfg['arch']}: {result['architecture']}")
    table.add_row("image (C, H, W)", _fmt(result["image_shape"]))
    for name, shape in result["levels"].items():
        table.add_row(f"level {name}", _fmt(shape))
    table.add_row("config", _fmt(cfg))
    table.add_row("parameters", ", ".join(f"{k} {v:,}" for k, v in result["parameters"].items()))
    for key, value in result["training"].items():
        table.add_row(f"training {key}", _fmt(value))
    for key, value in result["metrics"].items():
        table.add_row(f"metric {key}", _fmt(value))
    if result["classifier"]:
        section = result["classifier"]
        how = ("the class latent's q(y | x)" if result["config"].get("class_latent")
               else "the discriminator's class logits on x and the posterior means")
        table.add_row("classifier", f"{len(section['classes'])} classes ({', '.join(section['classes'])}): {how}")
        table.add_row("classifier labelled draw", _fmt(section["labelled"]))
    table.add_row("sha256", result["sha256"])
    return table


@click.command("info")
@click.argument("checkpoint")
@output_options
@force_option
def info_command(checkpoint: str, fmt: str | None, output: str | None, force: bool):
    """What a checkpoint is: architecture, levels and shapes, parameters, training provenance, metrics, hash,
    and for a semi-supervised model its classifier (classes and the labelled draw it was trained with).

    CHECKPOINT is a path or the name of a shipped model (hali-mnist -> pretrained/hali-mnist.safetensors).

    \b
    Examples:
      halitool info hali-mnist
      halitool info runs/mnist/model.safetensors --format json
    """
    emit(checkpoint_summary(checkpoint), command="info", fmt=fmt, output=output, console=app().console, table=_table,
         force=force)
