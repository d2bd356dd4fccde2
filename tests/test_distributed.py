"""DDP training under `accelerate launch` (2 CPU processes, gloo) against a 1-process run.

Each launch is a real `accelerate launch` subprocess. `--multi_gpu` is accelerate's torchrun
launcher; on a machine without GPUs it starts CPU processes in a gloo group (its `--cpu` flag
alone starts one process unless mpirun is set up). Dropout is 0 so that the 1-process and the
2-process runs compute the same function and can be compared closely.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import quick, sentiment_rows, write_tsv
from safetensors.torch import load_file

from adapters_kit import train
from adapters_kit.adapters.store import WEIGHTS, read_adapter

# The Python API under a launch: every process writes what `train` returned to it.
SCRIPT = """
import json, os, sys
from adapters_kit import TaskSpec, TrainConfig, TrainingInterrupted, train

args = json.loads(sys.argv[1])
spec = TaskSpec.from_dict(args["task"])
try:
    result = train(spec, args["out"], TrainConfig(**args["config"]),
                   stop_after_step=args.get("stop_after_step"))
except TrainingInterrupted:
    sys.exit(130)
with open(args["report"] + os.environ["RANK"], "w") as f:
    json.dump({"metrics": result.metrics, "losses": result.history["losses"],
               "evals": result.history["evals"], "path": str(result.path)}, f)
"""

# Global batch 19 over 96 rows: shards of 10 and 9 rows, and a last batch of one row, which
# leaves one process without rows (it runs one at weight 0).
CONFIG = dict(epochs=2, batch_size=19, dropout=0.0, precision="fp32", threads=1, seed=3)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, processes: int = 2, ok: bool = True) -> subprocess.CompletedProcess:
    """`accelerate launch` with every launcher setting given (no warnings, a free port)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(_port()), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def one_process(spec, out: Path, backbone: str, **overrides):
    """The reference: the same training in this process (torch threads restored after)."""
    threads = torch.get_num_threads()
    try:
        return train(spec, out, quick(backbone, **{**CONFIG, **overrides}))
    finally:
        torch.set_num_threads(threads)


def api_under_launch(spec, out: Path, backbone: str, tmp_path: Path, ok: bool = True, **extra):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    args = {"task": {k: v for k, v in spec.to_dict().items() if k != "source"}, "out": str(out),
            "config": {"backbone": backbone, "progress": False, "baseline": False, **CONFIG},
            "report": str(tmp_path / "rank"), **extra}
    return launch(str(script), json.dumps(args), ok=ok)


def assert_same_adapter(a: Path, b: Path, atol: float = 1e-4) -> None:
    ta, tb = load_file(str(a / WEIGHTS)), load_file(str(b / WEIGHTS))
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=atol, msg=k)


def assert_only(parent: Path, name: str) -> None:
    """Exactly one complete adapter directory in `parent`: no temp dirs, no checkpoints."""
    assert sorted(p.name for p in parent.iterdir()) == [name]
    files = read_adapter(parent / name)  # checksums, config and task metadata verified
    assert files.task["training"]["processes"] == 2


def test_two_processes_match_one_and_write_one_adapter(tiny_distilbert, sentiment_task, tmp_path):
    ref = one_process(sentiment_task, tmp_path / "one" / "a", tiny_distilbert)
    api_under_launch(sentiment_task, tmp_path / "two" / "a", tiny_distilbert, tmp_path)
    reports = [json.loads((tmp_path / f"rank{r}").read_text()) for r in (0, 1)]
    assert reports[0] == reports[1]  # every process returns the same figures
    two = reports[0]
    # the same steps at the same global batch: losses and dev metrics of a 1-process run
    assert [s for s, _ in two["losses"]] == [s for s, _ in ref.history["losses"]]
    torch.testing.assert_close(torch.tensor([v for _, v in two["losses"]]),
                               torch.tensor([v for _, v in ref.history["losses"]]),
                               rtol=1e-4, atol=1e-5)
    assert [s for s, _ in two["evals"]] == [s for s, _ in ref.history["evals"]]
    assert two["metrics"] == pytest.approx(ref.metrics, abs=1 / 32)  # at most one dev row apart
    assert_same_adapter(ref.path, Path(two["path"]))
    assert_only(tmp_path / "two", "a")


@pytest.mark.slow
def test_cli_under_launch_reports_once(tiny_albert, tmp_path):
    """`adapters-kit train` unchanged under a launch (ALBERT: one layer shared by every depth)."""
    write_tsv(tmp_path / "train.tsv", ["text", "label"], sentiment_rows(96))
    card = tmp_path / "ddp_sent.toml"
    card.write_text('name = "ddp_sent"\nlabels = ["neg", "pos"]\n[data]\ntrain = "train.tsv"\n'
                    'dev_fraction = 0.25\n[defaults]\nepochs = 2\nlearning_rate = 5e-3\n'
                    'batch_size = 16\nrank = 4\n')
    flags = ["--backbone", tiny_albert, "--seed", "1", "--dropout", "0", "--precision", "fp32",
             "--threads", "1", "--json"]
    cli = ["-m", "adapters_kit.cli", "train", str(card)]
    one = subprocess.run([sys.executable, *cli, "--out", str(tmp_path / "one" / "a"), *flags],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch(*cli, "--out", str(tmp_path / "two" / "a"), *flags)
    lines = [ln for ln in two.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, two.stdout  # the main process reports for all
    got, want = json.loads(lines[0]), json.loads(one.stdout.splitlines()[-1])
    assert got["metrics"] == pytest.approx(want["metrics"], abs=1 / 24)
    assert got["examples_seen"] == want["examples_seen"]
    assert_same_adapter(tmp_path / "one" / "a", tmp_path / "two" / "a")
    assert_only(tmp_path / "two", "a")


@pytest.mark.slow
def test_interrupted_ddp_run_resumes_to_the_uninterrupted_result(tiny_distilbert, sentiment_task,
                                                                tmp_path):
    out = tmp_path / "two" / "a"
    ref = one_process(sentiment_task, tmp_path / "one" / "a", tiny_distilbert)
    stopped = api_under_launch(sentiment_task, out, tiny_distilbert, tmp_path, ok=False,
                               stop_after_step=4)
    assert stopped.returncode != 0 and not out.exists()  # no partial adapter
    assert sorted(p.name for p in (out.parent / ".checkpoints").iterdir()) == ["a"]
    api_under_launch(sentiment_task, out, tiny_distilbert, tmp_path)
    assert json.loads((tmp_path / "rank0").read_text())["metrics"] == pytest.approx(
        ref.metrics, abs=1 / 32)
    assert_same_adapter(ref.path, out)
    assert_only(out.parent, "a")
