"""Fair sharing of the serving queue: a real server on loopback, real adapters, two tenants.

A tenant that floods the queue fills only its own share and gets 429 with Retry-After; the
other tenant's requests are still queued and answered 200. The engine takes the tenants' lines
in turn. A per-tenant rate limits one tenant without touching the other. Per-task metrics name
at most `metrics_tasks` tasks.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from test_server import engine_held, in_background, metric, post_all, running, wait_for  # noqa: E402

ACME = "acme-key-0123456789abcdef"
GLOBEX = "globex-key-0123456789abcdef"
BODY = {"task": "tiny_topic", "inputs": ["the music", "a plot"]}


def keys_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(f'[tenants.acme]\nkeys = ["{ACME}"]\ntasks = ["tiny_*"]\n\n'
                    f'[tenants.globex]\nkeys = ["{GLOBEX}"]\ntasks = ["tiny_*"]\n')
    return path


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_a_tenant_flooding_the_queue_gets_429_and_the_other_tenant_still_gets_200(
        store, tiny_distilbert, tmp_path):
    # queue_inputs 8 over two tenants: a share of 4 inputs each
    with running(store, tiny_distilbert, keys=keys_file(tmp_path), queue_inputs=8, max_inputs=2,
                 retry_after_s=2) as (url, app):
        assert app.state.server.batcher.tenant_inputs == 4
        with engine_held(app), httpx.Client(base_url=url) as c:
            first = in_background(lambda: post_all(url, [BODY], auth(ACME)))
            wait_for(lambda: metric(c.get("/metrics").text, "adapters_kit_cache_misses_total") >= 1,
                     "the first request to reach the engine thread")
            flood = in_background(lambda: post_all(url, [BODY, BODY], auth(ACME)))
            wait_for(lambda: metric(c.get("/metrics").text, "adapters_kit_queue_inputs") == 4,
                     "acme's share to fill")
            r = c.post("/v1/predict", json=BODY, headers=auth(ACME))
            assert r.status_code == 429 and r.headers["retry-after"] == "2"
            assert r.json()["error"]["code"] == "tenant_overloaded"
            assert "share of the queue" in r.json()["error"]["message"]
            other = in_background(lambda: post_all(url, [BODY, BODY], auth(GLOBEX)))
            wait_for(lambda: metric(c.get("/metrics").text, "adapters_kit_queue_inputs") == 8,
                     "globex's requests to be queued, not refused")
        assert [r.status_code for r in first() + flood()] == [200, 200, 200]
        assert [r.status_code for r in other()] == [200, 200]
        text = httpx.get(url + "/metrics").text
    assert metric(text, "adapters_kit_rejected_total", reason="tenant_queue_full") == 1


def test_the_engine_takes_the_tenants_lines_in_turn(store, tiny_distilbert):
    from adapters_kit import LocalStore
    from adapters_kit.engine.cache import AdapterCache
    from adapters_kit.engine.model import MultiTaskModel
    from adapters_kit.server import ServeConfig
    from adapters_kit.server.batcher import Batcher
    from adapters_kit.server.metrics import ServerMetrics

    config = ServeConfig(store=store, backbone=tiny_distilbert)
    cache = AdapterCache(MultiTaskModel(tiny_distilbert), LocalStore(store), 1 << 30)
    batcher = Batcher(cache, config, ServerMetrics(lambda: (cache.stats, 0)))  # not started

    async def queue():
        for tenant in ("acme", "acme", "acme", "globex", "acme", "globex"):
            batcher.submit("tiny_topic", [tenant], 1e12, tenant)

    asyncio.run(queue())
    order = []
    while (job := batcher.admission.take(0)) is not None:
        order.append(job.tenant)
    assert order == ["acme", "globex", "acme", "globex", "acme", "acme"]
    # a newcomer's expected wait counts of the flooding line only as much as its own
    admission = batcher.admission
    admission.pace.chars_per_s = 100.0
    admission._tenant_chars, admission._pending_chars = {"acme": 1000}, 1000
    admission.pace.batch_chars = 0  # the jobs taken above are not in hand: no batch is running
    assert batcher.expected_wait(10, "globex") == pytest.approx((10 + 10) / 100)
    assert batcher.expected_wait(10, "acme") == pytest.approx((1010) / 100)


def test_while_several_tenants_send_each_fills_at_most_its_share_of_a_batch(store, tiny_distilbert):
    from adapters_kit import LocalStore
    from adapters_kit.engine.cache import AdapterCache
    from adapters_kit.engine.model import MultiTaskModel
    from adapters_kit.server import ServeConfig
    from adapters_kit.server.batcher import Batcher
    from adapters_kit.server.metrics import ServerMetrics

    # "the music": [CLS] the music [SEP], 4 word pieces; a batch budget of 16, so 8 each
    config = ServeConfig(store=store, backbone=tiny_distilbert, batch_tokens=16, max_wait_ms=0.1)
    cache = AdapterCache(MultiTaskModel(tiny_distilbert), LocalStore(store), 1 << 30)

    def first_batch(tenants: list[str]) -> list[str]:
        batcher = Batcher(cache, config, ServerMetrics(lambda: (cache.stats, 0)))

        async def queue():
            for tenant in tenants:
                batcher.submit("tiny_topic", ["the music"], 1e12, tenant)

        asyncio.run(queue())
        batch = batcher.runner.gather()
        for p in batch:
            batcher.model.release(p.task)
        if batcher.runner.carry is not None:
            batcher.model.release(batcher.runner.carry.task)
        return [p.job.tenant for p in batch]

    assert first_batch(["acme"] * 6) == ["acme"] * 4  # one tenant: the whole budget
    assert first_batch(["acme"] * 6 + ["globex"]) == ["acme", "globex", "acme"]


def test_a_tenant_over_its_rate_gets_429_and_the_other_does_not(store, tiny_distilbert, tmp_path):
    # 0.05 a second: the second request comes long before a token is back, however slow the
    # first one (its cold load included) was on a loaded machine
    with running(store, tiny_distilbert, keys=keys_file(tmp_path), tenant_rate=0.05) as (url, _):
        with httpx.Client(base_url=url) as c:
            assert c.post("/v1/predict", json=BODY, headers=auth(ACME)).status_code == 200
            r = c.post("/v1/predict", json=BODY, headers=auth(ACME))
            assert r.status_code == 429 and r.json()["error"]["code"] == "tenant_rate_limited"
            assert int(r.headers["retry-after"]) >= 1
            assert c.post("/v1/predict", json=BODY, headers=auth(GLOBEX)).status_code == 200


def test_per_task_metrics_name_at_most_metrics_tasks_tasks(store, tiny_distilbert):
    with running(store, tiny_distilbert, metrics_tasks=1) as (url, _):
        with httpx.Client(base_url=url) as c:
            for task in ("tiny_sentiment", "tiny_sentiment", "tiny_topic"):
                assert c.post("/v1/predict", json={"task": task, "inputs": ["the music"]}
                              ).status_code == 200
            assert c.post("/v1/predict", json={"task": "made_up", "inputs": ["x"]}).status_code == 404
            assert c.post("/v1/predict", json={"task": "tiny_sentiment", "inputs": []}
                          ).status_code == 422
            text = c.get("/metrics").text
    assert metric(text, "adapters_kit_task_requests_total", status="200", task="tiny_sentiment") == 2
    assert metric(text, "adapters_kit_task_requests_total", status="422", task="tiny_sentiment") == 1
    assert metric(text, "adapters_kit_task_requests_total", status="200", task="other") == 1
    assert metric(text, "adapters_kit_task_seconds_count", task="tiny_sentiment") == 3
    assert 'task="made_up"' not in text and 'task="tiny_topic"' not in text
