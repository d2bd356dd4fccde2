"""The `adapters-kit` command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import sentiment_rows, write_tsv

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


def _json_error(proc, code=2) -> dict:
    assert proc.returncode == code, proc.stderr[-2000:]
    out = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert set(out) == {"error"} and out["error"]["exit_code"] == code
    return out["error"]


def test_json_errors_are_json_on_stdout(tmp_path):
    err = _json_error(run("train", "no_such_task", "--json", ok=False))
    assert err["type"] == "TaskError" and "known tasks" in err["message"]
    err = _json_error(run("train", "support_intent", "--epochs", "many", "--json", ok=False))
    assert err["type"] == "UsageError" and "'many'" in err["message"]
    err = _json_error(run("eval", str(tmp_path / "nowhere"), "--json", ok=False))
    assert "nowhere" in err["message"]
    plain = run("train", "no_such_task", ok=False)  # without --json: text on stderr, as before
    assert plain.returncode == 2 and plain.stdout == "" and "known tasks" in plain.stderr


def test_data_directory_is_named_with_its_files(tmp_path):
    write_tsv(tmp_path / "d" / "a.tsv", ["text", "label"], [("x", "y")])
    proc = run("train", "support_intent", "--data", str(tmp_path / "d"), ok=False)
    assert proc.returncode == 2 and "is a directory" in proc.stderr and "a.tsv" in proc.stderr


def test_encoding_flag_reads_a_cp1252_file(tiny_distilbert, tmp_path):
    card = tmp_path / "enc.toml"
    rows = [(f"\u201c{t}\u201d", y) for t, y in sentiment_rows(48)]
    (tmp_path / "train.tsv").write_bytes(
        ("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows)).encode("cp1252"))
    card.write_text('name = "enc"\nlabels = ["neg", "pos"]\n[data]\ntrain = "train.tsv"\n'
                    '[defaults]\nepochs = 1\nbatch_size = 16\nrank = 4\n')
    args = ["train", str(card), "--backbone", tiny_distilbert, "--out", str(tmp_path / "a")]
    failed = run(*args, "--json", ok=False)
    assert "--encoding cp1252" in _json_error(failed)["message"]
    run(*args, "--encoding", "cp1252", "--json")
    assert (tmp_path / "a" / "task.json").exists()


def test_train_json_progress_and_eval_baseline_on_a_file(tiny_distilbert, tmp_path):
    card = tmp_path / "cli_base.toml"
    write_tsv(tmp_path / "train.tsv", ["text", "label"], sentiment_rows(64))
    write_tsv(tmp_path / "other.tsv", ["text", "label"], sentiment_rows(20, seed=9))
    card.write_text('name = "cli_base"\nlabels = ["neg", "pos"]\n[data]\ntrain = "train.tsv"\n'
                    'dev_fraction = 0.25\n[defaults]\nepochs = 1\nlearning_rate = 5e-3\n'
                    'batch_size = 16\nrank = 4\n')
    out = tmp_path / "adapter"
    proc = run("train", str(card), "--backbone", tiny_distilbert, "--out", str(out), "--json",
               "--class-weights", "neg=2,pos=1")
    trained = json.loads(proc.stdout)
    assert trained["class_weights"] == {"neg": 2.0, "pos": 1.0}
    assert set(trained["report"]["per_class"]) == {"neg", "pos"} and "warnings" in trained
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "done"
    assert any(e["event"] == "eval" for e in events)
    scored = json.loads(run("eval", str(out), "--data", str(tmp_path / "other.tsv"), "--json").stdout)
    assert scored["examples"] == 20 and set(scored["baseline"]) >= {"accuracy", "f1_macro"}
    assert sum(sum(r) for r in scored["report"]["confusion_matrix"]) == 20
    text = run("eval", str(out), "--data", str(tmp_path / "other.tsv")).stdout
    assert "TF-IDF baseline" in text and "confusion" in text and "precision" in text
    # the baseline is trained on the task's train split: the same figures as computing it here
    from adapters_kit import TaskSpec
    from adapters_kit.tasks.kinds import kind_of
    from adapters_kit.tasks.reading import load_eval_split, load_splits

    spec = TaskSpec.from_dict({k: v for k, v in json.loads((out / "task.json").read_text())["task"]
                               .items() if k != "source"})
    expected = kind_of(spec).baseline(spec, load_splits(spec)[0],
                                      load_eval_split(spec, str(tmp_path / "other.tsv")))
    assert scored["baseline"] == pytest.approx(expected)


def _card(tmp_path, epochs: int = 2):
    card = tmp_path / "cli_stop.toml"
    write_tsv(tmp_path / "train.tsv", ["text", "label"], sentiment_rows(64))
    card.write_text('name = "cli_stop"\nlabels = ["neg", "pos"]\n[data]\ntrain = "train.tsv"\n'
                    f'dev_fraction = 0.25\n[defaults]\nepochs = {epochs}\nlearning_rate = 5e-3\n'
                    'batch_size = 16\nrank = 4\n')
    return card


def test_an_interrupted_training_exits_130_naming_its_checkpoint(tmp_path, monkeypatch, capsys):
    """`train` stopped on request raises TrainingInterrupted (a library error): the command
    reports it as an interruption, resumable, not as a usage error."""
    from adapters_kit import cli
    from adapters_kit.training import TrainingInterrupted

    def stopped(spec, out, config, on_progress=None):
        raise TrainingInterrupted(f"training stopped after step 3 of 8; resume from {out}.ckpt",
                                  step=3, total_steps=8, checkpoint=f"{out}.ckpt")

    monkeypatch.setattr("adapters_kit.training.loop.train", stopped)
    code = cli.main(["train", str(_card(tmp_path)), "--out", str(tmp_path / "a"), "--json"])
    error = json.loads(capsys.readouterr().out)["error"]
    assert code == 130 and error["exit_code"] == 130 and error["type"] == "Interrupted"
    assert f"{tmp_path / 'a'}.ckpt" in error["message"]


def test_patience_reaches_the_training_config(tmp_path, monkeypatch):
    from adapters_kit import cli
    from adapters_kit.training import TrainingInterrupted

    seen = {}

    def stopped(spec, out, config, on_progress=None):
        seen["patience"] = config.patience
        raise TrainingInterrupted("stopped", step=0, total_steps=1, checkpoint=None)

    monkeypatch.setattr("adapters_kit.training.loop.train", stopped)
    cli.main(["train", str(_card(tmp_path)), "--out", str(tmp_path / "a"), "--patience", "7"])
    cli.main(["train", str(_card(tmp_path)), "--out", str(tmp_path / "b")])
    assert seen == {"patience": 4}  # the second run kept the default
    cli.main(["train", str(_card(tmp_path)), "--out", str(tmp_path / "a"), "--patience", "7"])
    assert seen == {"patience": 7}


def test_config_flags_reach_the_training_config_of_train_and_train_many(tmp_path, monkeypatch):
    """The settings flags are TrainConfig's fields: a flag given sets its field, one not given
    leaves TrainConfig's default; the names the flags have always had still work."""
    from adapters_kit import cli
    from adapters_kit.training import TrainConfig, TrainingInterrupted

    seen = []

    def stopped(*args, **kwargs):
        seen.append(args[2] if len(args) > 2 else args[0][0].config)  # train's, or a job's
        raise TrainingInterrupted("stopped", step=0, total_steps=1, checkpoint=None)

    monkeypatch.setattr("adapters_kit.training.loop.train", stopped)
    monkeypatch.setattr("adapters_kit.training.many.train_many", stopped)
    card = str(_card(tmp_path))
    flags = ["--lr", "0.02", "--warmup-ratio", "0.2", "--no-resume", "--no-baseline", "--rslora",
             "--evals-per-epoch", "3", "--device", "cpu"]
    assert cli.main(["train", card, "--out", str(tmp_path / "a"), *flags]) == 130
    assert cli.main(["train-many", card, "--out", str(tmp_path / "m"), *flags]) == 130
    for config in seen:
        assert (config.learning_rate, config.warmup_ratio, config.evals_per_epoch) == (0.02, 0.2, 3)
        assert (config.resume, config.baseline, config.use_rslora) == (False, False, True)
        assert (config.patience, config.rank, config.device) == (4, None, "cpu")  # not given
    assert len(seen) == 2 and all(isinstance(c, TrainConfig) for c in seen)
    # train-many takes no time budget (train_many has none): refused as an unknown flag
    assert cli.main(["train-many", card, "--out", str(tmp_path / "m"), "--max-seconds", "5"]) == 2


def test_ctrl_c_during_training_exits_130_and_leaves_a_checkpoint(tiny_distilbert, tmp_path):
    import signal

    out = tmp_path / "adapter"
    def ctrl_c_reaches_it() -> None:
        # A child inherits an ignored or blocked SIGINT, and Python then leaves it ignored: give
        # the command the disposition a terminal's Ctrl-C meets, whatever the test runner holds.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    # no early stop: the run must still be training when the signal arrives
    proc = subprocess.Popen([*CLI, "train", str(_card(tmp_path, epochs=500)), "--backbone",
                             tiny_distilbert, "--out", str(out), "--patience", "100000",
                             "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_reaches_it)
    try:
        evals = 0
        for line in proc.stderr:  # --json progress: one event a line
            evals += line.startswith("{") and json.loads(line)["event"] == "eval"
            if evals == 2:  # the first evaluation's checkpoint is written before the second
                break
        proc.send_signal(signal.SIGINT)
        stdout, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    answer = json.loads(stdout)
    assert "error" in answer, (f"not interrupted (exit {proc.returncode}, {evals} evaluations "
                               f"seen): {stdout[-800:]} {rest[-1500:]}")
    error = answer["error"]
    assert proc.returncode == 130 and error["type"] == "Interrupted"
    assert "resumes from its last checkpoint" in error["message"]
    assert not out.exists() and (tmp_path / ".checkpoints" / "adapter" / "progress.json").exists()
