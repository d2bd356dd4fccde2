"""DDP training with accelerate: one task trained by 1 process, then by N under `accelerate launch`.

    python benchmarks/train_ddp.py [--processes 2] [--max-train 4000] [--quick]

Both runs are `adapters-kit train` with the same global batch, seed and data (a seeded subset of
SST-2 train; the GLUE dev set), on the embedded backbone. The machine's cores are shared
out: the 1-process run uses them all, each of the N processes 1/N of them. Wall time counts
the whole command (start-up, data, training, evaluation, saving); train time is the loop's
own. With dropout on (the card's default) the two runs draw different masks, so their adapters
differ by more than rounding: `--dropout 0` makes them compute the same function.
`--quick` is a short check (a few steps, 200 dev rows). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, emit, require_shared, temp_dir


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(processes: int, threads: int, out: Path, train_args: list[str]) -> dict:
    """One `adapters-kit train` run, launched by accelerate when processes > 1."""
    import json

    cli = ["-m", "adapters_kit.cli", "train", "sst2", "--out", str(out), "--threads", str(threads),
           "--json", "--overwrite", "--no-resume", *train_args]
    if processes > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(_port()), *cli]
    else:
        cmd = [sys.executable, *cli]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{processes}-process run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if len(lines) != 1:
        sys.exit(f"{processes}-process run printed {len(lines)} results, expected 1:\n{proc.stdout}")
    result = json.loads(lines[0])
    return {**result, "wall_s": wall, "cmd": " ".join(["python", *cmd[1:]])}


def max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    ta, tb = (load_file(str(p / "adapter_model.safetensors")) for p in (a, b))
    return max(float((ta[k] - tb[k]).abs().max()) for k in ta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="embedded-distilbert")
    ap.add_argument("--processes", type=int, default=2, help="processes of the DDP run (>= 2)")
    ap.add_argument("--cores", type=int, default=os.cpu_count(),
                    help="torch threads in all: the 1-process run uses them all, each DDP "
                    "process cores / processes (default: every core)")
    ap.add_argument("--max-train", type=int, default=4000, help="seeded subset of SST-2 train")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=None, help="global batch (default: card's 32)")
    ap.add_argument("--dropout", type=float, default=None, help="0 makes the two runs comparable "
                    "step by step (default: the model's)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a short check: 96 examples, 200 dev rows")
    ap.add_argument("--out", default=None, help="where the two adapters go (default: a temp folder)")
    args = ap.parse_args()
    if args.processes < 2:
        ap.error(f"--processes {args.processes}: the DDP run needs 2 or more")
    if args.cores < args.processes:
        ap.error(f"--cores {args.cores} is fewer than --processes {args.processes}; give each "
                 "process at least one core")
    dev = require_shared("sst2", "dev.tsv")
    require_shared("sst2", "train.tsv")

    root = Path(args.out or temp_dir("ddp-")).resolve()
    max_train = 96 if args.quick else args.max_train
    train_args = ["--backbone", args.backbone, "--seed", str(args.seed), "--precision", args.precision,
                  "--max-train-examples", str(max_train), "--epochs", str(args.epochs)]
    if args.batch_size:
        train_args += ["--batch-size", str(args.batch_size)]
    if args.dropout is not None:
        train_args += ["--dropout", str(args.dropout)]
    if args.quick:  # evaluation of the full dev set would dominate a few steps
        root.mkdir(parents=True, exist_ok=True)
        lines = dev.read_text(encoding="utf-8").splitlines(keepends=True)[:201]
        (root / "dev-quick.tsv").write_text("".join(lines), encoding="utf-8")
        train_args += ["--dev-data", str(root / "dev-quick.tsv")]

    runs = {}
    for n, threads in ((1, args.cores), (args.processes, args.cores // args.processes)):
        runs[n] = run(n, threads, root / f"sst2-{n}proc", train_args)
        r = runs[n]
        print(f"{n} process{'es' if n > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}: "
              f"dev accuracy {r['metrics']['accuracy']:.4f} | wall {r['wall_s']:.1f} s | "
              f"train {r['train_seconds']:.1f} s | {r['examples_seen']} examples", flush=True)
    one, many = runs[1], runs[args.processes]
    emit({"task": "sst2", "backbone": args.backbone, "metric": "accuracy",
          "processes": args.processes, "threads_1proc": args.cores,
          "threads_per_process": args.cores // args.processes,
          "max_train": max_train, "epochs": args.epochs,
          "seed": args.seed, "dropout": args.dropout, "quick": args.quick,
          "dev": "first 200 rows of GLUE dev" if args.quick else "GLUE dev",
          "dev_metric_1proc": round(one["metrics"]["accuracy"], 4),
          "dev_metric_2proc": round(many["metrics"]["accuracy"], 4),
          "wall_s_1proc": round(one["wall_s"], 1), "wall_s_2proc": round(many["wall_s"], 1),
          "train_s_1proc": one["train_seconds"], "train_s_2proc": many["train_seconds"],
          "train_speedup": round(one["train_seconds"] / max(many["train_seconds"], 1e-9), 2),
          "examples_seen": [one["examples_seen"], many["examples_seen"]],
          "max_abs_weight_diff": round(max_weight_diff(Path(one["path"]), Path(many["path"])), 6),
          "command_2proc": many["cmd"]})


if __name__ == "__main__":
    main()
