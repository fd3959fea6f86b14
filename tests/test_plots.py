"""halitool.plots: PNG files from a probe result and from a hand-written metrics.jsonl, and the missing extra."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from halitool import plots
from halitool.errors import BadInputError, UsageError
from halitool.train import LOSS_NAMES


def png_size(path) -> tuple[int, int]:
    """The size of a PNG that PIL reads and verifies end to end (a truncated or non-PNG file raises)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        size = image.size
        image.verify()
    return size


def probe_result(n_attributes: int, levels=("z1", "z2")) -> dict:
    def block(shift):
        attrs = [{"name": f"attribute_{i}", "accuracy": min(1.0, 0.5 + shift + i / (4 * n_attributes))}
                 for i in range(n_attributes)]
        return {"attributes": attrs}

    return {"levels": {level: block(0.1 * (j + 1)) for j, level in enumerate(levels)},
            "baselines": {"majority": block(0.0)}}


def test_probe_bars_are_a_png_whose_height_grows_with_the_attributes(tmp_path):
    few = plots.probe_accuracy(probe_result(3), tmp_path / "few.png")
    many = plots.probe_accuracy(probe_result(40, levels=("z1", "z2", "z3", "z1+z2+z3")), tmp_path / "many.png")
    (w_few, h_few), (w_many, h_many) = png_size(few), png_size(many)
    assert w_few == w_many >= 600
    assert h_many > 3 * h_few  # CelebA's 40 attributes get rows of their own, not a squeezed figure
    # A missing accuracy (an attribute constant in the test split) draws no bar rather than failing.
    result = probe_result(2)
    result["levels"]["z1"]["attributes"][0]["accuracy"] = None
    result["baselines"]["majority"]["attributes"][1]["accuracy"] = float("nan")
    png_size(plots.probe_accuracy(result, tmp_path / "gaps.png"))


def test_probe_bars_refuse_to_overwrite_and_skip_an_empty_result(tmp_path):
    png = plots.probe_accuracy(probe_result(2), tmp_path / "bars.png")
    with pytest.raises(UsageError, match="exists"):
        plots.probe_accuracy(probe_result(2), png)
    assert plots.probe_accuracy(probe_result(2), png, force=True) == png
    assert plots.probe_accuracy({"levels": {}, "baselines": {}}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def _metrics(path, validation: bool, steps=range(10, 101, 10)):
    lines = []
    for step in steps:
        row = {"step": step, "epoch": step / 50, "d_loss": 1.4 - step / 200, "g_loss": 0.7 + step / 300,
               "adv": 0.7, "recon": 0.1 / step, "s_q": 0.1, "acc_q.joint": 0.6, "z1_spread": 1.0, "seconds": step}
        if validation and step % 50 == 0:
            row["validation"] = {"images": 20, "classifier_error": 30.0 - step / 10, "levels": {
                "z1": {"mse": 0.05, "class_kept": 0.8, "spread": 1.0, "std": 0.5, "few_label_error": None},
                "z2": {"mse": 0.07, "class_kept": 0.5, "spread": 1.0, "std": 0.5, "few_label_error": 0.4}}}
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n\n")  # a trailing blank line, as an editor may leave
    return path


def test_training_curves_draw_losses_and_add_panels_for_validation_rows(tmp_path):
    losses_only = plots.training_curves(_metrics(tmp_path / "a.jsonl", validation=False), tmp_path / "a.png")
    with_validation = plots.training_curves(_metrics(tmp_path / "b.jsonl", validation=True), tmp_path / "b.png",
                                            LOSS_NAMES)
    (w_a, h_a), (w_b, h_b) = png_size(losses_only), png_size(with_validation)
    assert w_a == w_b >= 600
    # Two loss panels alone; with validation rows, MSE, class kept, few-label error and classifier error join.
    assert h_b > 2 * h_a
    # Redrawn over itself at every checkpoint: the default overwrites.
    assert plots.training_curves(tmp_path / "a.jsonl", losses_only) == losses_only


def test_training_curves_of_an_empty_log_and_a_damaged_one(tmp_path):
    empty = tmp_path / "metrics.jsonl"
    empty.write_text("")
    png_size(plots.training_curves(empty, tmp_path / "empty.png"))
    damaged = _metrics(tmp_path / "damaged.jsonl", validation=False)
    damaged.write_text(damaged.read_text() + '{"step": 110, "d_lo\n')
    with pytest.raises(BadInputError, match="line 12 is not JSON"):  # 10 rows, the blank line 11, then this
        plots.training_curves(damaged, tmp_path / "damaged.png")
    assert not (tmp_path / "damaged.png").exists()


def test_without_matplotlib_every_plot_is_one_usage_error(tmp_path, no_matplotlib):
    with pytest.raises(UsageError, match=r"pip install 'halitool\[plot\]'"):
        plots.require_matplotlib("--plot")
    with pytest.raises(plots.MatplotlibMissing):
        plots.probe_accuracy(probe_result(2), tmp_path / "bars.png")
    with pytest.raises(plots.MatplotlibMissing):
        plots.training_curves(_metrics(tmp_path / "m.jsonl", validation=True), tmp_path / "curves.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_importing_the_module_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, halitool.plots; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
