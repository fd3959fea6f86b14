"""Semi-supervised training ablation (quality, not speed): each ingredient of ``train --labels`` off (or on) at
the same step budget, on one labelled draw.

Every row trains with ``halitool train --labels 100 --label-seed SEED`` (the semi-supervised recipe with one
change) and reads the classifier's error on the validation slice (the last 1,000 training images, never
labelled, never trained on) from the run's ``metrics.jsonl``; the test split is not touched. One JSON object
per row is appended to ``--out/ablation.jsonl`` as it finishes (finished rows are skipped when started again);
``--table`` prints the markdown table of docs/semisup.md.

    python benchmarks/ablation_semisup.py --mnist mnist:/data/mnist --steps 2000 --out runs/ablation-semisup
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
    "recipe": [],
    "no level dropout": ["--level-dropout", "0"],
    "no feature matching (adversarial decoders)": ["--no-feature-matching"],
    "no weight normalisation": ["--no-weight-norm"],
    "no Gaussian noise (input 0.3 and layers 0.5)": ["--instance-noise", "0", "--d-noise", "0"],
    "no weight average (EMA)": ["--ema", "0"],
    "no reconstruction terms": ["--recon-weight", "0", "--recon2-weight", "0"],
    "+ entropy minimisation (weight 1)": ["--entropy-weight", "1"],
}


def run_row(name: str, flags: list[str], data: str, steps: int, seed: int, out: Path) -> dict:
    folder = out / name.split(" (")[0].replace(" ", "-").replace("+", "plus")
    start = time.perf_counter()
    command = [sys.executable, "-m", "halitool", "-q", "train", "--data", data, "--arch", "mnist-mlp", "--labels",
               "100", "--label-seed", str(seed), "--steps", str(steps), "--eval-every", str(steps // 2),
               "--checkpoint-every", str(steps), "--sample-every", str(steps), "--log-every", "100",
               "--out", str(folder), "--force", *flags]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: train failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    errors = {line["step"]: line["validation"]["classifier_error"] for line in lines if "validation" in line}
    return {"row": name, "flags": flags, "steps": steps, "label_seed": seed, "validation_error": errors,
            "seconds": round(time.perf_counter() - start, 1)}


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    steps = sorted({int(s) for r in rows for s in r["validation_error"]})
    lines = ["| row | " + " | ".join(f"val. error % at step {s}" for s in steps) + " | seconds |",
             "|---|" + "---|" * (len(steps) + 1)]
    for r in rows:
        cells = [f"{r['validation_error'].get(str(s), r['validation_error'].get(s)):.1f}" for s in steps]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default="mnist", help="MNIST data SPEC")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--label-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/ablation-semisup"))
    parser.add_argument("--rows", default=None, help="row names separated by commas (default: all)")
    parser.add_argument("--table", action="store_true", help="print the table of --out/ablation.jsonl and exit")
    args = parser.parse_args()
    path = args.out / "ablation.jsonl"
    if args.table:
        print(table(path))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["row"] for line in path.read_text().splitlines()} if path.exists() else set()
    wanted = args.rows.split(",") if args.rows else list(ROWS)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for name in wanted:
        if name in done:
            continue
        row = run_row(name, ROWS[name], args.mnist, args.steps, args.label_seed, args.out)
        with path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
