"""halitool train: a few real steps on IDX data in the real layout, resume equality, divergence, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from PIL import Image

from halitool.checkpoint import load_checkpoint
from halitool.models import hali
from helpers import record_reads, run_cli


def _train(mnist_dir, out, *extra):
    return run_cli(["train", "--data", f"mnist:{mnist_dir}", "--arch", "tiny", "--out", str(out),
                    "--batch-size", "50", "--seed", "3", "--log-every", "1", *extra])


def test_training_steps_change_weights_and_write_a_loadable_checkpoint(mnist_dir, tmp_path):
    code, stdout, stderr = _train(mnist_dir, tmp_path / "run", "--steps", "3")
    assert code == 0, stderr
    assert stdout.strip() == str(tmp_path / "run" / "model.safetensors")
    run = tmp_path / "run"
    for name in ("model.safetensors", "state.safetensors", "state.json", "metrics.jsonl",
                 "samples-0000003.png", "recon-0000003.png", "curves.png"):
        assert (run / name).is_file(), name
    with Image.open(run / "curves.png") as image:  # metrics.jsonl drawn beside it at the checkpoint
        assert image.format == "PNG" and min(image.size) > 100
        image.verify()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert all(set(line) >= {"d_loss", "g_loss", "s_q", "s_p"} for line in lines)

    loaded = load_checkpoint(run / "model.safetensors")
    assert loaded.training["steps"] == 3 and loaded.training["seed"] == 3
    assert loaded.training["command"].startswith("halitool train --data")
    # a tenth of the 200 training images is held out as the validation slice (the last 20 rows)
    assert loaded.training["split"] == "train" and loaded.training["n_train"] == 180
    assert loaded.training["validation"]["n"] == 20 and loaded.training["validation"]["first_index"] == 180
    assert set(loaded.metrics["validation"]["levels"]) == {"z1", "z2"}
    assert not loaded.model.training

    torch.manual_seed(3)
    fresh = hali.build_model(loaded.config)
    trained = loaded.model.state_dict()
    changed = [k for k, v in fresh.state_dict().items() if k.endswith(("weight", "weight.original")) and not torch.equal(v, trained[k])]
    assert any(k.startswith("encoders.") for k in changed)
    assert any(k.startswith("decoders.") for k in changed)
    assert any(k.startswith("discriminator.") for k in changed)


def test_resumed_run_equals_uninterrupted_run(mnist_dir, tmp_path):
    assert _train(mnist_dir, tmp_path / "full", "--steps", "6")[0] == 0
    assert _train(mnist_dir, tmp_path / "part", "--steps", "3")[0] == 0  # stops mid-epoch (4 steps per epoch)
    code, _, stderr = _train(mnist_dir, tmp_path / "part", "--steps", "6", "--resume")
    assert code == 0, stderr
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    part = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert full.keys() == part.keys()
    for name in full:
        assert torch.equal(full[name], part[name]), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    # the checkpoint records both commands that trained it, and where each began
    legs = load_checkpoint(tmp_path / "part" / "model.safetensors").training["legs"]
    assert [leg["from_step"] for leg in legs] == [0, 3]
    assert "--steps 3" in legs[0]["command"] and "--resume" not in legs[0]["command"]
    assert "--steps 6" in legs[1]["command"] and "--resume" in legs[1]["command"]
    assert load_checkpoint(tmp_path / "full" / "model.safetensors").training["legs"][0]["from_step"] == 0


def test_planted_nan_stops_and_keeps_the_last_good_checkpoint(mnist_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    calls = {"n": 0}
    original = hali.generator_loss

    def poisoned(s_q, s_p):
        calls["n"] += 1
        loss = original(s_q, s_p)
        return loss * float("nan") if calls["n"] >= 4 else loss

    monkeypatch.setattr(hali, "generator_loss", poisoned)
    # The paper's objective: one generator_loss call per step (unary scores would add one per score).
    code, _, stderr = _train(mnist_dir, run, "--steps", "6", "--checkpoint-every", "2", "--objective", "paper")
    assert code == 1
    assert "diverged at step 4" in stderr and "g_loss = nan" in stderr and "(step 2)" in stderr
    loaded = load_checkpoint(run / "model.safetensors")
    assert loaded.training["steps"] == 2
    assert all(torch.isfinite(t).all() for t in loaded.model.state_dict().values() if t.is_floating_point())


def test_existing_run_is_refused_without_resume_or_force(mnist_dir, tmp_path):
    assert _train(mnist_dir, tmp_path / "run", "--steps", "1")[0] == 0
    code, _, stderr = _train(mnist_dir, tmp_path / "run", "--steps", "1")
    assert code == 2 and "--resume" in stderr
    assert _train(mnist_dir, tmp_path / "run", "--steps", "1", "--force")[0] == 0


@pytest.mark.parametrize("extra, message", [
    (["--resume", "--steps", "2"], "nothing to resume"),
    (["--steps", "2", "--epochs", "1"], "cannot be used together"),
    (["--steps", "1", "--cycle-weight", "-1"], "--cycle-weight must be 0 or more"),
    (["--steps", "1", "--r1-weight", "nan"], "--r1-weight must be 0 or more"),
    (["--steps", "1", "--lr-d", "0"], "--lr-d must be a positive number"),
    (["--steps", "1", "--keep", "best", "--val-size", "0"], "needs --val-size above 0"),
    (["--steps", "1", "--val-size", "-5"], "--val-size must be 0 or more"),
])
def test_bad_option_combinations_exit_2(mnist_dir, tmp_path, extra, message):
    code, _, stderr = _train(mnist_dir, tmp_path / "run", *extra)
    assert code == 2 and message in stderr


def test_resume_with_changed_options_is_refused(mnist_dir, tmp_path):
    assert _train(mnist_dir, tmp_path / "run", "--steps", "1")[0] == 0
    code, _, stderr = _train(mnist_dir, tmp_path / "run", "--steps", "2", "--resume", "--lr", "0.01")
    assert code == 2 and "lr" in stderr


def test_architecture_that_does_not_fit_the_images_exits_3(mnist_dir, tmp_path):
    code, _, stderr = run_cli(["train", "--data", f"mnist:{mnist_dir}", "--arch", "celeba64", "--steps", "1",
                               "--out", str(tmp_path / "run")])
    assert code == 3 and "celeba64" in stderr


@pytest.mark.slow
def test_torchrun_two_processes_train_one_model(mnist_dir, tmp_path):
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "halitool",
         "train", "--data", f"mnist:{mnist_dir}", "--arch", "tiny", "--steps", "2", "--batch-size", "50",
         "--out", str(run)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(run / "model.safetensors")  # one report, from rank 0
    loaded = load_checkpoint(run / "model.safetensors")
    assert loaded.training["processes"] == 2 and loaded.training["steps"] == 2
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [2]


def test_bf16_and_recon_weight_are_recorded(mnist_dir, tmp_path):
    code, _, stderr = _train(mnist_dir, tmp_path / "run", "--steps", "2", "--precision", "bf16",
                             "--recon-weight", "2.5")
    assert code == 0, stderr
    loaded = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert loaded.config.recon_weight == 2.5 and loaded.training["precision"] == "bf16"
    assert "recon" in loaded.metrics
    assert all(t.dtype == torch.float32 for t in loaded.model.state_dict().values() if t.is_floating_point())


def test_training_logs_what_a_researcher_watches(mnist_dir, tmp_path):
    code, _, stderr = _train(mnist_dir, tmp_path / "run", "--steps", "4", "--eval-every", "2")
    assert code == 0, stderr
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        for key in ("acc_q.joint", "acc_p.joint", "acc_q.x", "acc_p.z2", "z1_spread", "z1_std", "z2_spread",
                    "recon", "recon2", "cycle", "adv"):
            assert key in line, key
        assert 0 <= line["acc_q.joint"] <= 1 and line["z2_std"] > 0
    evaluated = [line for line in lines if "validation" in line]
    assert [line["step"] for line in evaluated] == [2, 4]
    for level in ("z1", "z2"):
        v = evaluated[-1]["validation"]["levels"][level]
        assert 0 <= v["class_kept"] <= 1 and v["mse"] > 0 and v["spread"] >= 0
        assert v["few_label_error"] is None  # 20 validation images: too few for 10 labels per class


def test_training_never_reads_test_rows(mnist_dir, tmp_path, monkeypatch):
    from halitool import train as train_module

    read, opened = record_reads(monkeypatch, train_module)
    code, _, stderr = _train(mnist_dir, tmp_path / "run", "--steps", "4", "--eval-every", "2", "--keep", "best")
    assert code == 0, stderr
    ds = opened["ds"]
    test_rows = set(ds.indices("test").tolist())
    assert read and not test_rows & set(read)
    assert set(ds.indices("train")[-20:].tolist()) <= set(read)  # the validation slice was evaluated


def test_keep_best_holds_the_snapshot_with_the_lowest_validation_mse(mnist_dir, tmp_path):
    run = tmp_path / "run"
    code, _, stderr = _train(mnist_dir, run, "--steps", "6", "--eval-every", "2", "--checkpoint-every", "2",
                             "--keep", "best")
    assert code == 0, stderr
    evaluated = {line["step"]: line["validation"]["levels"]["z2"]["mse"]
                 for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "validation" in line}
    best_step = min(evaluated, key=evaluated.get)
    loaded = load_checkpoint(run / "model.safetensors")
    assert loaded.training["selected"]["step"] == best_step == loaded.training["steps"]
    assert loaded.training["selected"]["criterion"] == pytest.approx(evaluated[best_step])
    # resuming keeps the record of the best snapshot so far
    code, _, stderr = _train(mnist_dir, run, "--steps", "8", "--eval-every", "2", "--checkpoint-every", "2",
                             "--keep", "best", "--resume")
    assert code == 0, stderr
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 8 and state["best"]["criterion"] <= evaluated[best_step]


def test_paper_objective_and_explicit_levers_are_recorded(mnist_dir, tmp_path):
    from halitool.models.config import PAPER_OBJECTIVE, RECOMMENDED_OBJECTIVE

    assert _train(mnist_dir, tmp_path / "paper", "--steps", "1", "--objective", "paper")[0] == 0
    assert load_checkpoint(tmp_path / "paper" / "model.safetensors").config.objective == PAPER_OBJECTIVE
    assert _train(mnist_dir, tmp_path / "rec", "--steps", "1", "--cycle-weight", "3", "--r1-weight", "0.5")[0] == 0
    loaded = load_checkpoint(tmp_path / "rec" / "model.safetensors")
    assert loaded.config.objective == {**RECOMMENDED_OBJECTIVE, "cycle_weight": 3.0, "r1_weight": 0.5}
    assert loaded.training["objective"] == loaded.config.objective


def test_training_without_matplotlib_still_trains_and_says_why_there_are_no_curves(mnist_dir, tmp_path,
                                                                                   no_matplotlib):
    from halitool.train import TrainOptions, train

    run = tmp_path / "run"
    summary = train(TrainOptions(data=f"mnist:{mnist_dir}", out=run, arch="tiny", steps=2, batch_size=50, seed=3))
    assert (run / "model.safetensors").is_file() and not (run / "curves.png").exists()
    assert summary["steps"] == 2 and summary["curves"] is None
    assert len(summary["notes"]) == 1 and "pip install 'halitool[plot]'" in summary["notes"][0]


def test_an_update_moves_the_weights_as_torchs_per_tensor_adam_would(mnist_dir, tmp_path):
    """The gradients of a (channels-last) training pass reach the fused Adam kernel in their parameters' layout:
    one update equals the one torch's per-tensor Adam makes from the same gradients."""
    import copy

    from halitool.distributed import ProcessGroup
    from halitool.train import TrainOptions, _Run

    opts = TrainOptions(data=f"mnist:{mnist_dir}", out=tmp_path / "run", arch="tiny", batch_size=50, seed=3)
    run = _Run(opts, torch.device("cpu"), ProcessGroup())
    x, shown = run._batch()
    reference = copy.deepcopy(run.model)
    d_params, g_params = list(reference.discriminator.parameters()), reference.generator_parameters()
    state = torch.get_rng_state()
    losses = reference.losses(x)
    d_grads = torch.autograd.grad(losses["d_loss"], d_params, retain_graph=True)
    g_grads = torch.autograd.grad(losses["g_loss"], g_params)
    assert any(g.stride() != p.stride() for g, p in zip(d_grads + g_grads, d_params + g_params))  # the hazard
    for params, grads, lr in ((d_params, d_grads, run.lr_d), (g_params, g_grads, opts.lr)):
        for p, g in zip(params, grads):
            p.grad = g
        torch.optim.Adam(params, lr=lr, betas=(opts.beta1, opts.beta2), foreach=False).step()
    torch.set_rng_state(state)
    run._update(x, shown)
    mine = dict(run.model.named_parameters())
    for name, theirs in reference.named_parameters():
        assert torch.allclose(mine[name], theirs, rtol=1e-5, atol=1e-7), name


def test_ctrl_c_while_the_curves_are_drawn_waits_for_the_figure_then_resumes_exactly(mnist_dir, tmp_path,
                                                                                    monkeypatch):
    """The kill trials' SIGINT can land while curves.png is drawn (inside matplotlib's first import, which an
    interrupt left half-done: exit 1). It is held until the figure is written, then ends the run with exit 130,
    and --resume from that checkpoint reaches the uninterrupted run's weights."""
    import os
    import signal

    from halitool import plots

    args = ("--steps", "4", "--checkpoint-every", "2", "--sample-every", "1000")
    assert _train(mnist_dir, tmp_path / "full", *args)[0] == 0
    draw = plots.training_curves
    drawn: list[int] = []

    def interrupted_drawing(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)  # arrives now; without the hold it is raised here, before the figure
        path = draw(*a, **k)
        drawn.append(1)
        return path

    monkeypatch.setattr(plots, "training_curves", interrupted_drawing)
    code, _, stderr = _train(mnist_dir, tmp_path / "part", *args)
    monkeypatch.setattr(plots, "training_curves", draw)
    assert code == 130 and "interrupted" in stderr, (code, stderr)
    assert drawn == [1] and (tmp_path / "part" / "curves.png").is_file()  # the figure was finished first
    assert load_checkpoint(tmp_path / "part" / "model.safetensors").training["steps"] == 2
    code, _, stderr = _train(mnist_dir, tmp_path / "part", *args, "--resume")
    assert code == 0, stderr
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    part = load_file(str(tmp_path / "part" / "model.safetensors"))
    for name in full:
        assert torch.equal(full[name], part[name]), name


def test_a_six_level_model_goes_through_every_command(mnist_dir, tmp_path):
    """Deep hierarchies end to end: train with --z-dims, then reconstruct, sample, interpolate, extract, probe
    and disentanglement see all six levels."""
    out = tmp_path / "deep"
    code, _, stderr = run_cli(["train", "--data", f"mnist:{mnist_dir}", "--arch", "tiny-mlp", "--n-levels", "6",
                               "--z-dims", "6,5,4,3,2", "--steps", "2", "--batch-size", "50", "--out", str(out)])
    assert code == 0, stderr
    ckpt = str(out / "model.safetensors")
    assert load_checkpoint(ckpt).config.z_dims == (6, 5, 4, 3, 2)
    levels = [f"z{i}" for i in range(1, 7)]
    code, stdout, stderr = run_cli(["reconstruct", ckpt, "--data", f"mnist:{mnist_dir}", "-o", str(tmp_path / "r.png"),
                                    "-n", "2", "--format", "json"])
    assert code == 0, stderr
    assert list(json.loads(stdout)["levels"]) == levels
    code, _, stderr = run_cli(["sample", ckpt, "-n", "4", "-o", str(tmp_path / "s.png")])
    assert code == 0, stderr
    code, _, stderr = run_cli(["interpolate", ckpt, "--data", f"mnist:{mnist_dir}", "-o", str(tmp_path / "i.png"),
                               "--pairs", "1", "--steps", "3"])
    assert code == 0, stderr
    features = tmp_path / "f.h5"
    code, _, stderr = run_cli(["extract", ckpt, "--data", f"mnist:{mnist_dir}", "-o", str(features)])
    assert code == 0, stderr
    code, stdout, stderr = run_cli(["probe-attributes", str(features), "--levels", "z6,z1+z6", "--C-grid", "1e-1:1e1:2",
                                    "--no-pixel-baseline", "--format", "json"])
    assert code == 0, stderr
    assert set(json.loads(stdout)["levels"]) == {"z6", "z1+z6"}
    code, stdout, stderr = run_cli(["disentanglement", str(features), "--format", "json"])
    assert code == 0, stderr
    assert list(json.loads(stdout)["levels"]) == levels
    assert json.loads(stdout)["levels"]["z6"]["dimensions"] == 2
