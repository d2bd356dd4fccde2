"""Many adapters in one pass (`train_many`): each the adapter `train` gives, saved the same way."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import quick
from safetensors.torch import load_file
from test_ner_qa import ner_task  # noqa: F401 (a fixture)

from adapters_kit import MultiTaskModel, TrainingInterrupted, TrainJob, train, train_many
from adapters_kit.adapters.store import WEIGHTS
from adapters_kit.errors import ConfigError
from adapters_kit.training.many import plan_passes


def _weights(path):
    return load_file(str(path / WEIGHTS))


def _same(a, b, atol=0.0):
    ta, tb = _weights(a), _weights(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        if atol == 0:
            assert torch.equal(ta[k], tb[k]), k
        else:
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=atol, msg=k)


def test_one_task_alone_gives_trains_adapter_exactly(tiny_backbone, sentiment_task, tmp_path):
    # dropout on, the machine's precision (bf16 where native): the same draws, the same ops
    cfg = quick(tiny_backbone, epochs=2, evals_per_epoch=2, baseline=True)
    solo = train(sentiment_task, tmp_path / "solo" / "t", cfg)
    events = []
    many = train_many([TrainJob(sentiment_task, tmp_path / "many" / "t", cfg)],
                      on_progress=events.append)["tiny_sentiment"]
    _same(solo.path, many.path)
    assert many.metrics == solo.metrics and many.baseline == solo.baseline
    assert many.history["losses"] == solo.history["losses"]
    meta = json.loads((many.path / "task.json").read_text())
    assert meta["training"] == {**json.loads((solo.path / "task.json").read_text())["training"],
                                "train_seconds": meta["training"]["train_seconds"]}
    files = sorted(p.name for p in many.path.iterdir())
    assert files == sorted(p.name for p in solo.path.iterdir())
    assert {e["event"] for e in events} >= {"start", "eval", "done"}
    assert all(e["task"] == "tiny_sentiment" for e in events)


def test_tasks_of_other_kinds_labels_and_lengths_train_as_they_would_alone(
        tiny_distilbert, sentiment_task, topic_task, ner_task, tmp_path):  # noqa: F811
    # Without dropout every task's steps are deterministic: together they must give each task
    # the adapter it gets alone (fp32: only summation order differs with the batch's company).
    def cfg(**kw):
        return quick(tiny_distilbert, dropout=0.0, precision="fp32", **kw)

    configs = {"tiny_sentiment": cfg(epochs=3, targets="all-linear"),
               "tiny_topic": cfg(epochs=2, learning_rate=3e-3, rank=2),  # 3 labels > rank 2
               "tiny_ner": cfg(epochs=1, head="lora")}
    specs = {"tiny_sentiment": sentiment_task, "tiny_topic": topic_task, "tiny_ner": ner_task}
    many = train_many([TrainJob(specs[n], tmp_path / "many" / n, configs[n]) for n in specs])
    assert list(many) == list(specs)
    for name, spec in specs.items():
        solo = train(spec, tmp_path / "solo" / name, configs[name])
        _same(solo.path, many[name].path, atol=2e-5)
        assert many[name].history["best_step"] == solo.history["best_step"]
        assert len(many[name].history["losses"]) == len(solo.history["losses"])  # each its own epochs


def test_resume_after_interruption_finishes_as_uninterrupted(tiny_distilbert, sentiment_task,
                                                             topic_task, tmp_path):
    cfg = quick(tiny_distilbert, epochs=2, evals_per_epoch=3, patience=100, dropout=0.0,
                precision="fp32")
    short = dataclasses.replace(cfg, epochs=1)  # topic: 4 steps in all
    specs = [(sentiment_task, cfg), (topic_task, short)]
    full = train_many([TrainJob(s, tmp_path / "full" / s.name, c) for s, c in specs])
    jobs = [TrainJob(s, tmp_path / "resumed" / s.name, c) for s, c in specs]
    with pytest.raises(TrainingInterrupted) as stopped:
        train_many(jobs, stop_after_step=5)
    err = stopped.value
    assert set(err.interrupted) == {"tiny_sentiment"}  # topic was done by then, and saved
    assert set(err.results) == {"tiny_topic"} and (tmp_path / "resumed" / "tiny_topic").is_dir()
    assert not (tmp_path / "resumed" / "tiny_sentiment").exists()  # no partial adapter
    assert err.checkpoint == tmp_path / "resumed" / ".checkpoints" / "tiny_sentiment"
    assert str(err.checkpoint) in str(err)
    resumed = train_many(jobs[:1])
    _same(full["tiny_sentiment"].path, resumed["tiny_sentiment"].path, atol=1e-6)
    assert not (tmp_path / "resumed" / ".checkpoints").exists()


def test_each_adapter_loads_in_plain_peft_and_the_engine_alike(tiny_distilbert, sentiment_task,
                                                               topic_task, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = quick(tiny_distilbert, epochs=1)
    out = train_many([TrainJob(s, tmp_path / s.name, cfg) for s in (sentiment_task, topic_task)])
    engine = MultiTaskModel(tiny_distilbert)
    texts = ["the film was great", "a dull plot and boring music"]
    for name, result in out.items():
        engine.load(result.path)
        base = json.loads((result.path / "adapter_config.json").read_text())["base_model_name_or_path"]
        n = len(json.loads((result.path / "task.json").read_text())["task"]["labels"])
        model = PeftModel.from_pretrained(
            AutoModelForSequenceClassification.from_pretrained(base, num_labels=n), str(result.path)).eval()
        enc = AutoTokenizer.from_pretrained(base)(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            want = model(**enc).logits
        torch.testing.assert_close(engine.logits(name, texts), want, atol=1e-5, rtol=1e-4)


def test_jobs_a_shared_pass_cannot_mix_are_refused_with_every_reason(tiny_distilbert, sentiment_task,
                                                                      topic_task, tmp_path):
    with pytest.raises(ConfigError) as e:
        train_many([TrainJob(sentiment_task, tmp_path / "a", quick(tiny_distilbert, dropout=0.0)),
                    TrainJob(topic_task, tmp_path / "b", quick(tiny_distilbert, dropout=0.2)),
                    TrainJob(topic_task, tmp_path / "c", quick(tiny_distilbert))])
    text = str(e.value)
    assert "dropout" in text and "tiny_topic" in text and "more than once" in text
    (tmp_path / "x").mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        train_many([TrainJob(sentiment_task, tmp_path / "x", quick(tiny_distilbert))])


def test_passes_group_batches_of_like_length_within_the_token_budget():
    widths = [(16, 20), (16, 22), (16, 100), (16, 24), (16, 105)]
    passes = plan_passes(widths, max_tokens=4096, slack=1.25)
    assert sorted(i for p in passes for i in p) == list(range(5))
    assert passes == [[0, 1, 3], [2, 4]]
    assert plan_passes(widths, max_tokens=16 * 20) == [[i] for i in (0, 1, 3, 2, 4)]


def test_cli_train_many_writes_each_adapter_under_out(tiny_distilbert, tmp_path, capsys):
    from helpers import sentiment_rows, write_tsv

    from adapters_kit.cli import main

    write_tsv(tmp_path / "train.tsv", ["text", "label"], sentiment_rows(64))
    cards = []
    for name, lr in (("cli_a", "5e-3"), ("cli_b", "1e-2")):
        card = tmp_path / f"{name}.toml"
        card.write_text(f'name = "{name}"\nlabels = ["neg", "pos"]\n[data]\ntrain = "train.tsv"\n'
                        f'dev_fraction = 0.25\n[defaults]\nepochs = 1\nlearning_rate = {lr}\n'
                        'batch_size = 16\nrank = 4\n')
        cards.append(str(card))
    out = tmp_path / "adapters"
    assert main(["train-many", *cards, "--out", str(out), "--backbone", tiny_distilbert,
                 "--rslora", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert set(result["tasks"]) == {"cli_a", "cli_b"}
    for name in ("cli_a", "cli_b"):
        assert result["tasks"][name]["path"] == str(out / name)
        assert json.loads((out / name / "adapter_config.json").read_text())["use_rslora"] is True
    events = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    assert {e["task"] for e in events} == {"cli_a", "cli_b"}
    assert main(["train-many", *cards, "--out", str(out), "--backbone", tiny_distilbert]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_every_task_model_uses_the_one_shared_base_weights(tiny_backbone):
    """However many tasks join, each task model's frozen base weights are the shared base's
    own tensors (one copy in memory), its routed linears included, and its head its own."""
    from peft import LoraConfig, get_peft_model

    from adapters_kit import Backbone
    from adapters_kit.backbones import OUTPUT_LAYERS, target_modules
    from adapters_kit.training.routing import SharedEncoder

    backbone = Backbone.resolve(tiny_backbone)
    shared = SharedEncoder(backbone.load_model(1), backbone.arch)
    base_tensors = {p.data_ptr() for p in shared.model.parameters()}
    models = []
    for labels in (2, 3, 4):
        model = backbone.load_model(labels)
        shared.share(model)
        config = LoraConfig(r=2, target_modules=target_modules(backbone.arch, "all-linear"))
        peft_model = get_peft_model(model, config)
        shared.add(peft_model)
        models.append(peft_model)
    for i, peft_model in enumerate(models):
        frozen = {n: p for n, p in peft_model.get_base_model().named_parameters()
                  if "lora_" not in n and n.split(".")[0] not in OUTPUT_LAYERS}
        assert frozen, "no frozen base weights found"
        own = sorted(n for n, p in frozen.items() if p.data_ptr() not in base_tensors)
        assert not own, f"task {i} holds its own copy of {len(own)} base weights: {own[:3]}"


def lane_threads(monkeypatch) -> set[str]:
    """The names of the threads that take train_many's steps, as they run."""
    import threading

    from adapters_kit.training import many

    names, step = set(), many._step

    def spied(*args, **kwargs):
        names.add(threading.current_thread().name)
        return step(*args, **kwargs)

    monkeypatch.setattr(many, "_step", spied)
    return names


def test_lanes_give_each_task_the_adapter_it_gets_alone(tiny_distilbert, sentiment_task,
                                                        topic_task, ner_task, tmp_path,  # noqa: F811
                                                        monkeypatch):
    """Tasks split between lanes (threads, side by side) still train each its own adapter:
    without dropout the one it gets alone; every progress event reaches the caller's thread."""
    import threading

    def cfg(**kw):  # 2 threads: one for each lane
        return quick(tiny_distilbert, dropout=0.0, precision="fp32", threads=2, **kw)

    configs = {"tiny_sentiment": cfg(epochs=3), "tiny_topic": cfg(epochs=2, learning_rate=3e-3),
               "tiny_ner": cfg(epochs=1)}
    specs = {"tiny_sentiment": sentiment_task, "tiny_topic": topic_task, "tiny_ner": ner_task}
    stepping = lane_threads(monkeypatch)
    seen = []
    many = train_many([TrainJob(specs[n], tmp_path / "many" / n, configs[n]) for n in specs],
                      lanes=2, on_progress=lambda e: seen.append((threading.get_ident(), e)))
    assert list(many) == list(specs)
    assert stepping == {"train_many-lane-0", "train_many-lane-1"}
    assert {who for who, _ in seen} == {threading.get_ident()}
    assert {e["task"] for _, e in seen if e["event"] == "done"} == set(specs)
    assert torch.get_num_threads() == 2  # the run's threads, not a lane's share
    for name, spec in specs.items():
        solo = train(spec, tmp_path / "solo" / name, configs[name])
        _same(solo.path, many[name].path, atol=2e-5)
        assert many[name].history["best_step"] == solo.history["best_step"]


def test_lanes_stop_together_resume_and_refuse_a_bad_count(tiny_distilbert, sentiment_task,
                                                           topic_task, tmp_path):
    cfg = quick(tiny_distilbert, epochs=2, evals_per_epoch=3, patience=100, dropout=0.0,
                precision="fp32", threads=2)
    specs = [sentiment_task, topic_task]
    with pytest.raises(ConfigError, match=r"lanes=0: give a whole number of lanes"):
        train_many([TrainJob(s, tmp_path / "x" / s.name, cfg) for s in specs], lanes=0)

    full = train_many([TrainJob(s, tmp_path / "full" / s.name, cfg) for s in specs])
    jobs = [TrainJob(s, tmp_path / "resumed" / s.name, cfg) for s in specs]
    with pytest.raises(TrainingInterrupted) as stopped:
        train_many(jobs, stop_after_step=3, lanes=2)
    assert set(stopped.value.interrupted) == {"tiny_sentiment", "tiny_topic"}
    assert not (tmp_path / "resumed" / "tiny_sentiment").exists()  # no partial adapter
    resumed = train_many(jobs, lanes=2)
    for s in specs:
        _same(full[s.name].path, resumed[s.name].path, atol=1e-6)

    # a failure on one thread (here the caller's progress callback) stops every lane, and the
    # caller gets that error, not a hang
    def fail_on_first_eval(event):
        if event["event"] == "eval":
            raise RuntimeError("the callback failed")

    with pytest.raises(RuntimeError, match="the callback failed"):
        train_many([TrainJob(s, tmp_path / "failing" / s.name, cfg) for s in specs], lanes=2,
                   on_progress=fail_on_first_eval)
    assert not any((tmp_path / "failing" / s.name).exists() for s in specs)
    assert torch.get_num_threads() == 2  # restored, though the last events raised again


def test_a_lane_that_fails_stops_the_others_and_its_error_reaches_the_caller(
        tiny_distilbert, sentiment_task, topic_task, tmp_path):
    # a real fault on a lane's thread: the sentiment task's checkpoint folder cannot be made
    # (a file stands where its parent folder would be), so its first checkpoint raises there
    cfg = quick(tiny_distilbert, epochs=3, evals_per_epoch=3, patience=100, dropout=0.0,
                threads=2)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".checkpoints").write_text("not a folder")
    jobs = [TrainJob(sentiment_task, tmp_path / "a" / "tiny_sentiment", cfg),
            TrainJob(topic_task, tmp_path / "b" / "tiny_topic", cfg)]
    evals = []
    with pytest.raises(OSError):
        train_many(jobs, lanes=2,
                   on_progress=lambda e: evals.append(e["task"]) if e["event"] == "eval" else None)
    assert not (tmp_path / "a" / "tiny_sentiment").exists()
    # the other lane stopped after its step (of its 12 evaluations, far fewer done), unsaved
    assert evals.count("tiny_topic") < 9
    assert not (tmp_path / "b" / "tiny_topic").exists()
