"""Benchmark of ``halitool train``: steps per second through the library's training loop, against a plain loop
of the same model in the same process, and against the machine's own matrix-product rate.

Per architecture (``mnist`` on MNIST's IDX files, ``celeba64`` on a folder of synthetic 64x64 RGB images, each
at the batch size given; the recommended objective, two levels, one seed):

- halitool: ``halitool.train.train`` for WARMUP + STEPS steps (no validation slice; pictures and checkpoint only at
  the last step); its rate over the STEPS steps after the warm-up, timed at every step through the progress
  reporter, so set-up, warm-up and the final checkpoint are not counted (the batches it reads and the metrics it
  logs are);
- reference: the same model (same configuration, seed, optimisers) in a bare loop over batches already in
  memory: ``model.losses``, the two ``torch.autograd.grad`` (one per player), two Adam steps; timed the same way;
- ``flops_per_step``: FlopCounterMode over one reference step (the forward pass and both backward passes);
- ``matmul_flops_per_second``: a large float32 (with ``--precision bf16``: bfloat16) matrix product in the same
  process, the best of repeated timings (as benchmarks/limits.py); ``fraction_of_peak`` = steps/s x FLOPs per
  step / that rate.

Every rate is given per wall-clock second and per CPU second of the process (``*_per_cpu_second``): on a shared
machine, where other work takes the cores, the second is the steadier one (with one thread, a CPU second is a
core's second), and ``*_fraction_of_peak_cpu`` divides it by the matmul rate per CPU second.

``--compare TREE`` runs the measurement in child processes, alternately with ``PYTHONPATH=TREE`` (a checkout of
another commit: the baseline) and with this tree, ``--repeats`` times each, and reports each one's medians and the
ratios this / baseline (``--base-precision fp32`` with ``--precision bf16``: this tree's bf16 against the
baseline's float32).

Prints one JSON line. Usage:
    python benchmarks/train.py [--quick] [--arch mnist,celeba64] [--data mnist:DIR] [--threads 1]
    python benchmarks/train.py --compare /tmp/train-base --repeats 3 --data mnist:/work/data/mnist
    python benchmarks/train.py --compare /tmp/train-base --precision bf16 --base-precision fp32 --arch mnist
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from limits import machine  # noqa: E402

# steps timed, warm-up steps before them, batch size
QUICK = {"mnist": (30, 5, 100), "celeba64": (4, 2, 32)}
FULL = {"mnist": (200, 10, 100), "celeba64": (20, 3, 64)}
RATES = ("halitool_steps_per_second", "halitool_steps_per_cpu_second", "reference_steps_per_second",
         "reference_steps_per_cpu_second")


class StepClock:
    """A halitool Progress whose one task records (wall, CPU) times at every advance."""

    def __init__(self):
        self.times: list[tuple[float, float]] = []

    def task(self, description, total, completed=0):
        import contextlib

        from halitool.progress import Task

        clock = self

        class Timed(Task):
            def advance(self, n=1, info=None):
                clock.times.append((time.perf_counter(), time.process_time()))

        return contextlib.nullcontext(Timed())


def rates(times: list[tuple[float, float]], warmup: int) -> tuple[float, float]:
    """(steps per wall second, steps per CPU second) over the steps after the first ``warmup``."""
    (w0, c0), (w1, c1) = times[warmup - 1], times[-1]
    steps = len(times) - warmup
    return steps / (w1 - w0), steps / max(c1 - c0, 1e-9)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rates(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048,
                 seconds: float = 3.0) -> tuple[float, float]:
    """FLOP/s of an n x n matrix product: the best timing per wall-clock second and per CPU second of the process
    (benchmarks/limits.py's matmul_flops, with the CPU clock beside the wall clock)."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    torch.mm(a, b)
    wall = cpu = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        _sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(2):
            torch.mm(a, b)
        _sync(device)
        w1, c1 = time.perf_counter(), time.process_time()
        wall, cpu = max(wall, 2 * 2 * n**3 / (w1 - w0)), max(cpu, 2 * 2 * n**3 / max(c1 - c0, 1e-9))
    return wall, cpu


def synthetic_folder(folder: Path, n: int = 256) -> str:
    """``n`` smooth random 64x64 RGB PNGs (8x8 blocks, like benchmarks/extract.py's synthetic CelebA)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(coarse.repeat(8, axis=0).repeat(8, axis=1), "RGB").save(folder / f"{i:05d}.png")
    return f"folder:{folder}"


def reference_loop(opts, device: torch.device, steps: int, warmup: int) -> dict:
    """The plain loop: the model train() builds, its optimisers, batches already in (device) memory."""
    from halitool.data import open_dataset
    from halitool.models import ModelConfig, build_model, images_to_input

    ds = open_dataset(opts.data)
    train_idx = ds.indices("train")
    torch.manual_seed(opts.seed)
    model = build_model(ModelConfig(arch=opts.arch, n_levels=opts.n_levels, **opts.model_objective)).to(device).train()
    model.init_pixel_bias(images_to_input(ds.images(train_idx[:10000]), device).mean(dim=0))
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=opts.lr, betas=(opts.beta1, opts.beta2))
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=opts.lr, betas=(opts.beta1, opts.beta2))
    d_params, g_params = list(model.discriminator.parameters()), model.generator_parameters()
    order = np.random.default_rng(opts.seed).permutation(train_idx)
    batches = [images_to_input(ds.images(order[i * opts.batch_size: (i + 1) * opts.batch_size]), device)
               for i in range(min(warmup + steps, len(order) // opts.batch_size))]
    bf16 = opts.precision == "bf16"

    def step(x):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            losses = model.losses(x)
        d_grads = torch.autograd.grad(losses["d_loss"], d_params, retain_graph=True)
        g_grads = torch.autograd.grad(losses["g_loss"], g_params)
        for p, g in zip(d_params, d_grads):
            p.grad = g
        for p, g in zip(g_params, g_grads):
            p.grad = g
        opt_d.step()
        opt_g.step()
        return losses

    times = []
    for i in range(warmup + steps):
        step(batches[i % len(batches)])
        _sync(device)
        times.append((time.perf_counter(), time.process_time()))
    wall, cpu = rates(times, warmup)
    # FLOPs of one step (FlopCounterMode's module tracker cannot follow torch.autograd.grad over leaf tensors:
    # backward(inputs=...) does the same work and accumulates into .grad instead).
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # accumulating channels-last gradients into .grad: a layout note
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            losses = model.losses(batches[0])
        torch.autograd.backward(losses["d_loss"], inputs=d_params, retain_graph=True)
        torch.autograd.backward(losses["g_loss"], inputs=g_params)
    return {"reference_steps_per_second": wall, "reference_steps_per_cpu_second": cpu,
            "flops_per_step": counter.get_total_flops()}


def measure_arch(arch: str, data: str, steps: int, warmup: int, batch_size: int, precision: str,
                 device: torch.device, folder: Path) -> dict:
    from halitool.train import TrainOptions, train

    opts = TrainOptions(data=data, out=folder / f"run-{arch}", arch=arch, steps=warmup + steps, batch_size=batch_size,
                        precision=precision, device=str(device), val_size=0, sample_every=10**9, checkpoint_every=10**9,
                        eval_every=10**9, force=True, command="benchmarks/train.py")
    clock = StepClock()
    summary = train(opts, progress=clock)
    wall, cpu = rates(clock.times, warmup)
    result = {"data": data, "batch_size": batch_size, "steps": steps, "warmup": warmup,
              "halitool_steps_per_second": wall, "halitool_steps_per_cpu_second": cpu,
              "last_losses": {k: summary["metrics"][k] for k in ("d_loss", "g_loss") if k in summary["metrics"]}}
    result.update(reference_loop(opts, device, steps, warmup))
    return result


def measure(archs: list[str], sizes: dict, data: str, precision: str, threads: int, device: str) -> dict:
    """Every architecture's rates, then the matmul rate and the fractions of it, in this process."""
    import halitool
    from halitool.runtime import resolve_device

    torch.set_num_threads(threads)
    device = resolve_device(device)
    out = {"halitool_path": str(Path(halitool.__file__).parent), **machine(device), "precision": precision,
           "archs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for arch in archs:
            steps, warmup, batch_size = sizes[arch]
            spec = data if arch == "mnist" else synthetic_folder(tmp / "celeba-synthetic", max(256, batch_size))
            out["archs"][arch] = measure_arch(arch, spec, steps, warmup, batch_size, precision, device, tmp)
    # The peak of the precision trained in: bf16 products run about twice as fast where the CPU has them.
    peak = dict(zip(("second", "cpu_second"),
                    matmul_rates(device, torch.bfloat16 if precision == "bf16" else torch.float32)))
    out["matmul_dtype"] = "bfloat16" if precision == "bf16" else "float32"
    out["matmul_flops_per_second"], out["matmul_flops_per_cpu_second"] = peak["second"], peak["cpu_second"]
    for result in out["archs"].values():
        for which in ("halitool", "reference"):
            for unit in ("second", "cpu_second"):
                rate = result[f"{which}_steps_per_{unit}"]
                suffix = "" if unit == "second" else "_cpu"
                result[f"{which}_fraction_of_peak{suffix}"] = rate * result["flops_per_step"] / peak[unit]
        result["loop_overhead"] = result["reference_steps_per_cpu_second"] / result["halitool_steps_per_cpu_second"] - 1
    out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    return out


def _child(tree: str, argv: list[str], threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, __file__, "--child", *argv], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"benchmark child with PYTHONPATH={tree} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _commit(tree: str) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"


def compare(base: str, repeats: int, argv: list[str], threads: int, base_precision: str | None = None) -> dict:
    """Children alternately on the baseline tree and this one; medians per tree and their ratios."""
    this = str(HERE.parent)
    runs = {"base": [], "this": []}
    base_argv = [*argv, "--precision", base_precision] if base_precision else argv  # the last one given wins
    for _ in range(repeats):
        for name, tree, tree_argv in (("base", base, base_argv), ("this", this, argv)):
            runs[name].append(_child(tree, tree_argv, threads))
    archs = {}
    for arch in runs["this"][0]["archs"]:
        med = {name: {key: statistics.median(r["archs"][arch][key] for r in rs) for key in
                      (*RATES, "flops_per_step", "halitool_fraction_of_peak_cpu", "reference_fraction_of_peak_cpu")}
               for name, rs in runs.items()}
        archs[arch] = {
            "base": med["base"], "this": med["this"],
            "speedup": {key: med["this"][key] / med["base"][key] for key in RATES},
            "runs": {name: [{key: r["archs"][arch][key] for key in RATES} for r in rs] for name, rs in runs.items()},
            **{key: runs["this"][0]["archs"][arch][key] for key in ("batch_size", "steps")},
        }
    first = runs["this"][0]
    return {"compare": {"base": base, "base_commit": _commit(base), "this": this, "this_commit": _commit(this),
                        "repeats": repeats, "order": "base, this, base, this, ..."},
            "matmul": {name: {"dtype": rs[0]["matmul_dtype"],
                              **{key: statistics.median(r[key] for r in rs)
                                 for key in ("matmul_flops_per_second", "matmul_flops_per_cpu_second")}}
                       for name, rs in runs.items()},
            "hardware": first["hardware"], "cpu_count": first["cpu_count"], "torch_threads": first["torch_threads"],
            "precision": first["precision"], "base_precision": runs["base"][0]["precision"],
            "load_average_1min_end": round(os.getloadavg()[0], 2), "archs": archs}


def run(argv: list[str] | None = None) -> dict:
    """Run the benchmark with command-line ``argv``; the result document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer steps (about two minutes on one thread).")
    parser.add_argument("--arch", default="mnist,celeba64", help="Comma-separated architectures [default: both].")
    parser.add_argument("--data", default="mnist", help="The MNIST SPEC for --arch mnist [default: mnist].")
    parser.add_argument("--steps", default=None, help="Timed steps per architecture, e.g. mnist=100,celeba64=10.")
    parser.add_argument("--batch-size", default=None, help="Batch size per architecture, e.g. celeba64=32.")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto [default: cpu].")
    parser.add_argument("--threads", type=int, default=1, help="torch threads [default: 1: steadier on a shared CPU].")
    parser.add_argument("--compare", default=None, metavar="TREE",
                        help="Also measure the halitool of TREE (PYTHONPATH), alternating child processes.")
    parser.add_argument("--repeats", type=int, default=3, help="Children per tree with --compare [default: 3].")
    parser.add_argument("--base-precision", choices=["fp32", "bf16"], default=None,
                        help="With --compare: the baseline tree's precision [default: --precision].")
    args = parser.parse_args(argv)
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    sizes = {arch: list((QUICK if args.quick else FULL).get(arch, FULL["celeba64"])) for arch in archs}
    for option, index in ((args.steps, 0), (args.batch_size, 2)):
        for item in (option.split(",") if option else []):
            arch, value = item.split("=")
            sizes[arch.strip()][index] = int(value)
    if args.compare:
        child_argv = list(argv if argv is not None else sys.argv[1:])
        skip = {"--compare", "--repeats", "--base-precision"}
        child_argv = [a for i, a in enumerate(child_argv)
                      if a not in skip and (i == 0 or child_argv[i - 1] not in skip)]
        result = compare(args.compare, args.repeats, child_argv, args.threads, args.base_precision)
    else:
        result = measure(archs, {a: tuple(s) for a, s in sizes.items()}, args.data, args.precision, args.threads,
                         args.device)
    return {"benchmark": "train", "quick": args.quick, "threads": args.threads, **result}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(run(sys.argv[2:])))
        return
    print(json.dumps(run()))


if __name__ == "__main__":
    main()
