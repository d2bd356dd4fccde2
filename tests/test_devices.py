"""Devices: how a setting resolves, what precision goes with it, and every device-aware path
(training, the engine, the server, Ray's replica options, the CLI) run with an explicit
`device="cpu"`, so the plumbing runs on every machine. tests/test_gpu.py runs it on CUDA."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch
from helpers import quick, sentiment_rows, write_tsv

from adapters_kit import DeviceError, MultiTaskModel, TrainConfig, train
from adapters_kit.devices import (
    engine_precision,
    grad_scaler,
    resolve_device,
    training_precision,
)
from adapters_kit.errors import ConfigError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
TEXTS = ["the film was great lovely", "a plot was dull awful tedious", "music", "this cast was bland"]


# -- resolving a setting -----------------------------------------------------------------------

@no_cuda
def test_auto_resolves_to_the_cpu_without_cuda_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="adapters_kit"):
        assert resolve_device("auto") == torch.device("cpu")
    assert "device auto: chose cpu" in caplog.text
    assert resolve_device("CPU") == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_asked_without_cuda_is_refused_naming_the_fix(name, tiny_distilbert, sentiment_task):
    with pytest.raises(DeviceError, match="--device cpu") as e:
        resolve_device(name)
    assert repr(name) in str(e.value) and "CUDA" in str(e.value)
    # the same sentence wherever the setting is given
    with pytest.raises(ConfigError, match=f"device {name!r} asks for a GPU"):
        TrainConfig(device=name).resolved(sentiment_task)
    with pytest.raises(DeviceError, match="--device cpu"):
        MultiTaskModel(tiny_distilbert, device=name)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:", "", "mps0", None, 0])
def test_a_bad_device_name_is_refused_naming_it(name, tmp_path):
    from adapters_kit.server import ServeConfig
    from adapters_kit.server.config import ServeConfigError

    with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N") as e:
        resolve_device(name)
    assert repr(name) in str(e.value)
    with pytest.raises(ServeConfigError, match="--device auto, cpu, cuda or cuda:N"):
        ServeConfig(store=tmp_path, device=name)


def _fake_gpus(monkeypatch, count: int = 2, capability: tuple[int, int] = (8, 0)) -> None:
    """torch.cuda answering as on a machine with `count` GPUs of `capability` (nothing runs on
    them: these tests check only the choices made from what CUDA reports)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")


def test_auto_and_cuda_pick_this_process_gpu_and_refuse_one_not_there(monkeypatch, caplog):
    _fake_gpus(monkeypatch, count=2)
    with caplog.at_level(logging.INFO, logger="adapters_kit"):
        assert resolve_device("auto") == torch.device("cuda", 0)
    assert "chose cuda:0 (Fake GPU)" in caplog.text
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"only 2 GPU\(s\) are visible \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")
    # under `accelerate launch`, each process its own GPU
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)


@pytest.mark.parametrize("capability, train_auto, engine_auto", [((8, 0), "bf16", "bf16"),
                                                                 ((7, 5), "fp16", "fp32")])
def test_precision_auto_per_gpu(monkeypatch, capability, train_auto, engine_auto):
    _fake_gpus(monkeypatch, capability=capability)
    gpu = torch.device("cuda", 0)
    assert training_precision("auto", gpu) == train_auto
    assert engine_precision("auto", gpu) == engine_auto
    assert (grad_scaler(train_auto, gpu) is not None) == (train_auto == "fp16")  # fp16 scales
    for fixed in ("fp32", "bf16", "fp16"):
        assert training_precision(fixed, gpu) == fixed


def test_precision_auto_on_the_cpu_is_as_before():
    from adapters_kit.devices import cpu_bf16

    cpu = torch.device("cpu")
    assert training_precision("auto", cpu) == ("bf16" if cpu_bf16() else "fp32")
    assert engine_precision("auto", cpu) == "fp32"  # the exact default stays
    assert grad_scaler("bf16", cpu) is None and grad_scaler("fp32", cpu) is None


def test_fp16_training_on_the_cpu_is_refused(sentiment_task):
    with pytest.raises(ConfigError, match="precision 'fp16' needs a CUDA device, not cpu"):
        TrainConfig(device="cpu", precision="fp16").resolved(sentiment_task)


# -- every device-aware path, on an explicit cpu ------------------------------------------------

def test_training_on_an_explicit_cpu_records_its_device(tiny_distilbert, sentiment_task, tmp_path):
    events = []
    result = train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, device="cpu", epochs=1),
                   on_progress=events.append)
    assert result.device == "cpu" and result.to_dict()["device"] == "cpu"
    assert json.loads((result.path / "task.json").read_text())["training"]["device"] == "cpu"
    start = next(e for e in events if e["event"] == "start")
    assert start["device"] == "cpu" and start["precision"] in ("fp32", "bf16")


def test_a_checkpoint_resumes_on_another_device(monkeypatch, sentiment_task):
    """The device is not part of the checkpoint key: a run interrupted on a GPU resumes on the
    CPU (at the same precision), and the other way round."""
    from adapters_kit.training.checkpoint import run_key

    _fake_gpus(monkeypatch)
    runs = [TrainConfig(device=d, precision="fp32").resolved(sentiment_task) for d in ("cpu", "cuda")]
    assert [r.device for r in runs] == ["cpu", "cuda:0"]
    assert run_key(runs[0], "fp", 1) == run_key(runs[1], "fp", 1)


@pytest.fixture()
def two_adapters(tiny_distilbert, sentiment_task, topic_task, tmp_path):
    a = train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, epochs=1, device="cpu")).path
    b = train(topic_task, tmp_path / "b", quick(tiny_distilbert, epochs=1, device="cpu")).path
    return a, b


def test_engine_on_an_explicit_cpu_keeps_everything_on_its_device(tiny_distilbert, two_adapters):
    a, b = two_adapters
    model = MultiTaskModel(tiny_distilbert, device="cpu")
    names = [model.load(a), model.load(b)]
    for i in range(5):  # more adapters in one batch than run one by one: the gathered path
        names.append(model.load(a if i % 2 else b, name=f"copy{i}"))
    assert model.device == torch.device("cpu")
    for t in model.tasks.values():
        assert t.head_weight.device == model.device
    for bank in model.banks.values():
        assert all(x.device == model.device for stack in bank._buckets.values() for x in stack)
    mixed = [(names[i % len(names)], TEXTS[i % len(TEXTS)]) for i in range(14)]
    out = model.logits_mixed(mixed)
    for (task, text), row in zip(mixed, out):
        assert row.device.type == "cpu"
        torch.testing.assert_close(row, model.logits(task, [text])[0], rtol=0, atol=1e-5)
    again = model.to("cpu").logits_mixed(mixed)  # a move to where it is changes nothing
    assert all(torch.equal(x, y) for x, y in zip(out, again))


def test_banks_follow_the_model_when_it_is_moved(tiny_distilbert, two_adapters):
    """The banks are plain tensors, not parameters: `.to()` must still take them along."""
    model = MultiTaskModel(tiny_distilbert, device="cpu")
    model.load(two_adapters[0])
    model.model.to("meta")
    stacks = [x for bank in model.banks.values() for stack in bank._buckets.values() for x in stack]
    assert stacks and all(x.device.type == "meta" for x in stacks)


def test_server_on_an_explicit_cpu_answers_as_the_engine_does(store, tiny_distilbert, reference):
    httpx = pytest.importorskip("httpx")
    from test_server import INPUTS, assert_same_outputs, expected, running

    with running(store, tiny_distilbert, device="cpu") as (url, app):
        assert app.state.server.model.device == torch.device("cpu")
        for task in ("tiny_sentiment", "tiny_ner", "tiny_qa"):
            r = httpx.post(url + "/v1/predict", json={"task": task, "inputs": INPUTS[task]})
            assert r.status_code == 200, r.text
            assert_same_outputs(r.json()["outputs"], expected(reference, task, INPUTS[task]))


def test_ray_replicas_ask_for_gpus_only_when_told(tmp_path):
    pytest.importorskip("ray.serve")
    from adapters_kit.server import ServeConfig
    from adapters_kit.server.config import ServeConfigError
    from adapters_kit.server.ray_app import replica_options

    config = ServeConfig(store=tmp_path)  # device auto
    options, replica = replica_options(config, 1.0, 0.5)
    assert options == {"num_cpus": 1.0, "num_gpus": 0.5} and replica.device == "auto"
    options, replica = replica_options(config, 2.0, 0)
    assert options == {"num_cpus": 2.0} and replica.device == "cpu"  # no GPU reserved, none used
    assert replica_options(ServeConfig(store=tmp_path, device="cpu"))[1].device == "cpu"
    for device, gpus, says in (("auto", 1.5, "a fraction"), ("cuda", 0, "--ray-gpus-per-replica 1"),
                               ("cpu", 1, "sit idle")):
        with pytest.raises(ServeConfigError, match=says):
            replica_options(ServeConfig(store=tmp_path, device=device), 1.0, gpus)


CLI = [sys.executable, "-m", "adapters_kit.cli"]


def _cli(*args, ok=True):
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_cli_train_eval_predict_merge_on_an_explicit_cpu(tiny_distilbert, tmp_path):
    card = tmp_path / "dev_sent.toml"
    write_tsv(tmp_path / "train.tsv", ["text", "label"], sentiment_rows(48))
    card.write_text('name = "dev_sent"\nlabels = ["neg", "pos"]\n[data]\ntrain = "train.tsv"\n'
                    'dev_fraction = 0.25\n[defaults]\nepochs = 1\nlearning_rate = 5e-3\n'
                    'batch_size = 16\nrank = 4\n')
    out = tmp_path / "adapter"
    trained = json.loads(_cli("train", str(card), "--backbone", tiny_distilbert, "--out", str(out),
                              "--device", "cpu", "--json").stdout)
    assert trained["device"] == "cpu"
    assert json.loads(_cli("eval", str(out), "--device", "cpu", "--no-baseline",
                           "--json").stdout)["device"] == "cpu"
    said = _cli("predict", str(out), "the film was great", "--device", "cpu")
    assert "device cpu, --device cpu" in said.stderr and said.stdout.split("\t")[0] in ("neg", "pos")
    merged = json.loads(_cli("merge", str(out), str(tmp_path / "merged"), "--device", "cpu",
                             "--json").stdout)
    assert merged["device"] == "cpu" and (tmp_path / "merged" / "config.json").is_file()


@no_cuda
def test_cli_refuses_cuda_without_cuda_and_ray_gpus_without_ray(tmp_path):
    proc = _cli("predict", str(tmp_path), "text", "--device", "cuda", ok=False)
    assert proc.returncode == 2 and "--device cpu" in proc.stderr
    proc = _cli("serve", "--store", str(tmp_path), "--ray-gpus-per-replica", "0.5", ok=False)
    assert proc.returncode == 2 and "need --ray" in proc.stderr
    proc = _cli("serve", "--store", str(tmp_path), "--ray", "--ray-gpus-per-replica", "2.5", ok=False)
    assert proc.returncode == 2 and "is not a GPU count" in proc.stderr
