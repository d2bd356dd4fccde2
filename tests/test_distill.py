"""Distillation: compact students made from a teacher's weights, and task adapters distilled
from a teacher adapter's soft outputs (every kind), with the errors at the door."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, _tokenizer, _vocab, quick, sentiment_rows, write_tsv
from safetensors.torch import load_file
from test_ner_qa import ner_rows, squad_json

from adapters_kit import MultiTaskModel, TaskSpec, TrainJob, train, train_many
from adapters_kit.backbones import Backbone, make_student
from adapters_kit.backbones.made import read_registry
from adapters_kit.errors import AdapterFileError, BackboneError, ConfigError, DataError, TrainingError
from adapters_kit.tasks.kinds import kind_of
from adapters_kit.training import Teacher, distill
from adapters_kit.training.teacher import attach


@pytest.fixture(scope="module")
def teacher_base(tmp_path_factory) -> str:
    """A tiny 4-layer DistilBERT teacher (the shared fixtures have 2 layers)."""
    from transformers import DistilBertConfig, DistilBertModel

    folder = tmp_path_factory.mktemp("teacher") / "distilbert4"
    folder.mkdir()
    _tokenizer(folder)
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=len(_vocab()), dim=32, hidden_dim=64,
                                     n_layers=4, n_heads=2, max_position_embeddings=64,
                                     initializer_range=0.3)).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module", autouse=True)
def _forget_students():
    """The students made here leave the session's registry after this file (the default grid
    of `compare` lists every registered student)."""
    yield
    from adapters_kit.backbones.made import unregister

    for name in [n for n in read_registry() if n.startswith(("tiny-", "real-"))]:
        unregister(name)


@pytest.fixture(scope="module")
def students(teacher_base):
    return {"cut": make_student("tiny-cut", teacher_base, layers=2, overwrite=True),
            "shared": make_student("tiny-shared", teacher_base, share_layers=True, embedding_size=16,
                                   overwrite=True)}


@pytest.fixture(scope="module")
def teacher_adapter(teacher_base, tmp_path_factory):
    """A sentiment task and its teacher adapter on the 4-layer base."""
    d = tmp_path_factory.mktemp("sent")
    spec = TaskSpec(name="tiny_sentiment", labels=["neg", "pos"],
                    train=str(write_tsv(d / "train.tsv", ["text", "label"], sentiment_rows(96))),
                    dev=str(write_tsv(d / "dev.tsv", ["text", "label"], sentiment_rows(32, seed=1))),
                    epochs=2, learning_rate=1e-2, batch_size=16, max_length=32, rank=4,
                    targets="all-linear")
    return spec, train(spec, d / "teacher", quick(teacher_base)).path


# -- students ------------------------------------------------------------------------------------

def _plain(path: str):
    """The folder through plain transformers: every tensor but the task's classifier is there."""
    from transformers import AutoModelForSequenceClassification

    model, info = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2,
                                                                     output_loading_info=True)
    assert not info["unexpected_keys"]
    assert {k.split(".")[0] for k in info["missing_keys"]} <= {"classifier"}
    return model.eval()


def test_layers_student_loads_with_plain_transformers_and_is_the_teacher_cut(teacher_base, students):
    from transformers import AutoModel

    report = students["cut"]
    assert report.teacher_layers == [0, 2] and report.depth == 2
    student = _plain(report.path).distilbert
    teacher = AutoModel.from_pretrained(teacher_base).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    mask = torch.ones_like(ids)
    # the teacher with its layers 1 and 3 taken out, by hand
    teacher.transformer.layer = torch.nn.ModuleList([teacher.transformer.layer[i] for i in (0, 2)])
    teacher.config.n_layers = teacher.transformer.n_layers = 2
    with torch.no_grad():
        want = teacher(input_ids=ids, attention_mask=mask).last_hidden_state
        got = student.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(got, want, atol=1e-5)
    assert report.params < report.teacher_params and report.disk_bytes < report.teacher_disk_bytes


def test_shared_student_is_flat_in_depth_with_svd_embeddings(teacher_base, students):
    shallow = make_student("tiny-shared-2", teacher_base, share_layers=True, embedding_size=16,
                           layers=2, overwrite=True)
    deep = students["shared"]
    assert deep.depth == 4 and shallow.depth == 2
    assert deep.params == shallow.params  # one layer, whatever the depth
    model = _plain(deep.path).albert
    assert model.config.num_hidden_groups == 1 and model.config.embedding_size == 16
    w = load_file(str(Backbone.resolve(teacher_base).path / "model.safetensors"))[
        "distilbert.embeddings.word_embeddings.weight"].double()
    u, s, _ = torch.linalg.svd(w, full_matrices=False)
    word = model.embeddings.word_embeddings.weight.detach().double()
    # U_E S_E, up to each singular vector's sign
    assert torch.allclose(word.abs(), (u[:, :16] * s[:16]).abs(), atol=1e-4)
    assert deep.teacher_layers == [2]  # the middle layer of four
    assert deep.mapping_fit is not None and deep.mapping_fit < 1


def test_a_made_student_resolves_by_name_in_a_new_process(students):
    code = "from adapters_kit.backbones import Backbone; print(Backbone.resolve('tiny-cut').path)"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == students["cut"].path
    assert read_registry()["tiny-cut"]["style"] == "layers"


def test_student_fingerprint_differs_and_a_teacher_adapter_is_refused_on_it(students, teacher_adapter):
    _, path = teacher_adapter
    teacher_fp = json.loads((path / "task.json").read_text())["backbone"]["fingerprint"]
    assert students["cut"].fingerprint != Backbone.resolve(students["cut"].teacher).fingerprint()
    engine = MultiTaskModel("tiny-cut")
    with pytest.raises(AdapterFileError, match=r"trained on base .*not this base"):
        engine.load(path)
    assert engine.fingerprint != teacher_fp


def test_bad_student_settings_are_refused_naming_the_value(teacher_base):
    with pytest.raises(BackboneError, match=r"layers=9 is more than .* \(4\)"):
        make_student("tiny-bad", teacher_base, layers=9)
    with pytest.raises(BackboneError, match=r"layers=0"):
        make_student("tiny-bad", teacher_base, layers=0)
    with pytest.raises(BackboneError, match="student name 'Bad Name'"):
        make_student("Bad Name", teacher_base, layers=1)
    with pytest.raises(BackboneError, match="embedding_size=64 is more than"):
        make_student("tiny-bad", teacher_base, share_layers=True, embedding_size=64)
    assert "tiny-bad" not in read_registry()


# -- task distillation ---------------------------------------------------------------------------

def test_soft_targets_are_what_the_teacher_adapter_outputs(students, teacher_adapter):
    from adapters_kit.training.config import TrainConfig
    from adapters_kit.training.data import load_data

    spec, path = teacher_adapter
    student = Backbone.resolve("tiny-cut")
    tok = student.tokenizer()
    kind = kind_of(spec)
    data = load_data(kind, TrainConfig(backbone="tiny-cut").resolved(spec), tok)
    _, attached = attach(Teacher(path), kind, data, student, tok, torch.device("cpu"))
    engine = MultiTaskModel(json.loads((path / "task.json").read_text())["backbone"]["name"])
    name = engine.load(path)
    served = engine.run_ids(name, data.train_feats.ids)  # the serving engine's own LoRA bank
    assert len(attached.soft.outputs) == len(served) == len(data.train_feats.ids)
    for mine, theirs in zip(attached.soft.outputs, served):
        assert torch.allclose(mine, theirs, atol=1e-5)


def test_alpha_one_distillation_is_train(students, teacher_adapter, tmp_path):
    spec, path = teacher_adapter
    plain = train(spec, tmp_path / "plain", quick("tiny-cut", epochs=1))
    hard = train(spec, tmp_path / "hard", quick("tiny-cut", epochs=1), teacher=Teacher(path, alpha=1.0))
    a = load_file(str(plain.path / "adapter_model.safetensors"))
    b = load_file(str(hard.path / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert plain.metrics == hard.metrics
    soft = train(spec, tmp_path / "soft", quick("tiny-cut", epochs=1), teacher=Teacher(path, alpha=0.0))
    c = load_file(str(soft.path / "adapter_model.safetensors"))
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the teacher's targets do move it


def test_distilled_adapter_records_its_teacher_and_loads_with_plain_peft(students, teacher_adapter,
                                                                         tmp_path):
    from peft import PeftModel

    spec, path = teacher_adapter
    unlabelled = write_tsv(tmp_path / "texts.tsv", ["id", "review"],
                           [(i, t) for i, (t, _) in enumerate(sentiment_rows(40, seed=7))])
    result = distill(path, tmp_path / "student", "tiny-shared", quick("tiny-shared", epochs=2),
                     task=spec, unlabelled=unlabelled, temperature=3.0, alpha=0.3)
    card = json.loads((result.path / "task.json").read_text())
    assert card["teacher"]["adapter"] == str(path.resolve())
    assert card["teacher"]["unlabelled_rows"] == 40
    assert (card["teacher"]["temperature"], card["teacher"]["alpha"]) == (3.0, 0.3)
    assert card["backbone"]["name"] == "tiny-shared"
    assert card["training"]["train_rows"] == 96 + 40
    engine = MultiTaskModel("tiny-shared")
    name = engine.load(result.path)
    backbone = Backbone.resolve("tiny-shared")
    tok = backbone.tokenizer()
    ids = [tok(t)["input_ids"] for t, _ in sentiment_rows(6, seed=3)]
    base = kind_of(spec).load_model(backbone, 2)
    model = PeftModel.from_pretrained(base, str(result.path)).eval()
    with torch.no_grad():
        for row, served in zip(ids, engine.run_ids(name, ids)):
            logits = model(input_ids=torch.tensor([row])).logits[0]
            assert torch.allclose(logits, served, atol=1e-4)


def test_train_many_distils_a_fleet_as_train_does(students, teacher_adapter, tmp_path):
    spec, path = teacher_adapter
    how = Teacher(path, temperature=2.0, alpha=0.5)
    alone = train(spec, tmp_path / "alone", quick("tiny-cut", epochs=1), teacher=how)
    fleet = train_many([TrainJob(spec, tmp_path / "fleet" / spec.name, quick("tiny-cut", epochs=1),
                                 teacher=how)])
    a = load_file(str(alone.path / "adapter_model.safetensors"))
    b = load_file(str(fleet[spec.name].path / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert json.loads((fleet[spec.name].path / "task.json").read_text())["teacher"]["alpha"] == 0.5


def test_each_kind_distils_from_its_teacher(students, teacher_base, tmp_path):
    """NER (per-token tags) and QA (start/end distributions): the student adapter trains on the
    teacher's outputs; the loss is zero against itself and ignores padding."""
    for name, rows in (("train", ner_rows(64)), ("dev", ner_rows(16, seed=1))):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ner = TaskSpec(name="tiny_ner", kind="token-classification", labels=["O", "B-ITEM", "I-ITEM"],
                   train=str(tmp_path / "train.jsonl"), dev=str(tmp_path / "dev.jsonl"), epochs=1,
                   learning_rate=1e-2, batch_size=16, max_length=32, rank=4, targets="all-linear")
    (tmp_path / "squad.json").write_text(json.dumps(squad_json(3, 12)))
    qa = TaskSpec(name="tiny_qa", kind="extractive-qa", train=str(tmp_path / "squad.json"),
                  format="squad", dev_articles=1, epochs=1, learning_rate=1e-2, batch_size=16,
                  max_length=24, doc_stride=6, rank=4, targets="all-linear")
    texts = write_tsv(tmp_path / "u.tsv", ["text"], [(" ".join(r["tokens"]),) for r in ner_rows(8, 5)])
    for spec, extra in ((ner, {"unlabelled": texts}), (qa, {})):
        teacher = train(spec, tmp_path / f"t-{spec.name}", quick(teacher_base)).path
        result = distill(teacher, tmp_path / f"s-{spec.name}", "tiny-cut", quick("tiny-cut"), task=spec,
                         **extra)
        assert json.loads((result.path / "task.json").read_text())["teacher"]["task"] == spec.name
    with pytest.raises(DataError, match="cannot take unlabelled text"):
        distill(teacher, tmp_path / "s-qa-u", "tiny-cut", quick("tiny-cut"), task=qa, unlabelled=texts)


@pytest.mark.parametrize("kind", ["classification", "multi-label", "regression",
                                  "token-classification", "extractive-qa"])
def test_distill_loss_is_zero_against_itself_and_ignores_padding(kind):
    k = kind_of(kind)
    torch.manual_seed(0)
    shape = (3, 5, 4 if kind == "token-classification" else 2) if k.per_token else (3, 4)
    mask = torch.ones(shape[:2], dtype=torch.bool) if k.per_token else None
    if mask is not None:
        mask[0, 3:] = False
    teacher, student = torch.randn(shape), torch.randn(shape)
    assert float(k.distill_loss(teacher, teacher, 2.0, mask)) == pytest.approx(0.0, abs=1e-6)
    loss = float(k.distill_loss(student, teacher, 2.0, mask))
    assert loss > 0
    if mask is not None:  # whatever sits in the padding, the loss is the same
        noisy = student.clone()
        noisy[0, 3:] = 100.0
        assert float(k.distill_loss(noisy, teacher, 2.0, mask)) == pytest.approx(loss, rel=1e-5)


def test_bad_distillation_input_is_refused_naming_the_value(students, teacher_adapter, tmp_path):
    spec, path = teacher_adapter
    with pytest.raises(ConfigError, match=r"temperature 0 must be a number above 0"):
        Teacher(path, temperature=0)
    with pytest.raises(ConfigError, match=r"temperature -1.5"):
        distill(path, tmp_path / "x", "tiny-cut", temperature=-1.5)
    with pytest.raises(ConfigError, match=r"alpha 1.5"):
        Teacher(path, alpha=1.5)
    other = TaskSpec(name="other_task", labels=["neg", "pos"], train=spec.train, dev=spec.dev,
                     max_length=32)
    with pytest.raises(TrainingError, match=r"adapter for task 'tiny_sentiment', not 'other_task'"):
        train(other, tmp_path / "y", quick("tiny-cut"), teacher=path)
    numbers = write_tsv(tmp_path / "numbers.tsv", ["id", "score"], [(i, i * 2) for i in range(5)])
    with pytest.raises(DataError, match=r"numbers.tsv has no text column .*\['id', 'score'\]"):
        distill(path, tmp_path / "z", "tiny-cut", quick("tiny-cut"), task=spec, unlabelled=numbers)
    assert not (tmp_path / "z").exists()


def test_general_distillation_brings_a_student_towards_its_teacher(teacher_base, tmp_path):
    from adapters_kit.training.general_distill import GeneralDistillConfig, general_distill

    made = make_student("tiny-general", teacher_base, share_layers=True, embedding_size=16,
                        overwrite=True)
    texts = write_tsv(tmp_path / "texts.tsv", ["text"], [(t,) for t, _ in sentiment_rows(960, seed=4)])
    result = general_distill("tiny-general", texts, GeneralDistillConfig(
        batch_size=16, learning_rate=3e-3, progress=False, device="cpu"))
    info = json.loads((Path(made.path) / "adapters_kit_base.json").read_text())["student"]
    assert result.steps == 60 and info["general_distillation"]["steps"] == 60
    first, last = info["general_distillation"]["first_loss"], info["general_distillation"]["last_loss"]
    assert last < 0.8 * first  # hidden states and attention closer to the teacher's
    assert Backbone.resolve("tiny-general").fingerprint() != made.fingerprint
    with pytest.raises(BackboneError, match="is not a made student"):
        general_distill(teacher_base, [t for t, _ in sentiment_rows(8)])


# -- the CLI and compare -------------------------------------------------------------------------

def test_cli_makes_students_and_distils_with_errors_naming_the_value(teacher_base, teacher_adapter,
                                                                      tmp_path, capsys):
    from adapters_kit.cli import main

    assert main(["backbones", "make", "tiny-cli", "--from", teacher_base, "--layers", "1",
                 "--overwrite", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)["student"]
    assert made["depth"] == 1 and made["teacher_layers"] == [0] and made["params_ratio"] < 1
    assert main(["backbones", "--json"]) == 0  # the plain listing still works, students in it
    assert "tiny-cli" in {b["name"] for b in json.loads(capsys.readouterr().out)["backbones"]}
    assert main(["backbones", "make", "tiny-cli2", "--from", teacher_base, "--layers", "7"]) == 2
    assert "layers=7 is more than" in capsys.readouterr().err
    spec, path = teacher_adapter
    assert main(["distill", str(path), "--student", "tiny-cli", "--temperature", "0"]) == 2
    assert "temperature 0.0 must be a number above 0" in capsys.readouterr().err
    code = main(["distill", str(path), "--student", "tiny-cli", "--out", str(tmp_path / "s"),
                 "--epochs", "1", "--json"])
    assert code == 0, capsys.readouterr()
    out = json.loads(capsys.readouterr().out)
    assert out["student"] == "tiny-cli" and out["path"] == str(tmp_path / "s")


def test_compare_takes_a_student_and_shows_its_memory(teacher_base, students, tmp_path):
    from adapters_kit import compare

    result = compare("support_intent", [teacher_base, "tiny-cut"], "fp32", budget_s=2,
                     max_train_examples=48, out=tmp_path / "cmp", progress=False, threads=1)
    by = {r["backbone"]: r for r in result.results}
    assert "skipped" not in by["tiny-cut"], by["tiny-cut"]
    assert by["tiny-cut"]["base_resident_bytes"] < by[teacher_base]["base_resident_bytes"]
    assert "tiny-cut" in result.table()


@pytest.mark.slow
def test_real_students_of_the_embedded_backbone_and_their_sizes():
    cut = make_student("real-mini-3", "embedded-distilbert", layers=3, overwrite=True).to_dict()
    assert cut["teacher_layers"] == [0, 2, 4] and 0.7 < cut["params_ratio"] < 0.8
    shared = make_student("real-shared-128", "embedded-distilbert", share_layers=True,
                          embedding_size=128, overwrite=True).to_dict()
    assert shared["disk_bytes_ratio"] <= 0.35 and shared["memory_bytes_ratio"] <= 0.35
    assert shared["teacher_layers"] == [3] and shared["depth"] == 6
    for made in (cut, shared):
        _plain(made["path"])
