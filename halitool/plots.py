"""Figures drawn with matplotlib: data in, one PNG file out (written atomically).

matplotlib is the optional ``plot`` extra (``pip install 'halitool[plot]'``). It is imported inside the functions
that draw, so importing this module costs nothing and the rest of halitool works without it. Figures are built
on matplotlib's object-oriented API with an explicit Agg canvas, never through pyplot: pyplot keeps global
figures and picks a backend for the whole process, which a library must not do to a user's notebook or GUI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from halitool.errors import BadInputError, UsageError
from halitool.fileio import atomic_path

INSTALL_HINT = "pip install 'halitool[plot]'"
DPI = 100
# matplotlib's default colour cycle, named so bars and legends agree without touching rcParams.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


class MatplotlibMissing(UsageError):
    """A plot was asked for and matplotlib is not installed (a UsageError: exit 2, one ``Error:`` line)."""


def require_matplotlib(what: str = "plotting") -> None:
    """Raise :class:`MatplotlibMissing` now, before any long computation whose result is to be plotted."""
    _figure_class(what)


def _figure_class(what: str):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MatplotlibMissing(f"{what} needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


def _save(fig, canvas_class, path: Path, force: bool, check: bool = True) -> Path:
    canvas_class(fig)  # attaches the Agg canvas: rendering never consults the process-wide backend
    with atomic_path(path, force=force, check=check) as tmp:
        # The temporary name ends in .tmp, so the format is given rather than guessed from the suffix.
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


# probe-attributes ---------------------------------------------------------------------------------------
def probe_accuracy(result: dict, png_path: Path, force: bool = False) -> Path | None:
    """Per-attribute horizontal bars of test accuracy (%) for each level of a ``probe-attributes`` result,
    with the majority-class baseline as a black tick; None (nothing written) when the result has no levels."""
    Figure, Canvas = _figure_class("--plot")
    levels = list(result["levels"].items())
    if not levels:
        return None
    names = [a["name"] for a in levels[0][1]["attributes"]]
    majority = [a["accuracy"] for a in result["baselines"]["majority"]["attributes"]]
    n, k = len(names), len(levels)
    bar = 0.8 / k  # the levels of one attribute share 80 % of its row; the rest separates attributes
    # Height grows with the rows (0.06 in a bar, 0.1 in between attributes: CelebA's 40 by 4 levels stay legible
    # at 14 in); the floor leaves room for the legend when there are few attributes.
    fig = Figure(figsize=(8, max(2.4, 1.2 + n * (0.06 * k + 0.1))), dpi=DPI)
    ax = fig.add_subplot()
    for j, (level, r) in enumerate(levels):
        values = [100 * a["accuracy"] if _finite(a["accuracy"]) else 0.0 for a in r["attributes"]]
        ys = [i - 0.4 + bar * (j + 0.5) for i in range(n)]
        ax.barh(ys, values, height=bar, color=COLOURS[j % len(COLOURS)], label=level)
    ticks = [(i, 100 * value) for i, value in enumerate(majority) if _finite(value)]
    for t, (i, x) in enumerate(ticks):
        ax.plot([x, x], [i - 0.45, i + 0.45], color="black", linewidth=2, label=None if t else "majority baseline")
    ax.set_yticks(range(n), [name[:22] for name in names])
    ax.set_ylim(n - 0.5, -0.5)  # the first attribute on top, as in the table
    ax.set_xlim(0, 100)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title("test accuracy per attribute; black tick: majority baseline", loc="left", fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    fig.tight_layout()
    return _save(fig, Canvas, png_path, force)


# disentanglement ----------------------------------------------------------------------------------------
def mutual_information_heatmap(result: dict, png_path: Path, force: bool = False) -> Path | None:
    """One heat map per level of a ``disentanglement`` result (with its ``mutual_information`` matrices):
    factors down, the level's dimensions across, coloured by I(z_j; v_k) / H(v_k) from 0 to 1. None (nothing
    written) when the result has no levels."""
    Figure, Canvas = _figure_class("--plot")
    levels = list(result["levels"].items())
    if not levels:
        return None
    names = [f["name"] for f in result["factors"]]
    entropies = [f["entropy"] for f in result["factors"]]
    fig = Figure(figsize=(10, 0.6 + len(levels) * (0.9 + 0.28 * len(names))), dpi=DPI)
    axes = fig.subplots(len(levels), 1, squeeze=False)[:, 0]
    image = None
    for ax, (level, r) in zip(axes, levels):
        normalised = [[value / h for value in row] for row, h in zip(r["mutual_information"].tolist(), entropies)]
        # nearest: a dimension is one column of colour, not a blend of its neighbours (z1 has hundreds)
        image = ax.imshow(normalised, aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_yticks(range(len(names)), [name[:22] for name in names], fontsize="small")
        scores = ", ".join(f"{label} {r[key]:.3f}" for label, key in (("MIG", "mig"), ("MIG-sup", "mig_sup"))
                           if _finite(r[key]))
        ax.set_title(f"{level} ({r['dimensions']} dimensions{'; ' + scores if scores else ''})", loc="left",
                     fontsize="medium")
    axes[-1].set_xlabel("dimension (flattened, C order)")
    fig.colorbar(image, ax=list(axes), label="I(z_j; v_k) / H(v_k)", fraction=0.03, pad=0.01)
    return _save(fig, Canvas, png_path, force)


# training curves ----------------------------------------------------------------------------------------
def read_metrics(metrics_path: Path) -> list[dict]:
    """The JSON objects of a ``metrics.jsonl`` (blank lines skipped); a line that is not JSON is BadInputError."""
    rows = []
    for number, line in enumerate(Path(metrics_path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise BadInputError(f"{metrics_path}: line {number} is not JSON") from None
    return rows


# Validation numbers per level, with the axis label each gets; panels with no values are left out.
VALIDATION_PANELS = (
    ("mse", "validation pixel MSE"),
    ("class_kept", "validation class kept"),
    ("few_label_error", "few-label linear error"),
)


def training_curves(metrics_path: Path, png_path: Path, loss_names: Sequence[str] | None = None,
                    force: bool = True) -> Path:
    """Draw a run's ``metrics.jsonl`` against step: the two players' losses, the other loss parts, and the
    validation numbers of the rows that have them (per level: MSE, class kept, few-label error; and the
    semi-supervised classifier's error). ``loss_names``: the loss columns (default: halitool.train.LOSS_NAMES).
    ``force`` defaults to True because the figure is redrawn over itself at every checkpoint."""
    Figure, Canvas = _figure_class("training curves")
    if loss_names is None:
        from halitool.train import LOSS_NAMES as loss_names
    rows = [r for r in read_metrics(metrics_path) if isinstance(r.get("step"), (int, float))]
    players = [name for name in ("d_loss", "g_loss") if name in loss_names]
    parts = [name for name in loss_names if name not in players]
    panels: list[tuple[str, list[tuple[int, str, list, list]]]] = []  # (title, [(colour, label, xs, ys)])

    def series(label: str, pick) -> tuple[str, list, list]:
        xs, ys = [], []
        for r in rows:
            value = pick(r)
            if _finite(value):
                xs.append(r["step"])
                ys.append(value)
        return label, xs, ys

    def add(title: str, lines: list[tuple[str, list, list]]) -> None:
        # Colours are numbered before empty series are dropped, so a level keeps its colour in every panel.
        lines = [(j, *line) for j, line in enumerate(lines) if line[1]]
        if lines:
            panels.append((title, lines))

    add("loss", [series(name, lambda r, n=name: r.get(n)) for name in players])
    add("loss parts", [series(name, lambda r, n=name: r.get(n)) for name in parts])
    validated = [r for r in rows if isinstance(r.get("validation"), dict)]
    level_names: list[str] = []
    for r in validated:
        level_names.extend(k for k in r["validation"].get("levels", {}) if k not in level_names)
    for key, title in VALIDATION_PANELS:
        add(title, [series(level, lambda r, lv=level, k=key: r.get("validation", {}).get("levels", {})
                           .get(lv, {}).get(k)) for level in level_names])
    add("validation classifier error (%)", [series("classifier", lambda r: r.get("validation", {})
                                                   .get("classifier_error"))])
    add("validation cluster accuracy (%)", [series("class latent", lambda r: r.get("validation", {})
                                                   .get("cluster_accuracy"))])

    fig = Figure(figsize=(8, 1.0 + 2.2 * max(1, len(panels))), dpi=DPI)
    if not panels:  # a run that has logged nothing yet still gets a figure that says so
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, f"no metrics logged yet in {Path(metrics_path).name}", ha="center", va="center")
        ax.set_axis_off()
    else:
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (title, lines) in zip(axes, panels):
            for j, label, xs, ys in lines:
                # A single evaluation is a point, not a line: mark every value so it stays visible.
                ax.plot(xs, ys, color=COLOURS[j % len(COLOURS)], label=label, linewidth=1.2,
                        marker="o" if len(xs) < 30 else None, markersize=3)
            if title == "loss parts" and all(y > 0 for *_, ys in lines for y in ys):
                # The parts differ by orders of magnitude (reconstruction MSE against adversarial terms).
                ax.set_yscale("log")
            else:
                ax.ticklabel_format(axis="y", useOffset=False)  # "1e-7 + 3.78e-2" hides the values themselves
            ax.set_ylabel(title, fontsize="small")
            ax.grid(alpha=0.3)
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
        axes[-1].set_xlabel("step")
    fig.suptitle(f"training curves ({Path(metrics_path).parent.name or Path(metrics_path).name})",
                 x=0.02, ha="left", fontsize="medium")
    fig.tight_layout()
    return _save(fig, Canvas, png_path, force)
