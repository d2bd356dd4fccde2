"""The `adapters-kit` command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import sentiment_rows, write_tsv

CLI = [sys.executable, "-m", "adapters_kit.cli"]


def run(*args, ok=True):
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_tasks_json_lists_the_cards():
    out = json.loads(run("tasks", "--json").stdout)
    names = {t["name"] for t in out["tasks"]}
    assert {"sst2", "support_intent"} <= names


def test_unknown_task_exits_2_with_the_known_ones():
    proc = run("train", "no_such_task", ok=False)
    assert proc.returncode == 2 and "known tasks" in proc.stderr and "sst2" in proc.stderr


def test_train_eval_predict_json(tiny_distilbert, tmp_path):
    card = tmp_path / "cli_sent.toml"
    write_tsv(tmp_path / "train.tsv", ["text", "label"], sentiment_rows(64))
    card.write_text('name = "cli_sent"\nlabels = ["neg", "pos"]\n[data]\ntrain = "train.tsv"\n'
                    'dev_fraction = 0.25\n[defaults]\nepochs = 2\nlearning_rate = 5e-3\n'
                    'batch_size = 16\nrank = 4\n')
    out = tmp_path / "adapter"
    trained = json.loads(run("train", str(card), "--backbone", tiny_distilbert, "--out", str(out),
                             "--seed", "1", "--json").stdout)
    assert trained["path"] == str(out) and trained["adapter_bytes"] > 0
    assert set(trained["metrics"]) >= {"accuracy", "f1_macro", "mcc"} and trained["baseline"]
    evaluated = json.loads(run("eval", str(out), "--json").stdout)
    assert evaluated["metrics"]["accuracy"] == pytest.approx(trained["metrics"]["accuracy"])
    texts = ["the film was great lovely", "the plot was awful dull"]
    preds = json.loads(run("predict", str(out), *texts, "--json").stdout)["predictions"]
    assert len(preds) == 2
    for p in preds:
        assert p["label"] in ("neg", "pos")
        assert set(p["scores"]) == {"neg", "pos"} and abs(sum(p["scores"].values()) - 1) < 1e-5
    again = run("train", str(card), "--backbone", tiny_distilbert, "--out", str(out), ok=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_missing_data_file_names_it(tmp_path):
    proc = run("train", "support_intent", "--data", str(tmp_path / "customer.csv"), ok=False)
    assert proc.returncode == 2 and "customer.csv" in proc.stderr
