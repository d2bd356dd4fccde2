"""On CUDA: training, the engine, the server, QLoRA and Ray, each against its CPU result.

Every test here is marked `gpu`: skipped without CUDA (tests/conftest.py), run by
`pytest -m gpu` and by benchmarks/device_check.py. tests/test_devices.py runs the same paths
on an explicit CPU on every machine.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch
from helpers import quick

from adapters_kit import Backbone, MultiTaskModel, TrainConfig, train
from adapters_kit.devices import cuda_bf16

pytestmark = pytest.mark.gpu

TEXTS = ["the film was great lovely", "a plot was dull awful tedious", "music", "this cast was bland",
         "the acting was superb and the music was really moving"]
BF16_ATOL = 0.05
"""Outputs of a bf16 pass against fp32: bf16 keeps 8 bits of mantissa (relative rounding
2^-9 per op), and a logit of the tiny models (a few units) after a dozen rounded matmuls moves
by a few hundredths. The CPU's bf16 engine is held to the same bound (test_runtime.py)."""
FP32_ATOL = 1e-4
"""fp32 on the GPU against fp32 on the CPU: the same sums in another order (and other kernels)."""


@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_training_a_few_steps_on_cuda_learns_and_serves_on_the_cpu(tiny_distilbert, sentiment_task,
                                                                  tmp_path, precision):
    events = []
    before = {k: v.clone() for k, v in Backbone.resolve(tiny_distilbert).load_model(2).state_dict().items()}
    result = train(sentiment_task, tmp_path / "a", quick(tiny_distilbert, device="cuda",
                                                         precision=precision),
                   on_progress=events.append)
    record = json.loads((result.path / "task.json").read_text())["training"]
    want = precision if precision != "auto" else ("bf16" if cuda_bf16(torch.device("cuda")) else "fp16")
    assert result.device.startswith("cuda") and record["device"].startswith("cuda")
    assert record["precision"] == want
    assert next(e for e in events if e["event"] == "start")["device"].startswith("cuda")
    assert result.metrics["accuracy"] >= 0.8  # as on the CPU (test_train.py)
    after = Backbone.resolve(tiny_distilbert).load_model(2).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base is untouched
    # trained on the GPU, the same files serve on the CPU and on the GPU alike
    outs = []
    for device in ("cpu", "cuda"):
        engine = MultiTaskModel(tiny_distilbert, device=device)
        engine.load(result.path)
        outs.append(engine.logits("tiny_sentiment", TEXTS))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=FP32_ATOL)


def test_training_interrupted_on_cuda_resumes_to_the_uninterrupted_result(tiny_distilbert,
                                                                         sentiment_task, tmp_path):
    """The checkpoint keeps the GPU's RNG too (dropout draws there) and its optimizer state
    comes back onto the GPU."""
    from safetensors.torch import load_file

    from adapters_kit import TrainingInterrupted
    from adapters_kit.adapters.store import WEIGHTS

    cfg = dict(epochs=2, evals_per_epoch=3, patience=100, device="cuda", precision="fp32")
    full = train(sentiment_task, tmp_path / "full" / "x", quick(tiny_distilbert, **cfg))
    out = tmp_path / "resumed" / "x"
    with pytest.raises(TrainingInterrupted):
        train(sentiment_task, out, quick(tiny_distilbert, **cfg), stop_after_step=6)
    resumed = train(sentiment_task, out, quick(tiny_distilbert, **cfg))
    a, b = load_file(str(full.path / WEIGHTS)), load_file(str(resumed.path / WEIGHTS))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.fixture()
def cpu_adapters(tiny_backbone, sentiment_task, topic_task, tmp_path):
    a = train(sentiment_task, tmp_path / "a", quick(tiny_backbone, epochs=1, device="cpu")).path
    b = train(topic_task, tmp_path / "b", quick(tiny_backbone, epochs=1, device="cpu")).path
    return tiny_backbone, a, b


def _loaded(engine: MultiTaskModel, a, b) -> MultiTaskModel:
    engine.load(a)
    engine.load(b)
    for i in range(5):  # more adapters in a batch than run one by one: the gathered path
        engine.load(a if i % 2 else b, name=f"copy{i}")
    return engine


def test_engine_mixed_batch_on_cuda_equals_cpu_fp32(cpu_adapters):
    backbone, a, b = cpu_adapters
    cpu = _loaded(MultiTaskModel(backbone, device="cpu"), a, b)
    names = sorted(cpu.tasks)
    mixed = [(names[i % len(names)], TEXTS[i % len(TEXTS)]) for i in range(21)]
    want = cpu.logits_mixed(mixed)
    want_single = cpu.logits("tiny_sentiment", TEXTS * 4)  # one adapter, long: the merged path
    moved = _loaded(MultiTaskModel(backbone, device="cpu"), a, b).to("cuda")  # moved after loading
    cases = [(MultiTaskModel(backbone, device="cuda"), FP32_ATOL),
             (moved, FP32_ATOL),
             (MultiTaskModel(backbone, device="cuda", precision="auto"), BF16_ATOL)]
    for engine, atol in cases:
        if engine is not moved:
            _loaded(engine, a, b)
        assert engine.device.type == "cuda"
        assert all(t.head_weight.device == engine.device for t in engine.tasks.values())
        got = engine.logits_mixed(mixed)
        for g, w in zip(got, want):
            assert g.device.type == "cpu" and g.dtype == torch.float32
            torch.testing.assert_close(g, w, rtol=0, atol=atol)
        torch.testing.assert_close(engine.logits("tiny_sentiment", TEXTS * 4), want_single,
                                   rtol=0, atol=atol)
    assert cases[2][0].precision == ("bf16" if cuda_bf16(cases[2][0].device) else "fp32")


def test_server_on_cuda_answers_as_the_cpu_engine_does(store, tiny_distilbert, reference):
    httpx = pytest.importorskip("httpx")
    from test_server import GOOD, INPUTS, assert_same_outputs, expected, running

    with running(store, tiny_distilbert, device="cuda") as (url, app):
        assert app.state.server.model.device.type == "cuda"
        for task in GOOD:
            r = httpx.post(url + "/v1/predict", json={"task": task, "inputs": INPUTS[task]})
            assert r.status_code == 200, r.text
            assert_same_outputs(r.json()["outputs"], expected(reference, task, INPUTS[task]))


def test_qlora_4bit_trains_on_cuda(tiny_distilbert, sentiment_task, tmp_path):
    if "quantize" not in {f.name for f in dataclasses.fields(TrainConfig)}:
        pytest.skip("quantized bases are not in this build (TrainConfig has no `quantize`)")
    pytest.importorskip("bitsandbytes")
    result = train(sentiment_task, tmp_path / "q4",
                   quick(tiny_distilbert, device="cuda", quantize="4bit"))
    assert result.device.startswith("cuda")
    assert result.metrics["accuracy"] >= 0.75  # well above chance (0.5)


def test_ray_serves_on_one_gpu_replica(store, tiny_distilbert, reference):
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    httpx = pytest.importorskip("httpx")
    from test_server import GOOD, INPUTS, assert_same_outputs, expected, free_port

    from adapters_kit.server import ServeConfig
    from adapters_kit.server.ray_app import start

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=80 * 2**20,
             log_to_driver=False)
    try:
        config = ServeConfig(store=store, backbone=tiny_distilbert, port=free_port(), torch_threads=1)
        start(config, replicas=1, gpus_per_replica=1)
        for _ in range(100):  # Ray's view of free resources lags the placement a little
            if ray.available_resources().get("GPU", 0) == 0:
                break
            time.sleep(0.1)
        assert ray.available_resources().get("GPU", 0) == 0  # the replica holds the GPU
        with httpx.Client(base_url=f"http://127.0.0.1:{config.port}", timeout=120) as c:
            for task in GOOD:
                r = c.post("/v1/predict", json={"task": task, "inputs": INPUTS[task]})
                assert r.status_code == 200, r.text
                assert_same_outputs(r.json()["outputs"], expected(reference, task, INPUTS[task]))
    finally:
        serve.shutdown()
        ray.shutdown()
