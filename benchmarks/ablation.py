"""Training ablation (quality, not speed): each lever of the objective on/off at the same step budget.

Every row trains with ``halitool train`` (the recommended objective with one lever changed, or the paper's
objective), then measures the snapshot with the same commands a user runs: ``reconstruct`` (class kept per level
on the test split), ``extract`` + ``semisup`` (spread and linear, 100 labels, 3 seeds) and ``probe-attributes``
(on a training subsample). The table in docs/training.md comes from its output: one JSON object per row,
appended to ``--out/ablation.jsonl`` as each row finishes (a stopped run keeps its finished rows and skips
them when started again).

    python benchmarks/ablation.py --mnist mnist:/data/mnist --steps 750 --out runs/ablation

The recipe was chosen from the training-time validation numbers (``validation`` in each row: the held-out slice
of the train split), never from the test-split measurements reported beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROWS: dict[str, list[str]] = {
    "recommended": [],
    "paper objective": ["--objective", "paper"],
    "no spectral norm": ["--no-spectral-norm"],
    "no unary scores": ["--no-unary-scores"],
    "no latent cycle": ["--cycle-weight", "0"],
    "no level-2 reconstruction": ["--recon2-weight", "0"],
    "no level-1 reconstruction": ["--recon-weight", "0"],
    "lr 1e-4 (ALI's)": ["--lr", "1e-4"],
    "+ R1 (gamma 1)": ["--r1-weight", "1"],
    "+ instance noise 0.1": ["--instance-noise", "0.1"],
    "level-2 reconstruction weight 10": ["--recon2-weight", "10"],
    "latent cycle weight 10": ["--cycle-weight", "10"],
    "twice the widths (mnist-wide)": ["--arch", "mnist-wide"],
}


def halitool(*args: str) -> dict:
    """Run one halitool command; its JSON result."""
    done = subprocess.run([sys.executable, "-m", "halitool", *args, "--format", "json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"halitool {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def measure(checkpoint: Path, data: str, work: Path) -> dict:
    recon = halitool("reconstruct", str(checkpoint), "--data", data, "-o", str(work / "recon.png"), "--force")
    features = work / "features.h5"
    halitool("extract", str(checkpoint), "--data", data, "-o", str(features), "--force")
    semisup = {}
    for protocol in ("spread", "linear"):
        for levels in ("z1+z2", "z2"):
            res = halitool("semisup", str(features), "--labels", "100", "--protocol", protocol, "--seeds", "3",
                           "--features", levels)
            semisup[f"{protocol} {levels}"] = {"mean": res["error_mean"], "std": res["error_std"]}
    probes = halitool("probe-attributes", str(features), "--max-train", "10000", "--levels", "z1,z2")
    features.unlink()
    return {
        "class_kept": {k: v["class_kept"] for k, v in recon["levels"].items()},
        "mse": {k: v["mse"] for k, v in recon["levels"].items()},
        "semisup_error": semisup,
        "probe_balanced_accuracy": {k: v.get("mean_balanced_accuracy")
                                    for k, v in {**probes["levels"], **probes["baselines"]}.items()},
    }


def markdown_table(rows: list[dict]) -> str:
    """docs/training.md's table from the rows of ablation.jsonl."""
    def pct(v):
        return "" if v is None else f"{100 * v:.1f}"

    def err(d):
        return f"{d['mean']:.1f} +- {d['std']:.1f}"

    lines = ["| row | flags | val kept z1 / z2 % | test kept z1 / z2 % | test MSE z1 / z2 | spread z1+z2 | spread z2 "
             "| linear z1+z2 | linear z2 | probe bal. acc. z1 / z2 (pixels) % | D acc. q / p | train s |",
             "|---" * 12 + "|"]
    for r in rows:
        v = (r.get("validation") or {}).get("levels", {})
        e, p = r["semisup_error"], r["probe_balanced_accuracy"]
        lines.append(" | ".join([
            f"| {r['row']}", f"`{' '.join(r['flags'])}`" if r["flags"] else "(defaults)",
            f"{pct(v.get('z1', {}).get('class_kept'))} / {pct(v.get('z2', {}).get('class_kept'))}",
            f"{pct(r['class_kept']['z1'])} / {pct(r['class_kept']['z2'])}",
            f"{r['mse']['z1']:.4f} / {r['mse']['z2']:.4f}",
            err(e["spread z1+z2"]), err(e["spread z2"]), err(e["linear z1+z2"]), err(e["linear z2"]),
            f"{pct(p['z1'])} / {pct(p['z2'])} ({pct(p.get('pixels'))})",
            f"{r['d_accuracy']['q']:.2f} / {r['d_accuracy']['p']:.2f}", f"{r['train_seconds']:.0f} |"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out's rows and stop")
    parser.add_argument("--mnist", help="data spec, e.g. mnist:/data/mnist (required to train)")
    parser.add_argument("--steps", type=int, default=750)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help="row names (default: all)")
    args = parser.parse_args()
    results = args.out / "ablation.jsonl"
    if args.table:
        print(markdown_table([json.loads(line) for line in results.read_text().splitlines()]))
        return
    if not args.mnist:
        parser.error("--mnist is required to train")
    args.out.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["row"] for line in results.read_text().splitlines()} if results.exists() else set()
    for name in args.rows:
        if name in done:
            continue
        run = args.out / name.replace(" ", "-").replace("(", "").replace(")", "").replace("'", "")
        start = time.perf_counter()
        train = ["train", "--data", args.mnist, "--steps", str(args.steps), "--seed", "0",
                 "--eval-every", str(args.steps), "--checkpoint-every", str(args.steps),
                 "--sample-every", str(args.steps), "--log-every", "50", "--out", str(run), "--force", *ROWS[name]]
        subprocess.run([sys.executable, "-m", "halitool", *train], check=True, capture_output=True)
        seconds = time.perf_counter() - start
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        row = {"row": name, "flags": ROWS[name], "steps": args.steps, "train_seconds": round(seconds, 1),
               "validation": last.get("validation"),
               "d_accuracy": {"q": last["acc_q.joint"], "p": last["acc_p.joint"]},
               **measure(run / "model.safetensors", args.mnist, run),
               "machine": os.uname().nodename, "date": time.strftime("%Y-%m-%d")}
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
