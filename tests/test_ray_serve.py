"""The server on Ray Serve: a real local Ray instance, 2 engine replicas, real HTTP, real adapters.

One Ray instance (2 CPUs, no dashboard) serves the whole module: starting Ray costs far more
than any test here. Answers are compared with the engine run alone, the HTTP contract with the
single-process server, request for request.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason='Ray Serve is not installed: pip install "adapters-kit[ray]"')
serve = pytest.importorskip("ray.serve", reason='Ray Serve is not installed: pip install '
                            '"adapters-kit[ray]"')
httpx = pytest.importorskip("httpx")

from helpers import quick  # noqa: E402
from server_adapters import _specs  # noqa: E402
from test_server import (  # noqa: E402, F401 (fixtures)
    ACME_KEY,
    ADMIN_KEY,
    BAD,
    GLOBEX_KEY,
    GOOD,
    INPUTS,
    assert_same_outputs,
    free_port,
    keys_toml,
    running,
)

from adapters_kit import MultiTaskModel, train  # noqa: E402

# more tasks than the five kinds: the same specs trained with other seeds under other names
VARIANTS = {f"{base}_s{seed}": (base, seed) for base in ("tiny_sentiment", "tiny_topic")
            for seed in (11, 12)}
TASKS = GOOD + list(VARIANTS)
KEYS = keys_toml(["tiny_sentiment*", "tiny_t*"])


def _inputs(task: str) -> list:
    return INPUTS[VARIANTS[task][0] if task in VARIANTS else task]


def _auth(key: str = ADMIN_KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def ray_store(tmp_path_factory, adapters, tiny_distilbert) -> tuple[Path, Path]:
    """(store, keys file): the five kinds, four seed variants and a corrupt adapter."""
    root = tmp_path_factory.mktemp("ray-store")
    store = root / "store"
    for name in GOOD + ["bad_corrupt"]:
        shutil.copytree(adapters[name], store / name)
    specs = {s.name: s for s in _specs(root / "data")}
    for name, (base, seed) in VARIANTS.items():
        train(dataclasses.replace(specs[base], name=name), store / name,
              quick(tiny_distilbert, epochs=1, seed=seed))
    keys = root / "keys.toml"
    keys.write_text(KEYS)
    return store, keys


@pytest.fixture(scope="module")
def ray_url(ray_store, tiny_distilbert):
    """The Ray deployment with 2 engine replicas, on a loopback port; Ray shut down after."""
    from adapters_kit.server import ServeConfig
    from adapters_kit.server.ray_app import start

    store, keys = ray_store
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
             log_to_driver=False)
    try:
        config = ServeConfig(store=store, backbone=tiny_distilbert, keys=keys, port=free_port(),
                             torch_threads=1)
        start(config, replicas=2)
        yield f"http://127.0.0.1:{config.port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def engine(ray_store, tiny_distilbert) -> MultiTaskModel:
    model = MultiTaskModel(tiny_distilbert)
    for name in TASKS:
        model.load(ray_store[0] / name, name=name)
    return model


def _engine_form(task: str, item):
    return tuple(item) if isinstance(item, list) and ("pair" in task or "qa" in task) else item


@pytest.mark.slow
@pytest.mark.smoke
def test_two_replicas_answer_many_tasks_as_the_engine_does_and_stick_to_warm_replicas(ray_url,
                                                                                      engine):
    served: dict[str, set[str]] = {}
    with httpx.Client(base_url=ray_url, headers=_auth(), timeout=60) as c:
        for round_ in range(2):
            for task in TASKS:
                inputs = _inputs(task)
                r = c.post("/v1/predict", json={"task": task, "inputs": inputs})
                assert r.status_code == 200, r.text
                assert r.json()["task"] == task
                want = engine.predict(task, [_engine_form(task, x) for x in inputs])
                assert_same_outputs(r.json()["outputs"], want)
                for g, w in zip(r.json()["outputs"], want):
                    for key in ("scores", "score", "value"):
                        if key in w:
                            assert g[key] == pytest.approx(w[key], abs=1e-5)
                served.setdefault(task, set()).add(r.headers["X-Served-By"])
            if round_ == 0:
                time.sleep(2)  # the replicas' lists of held adapters reach the router

        # tasks spread over both replicas (the router gives a new task to the replica holding
        # fewest), and each task, once held, is sent back to a replica that holds it (one
        # that served it before: if the router's view lagged in round 1, both may hold it)
        assert len(set().union(*served.values())) == 2, served
        for task in ("tiny_topic_s11", "tiny_ner", "tiny_sentiment"):
            first = c.post("/v1/predict", json={"task": task, "inputs": _inputs(task)})
            holders = served[task] | {first.headers["X-Served-By"]}
            for _ in range(8):
                r = c.post("/v1/predict", json={"task": task, "inputs": _inputs(task)[:1]})
                assert r.status_code == 200, r.text
                assert r.headers["X-Adapter-Warm"] == "true", task
                assert r.headers["X-Served-By"] in holders, (task, holders)


@pytest.mark.slow
@pytest.mark.smoke
def test_the_http_contract_is_the_single_process_servers(ray_url, ray_store, tiny_distilbert,
                                                          tmp_path):
    """The same requests to both servers: the same status, error body and headers."""
    big = "x" * 20_001
    calls = [("post", "/v1/predict", {}, {"task": "tiny_sentiment", "inputs": ["great"]}),
             ("post", "/v1/predict", _auth("not-a-valid-key-000"), {"task": "tiny_ner",
                                                                    "inputs": ["x"]}),
             ("post", "/v1/predict", _auth(GLOBEX_KEY), {"task": "tiny_sentiment", "inputs": ["x"]}),
             ("post", "/v1/predict", _auth(ACME_KEY), {"task": "no_such", "inputs": ["x"]}),
             ("post", "/v1/predict", _auth(ACME_KEY), {"task": "tiny_topic", "inputs": []}),
             ("post", "/v1/predict", _auth(ACME_KEY), {"task": "tiny_topic", "inputs": [big]}),
             ("post", "/v1/predict", _auth(ACME_KEY), {"task": "tiny_topic", "inputs": ["a"] * 65}),
             ("post", "/v1/predict", _auth(ACME_KEY), {"task": "tiny_topic", "input": ["a"]}),
             ("post", "/v1/predict", _auth(ACME_KEY), {"task": "tiny_topic",
                                                       "inputs": ["a" * 1000] * 1100}),
             ("post", "/v1/predict", _auth(ACME_KEY), {"task": "tiny_sentiment_s11",
                                                       "inputs": [["a", "b"]]}),
             ("post", "/v1/predict", _auth(), {"task": "bad_corrupt", "inputs": ["x"]}),
             ("get", "/v1/tasks", _auth(ACME_KEY), None),
             ("get", "/v1/tasks", _auth(GLOBEX_KEY), None),
             ("get", "/v1/admin/adapters", _auth(ACME_KEY), None),
             ("delete", "/v1/admin/adapters/no_such", _auth(), None),
             ("put", "/v1/admin/adapters/tiny_topic", _auth(), {"source": "relative/path"}),
             ("post", "/v1/admin/adapters/bad_corrupt/load", _auth(), None),
             ("get", "/healthz", {}, None), ("get", "/readyz", {}, None),
             ("get", "/no/such/route", {}, None)]
    store, keys = ray_store
    local_store = tmp_path / "store"
    shutil.copytree(store, local_store)

    def answers(url: str) -> list[tuple]:
        out = []
        with httpx.Client(base_url=url, timeout=60) as c:
            for method, path, headers, body in calls:
                r = c.request(method, path, headers=headers, json=body)
                kept = {k: r.headers.get(k) for k in ("content-type", "retry-after",
                                                      "www-authenticate")}
                text = r.text.replace(str(local_store), str(store))
                out.append((method, path, r.status_code, kept, text if r.status_code != 200
                            or path != "/v1/predict" else r.json()["outputs"][0]["label"]))
        return out

    with running(local_store, tiny_distilbert, keys=keys) as (url, _):
        want = answers(url)
    got = answers(ray_url)
    for g, w in zip(got, want):
        assert g == w
    assert [w[2] for w in want] == [401, 401, 404, 404, 422, 422, 413, 422, 413, 422, 503, 200,
                                    200, 403, 404, 422, 422, 200, 200, 404]


@pytest.mark.slow
def test_admin_replace_and_unload_reach_every_replica(ray_url, adapters, engine):
    task = "tiny_sentiment"
    engine.load(adapters["tiny_sentiment_v2"], name="v2")
    want = engine.predict("v2", INPUTS[task])
    with httpx.Client(base_url=ray_url, headers=_auth(), timeout=120) as c:
        r = c.post(f"/v1/admin/adapters/{task}/load")
        assert r.status_code == 200 and r.json()["resident"], r.text
        r = c.put(f"/v1/admin/adapters/{task}", json={"source": str(adapters["tiny_sentiment_v2"])})
        assert r.status_code == 200, r.text
        digest = r.json()["digest"]
        states = serve.get_deployment_handle("AdapterEngine", "adapters-kit") \
            .broadcast("state").results(timeout_s=30)
        assert len(states) == 2
        assert all(s["resident"].get(task) == digest for s in states)  # loaded, then replaced
        for _ in range(4):
            r = c.post("/v1/predict", json={"task": task, "inputs": INPUTS[task]})
            assert r.status_code == 200
            assert_same_outputs(r.json()["outputs"], want)
        assert c.delete(f"/v1/admin/adapters/{task}").status_code == 200
        states = serve.get_deployment_handle("AdapterEngine", "adapters-kit") \
            .broadcast("state").results(timeout_s=30)
        assert all(task not in s["resident"] for s in states)
        assert c.post("/v1/predict", json={"task": task, "inputs": ["x"]}).status_code == 404
        assert c.post(f"/v1/admin/adapters/{task}/load").status_code == 200
