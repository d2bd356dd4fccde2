"""Faults stay with their owner: one bad adapter, request or file never hurts another tenant.

A real uvicorn server on loopback and real adapter files on disk, damaged the ways an unlucky
operator or an attacker would damage them (see also test_adapter_fuzz.py for the generated
mutations). Every test here failed on the code before the fix it checks.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")

from server_adapters import _rewrite_task_json  # noqa: E402
from test_server import (  # noqa: E402, F401 (fixtures)
    INPUTS,
    ROOT,
    assert_same_outputs,
    expected,
    free_port,
    running,
    wait_for,
)

from adapters_kit import MultiTaskModel  # noqa: E402
from adapters_kit.adapters.local import LocalStore  # noqa: E402
from adapters_kit.adapters.store import CONFIG, TASK, WEIGHTS, write_checksums  # noqa: E402
from adapters_kit.engine.cache import AdapterCache  # noqa: E402
from adapters_kit.errors import AdapterFileError  # noqa: E402


def _edit_json(directory: Path, name: str, edit) -> None:
    """Rewrite one metadata file through `edit(parsed) -> new`, then the checksums."""
    path = directory / name
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    write_checksums(directory)


def _set(section: str | None, key: str, value):
    def edit(meta):
        (meta if section is None else meta[section])[key] = value
        return meta
    return edit


# Each: (file, edit). All of these once escaped the cache's except clause and killed the
# engine thread for every tenant (or, for text_fields, broke the listings with 500).
DAMAGE = {
    "unknown_card_key": (TASK, _set("task", "summary_length", 3)),
    "alpha_zero": (CONFIG, _set(None, "lora_alpha", 0)),
    "alpha_null": (CONFIG, _set(None, "lora_alpha", None)),
    "rank_string": (CONFIG, _set(None, "r", "8")),
    "labels_int": (TASK, _set("task", "labels", 5)),
    "kind_unknown": (TASK, _set("task", "kind", "summarisation")),
    "max_length_string": (TASK, _set("task", "max_length", "64")),
    "fingerprint_int": (TASK, lambda m: {**m, "backbone": {**m["backbone"], "fingerprint": 7}}),
    "task_array": (TASK, lambda m: [m]),
    "config_array": (CONFIG, lambda c: [c]),
    "text_fields_int": (TASK, _set("task", "text_fields", 5)),
    "format_version_true": (TASK, _set(None, "format_version", True)),
}


def _damaged_store(store: Path) -> list[str]:
    names = []
    for i, (what, (file, edit)) in enumerate(DAMAGE.items()):
        name = f"bad_{i:02d}_{what}"
        shutil.copytree(store / "tiny_sentiment", store / name)
        _edit_json(store / name, file, edit)
        names.append(name)
    return names


def test_bad_typed_metadata_fails_its_own_task_and_every_other_task_keeps_answering(
        store, tiny_distilbert, reference):
    bad = _damaged_store(store)
    with running(store, tiny_distilbert) as (url, _):
        for name in bad:
            r = httpx.post(url + "/v1/predict", json={"task": name, "inputs": ["great film"]})
            assert r.status_code == 503, (name, r.text)
            assert r.json()["error"]["code"] == "adapter_unavailable"
            assert "refused" in r.json()["error"]["message"]
            good = httpx.post(url + "/v1/predict", json={"task": "tiny_topic",
                                                          "inputs": INPUTS["tiny_topic"]})
            assert good.status_code == 200, (name, good.text)
            assert_same_outputs(good.json()["outputs"],
                                expected(reference, "tiny_topic", INPUTS["tiny_topic"]))
            assert httpx.get(url + "/healthz").status_code == 200
            assert httpx.get(url + "/readyz").status_code == 200
            r = httpx.post(url + f"/v1/admin/adapters/{name}/load")
            assert r.status_code == 422 and r.json()["error"]["code"] == "adapter_refused", r.text
        listing = httpx.get(url + "/v1/tasks")
        assert listing.status_code == 200
        card_damaged = {n for n, (file, _) in zip(bad, DAMAGE.values()) if file == TASK}
        assert not {t["name"] for t in listing.json()["tasks"]} & card_damaged
        assert "tiny_topic" in {t["name"] for t in listing.json()["tasks"]}
        admin = httpx.get(url + "/v1/admin/adapters")
        assert admin.status_code == 200
        # PUT validates all that a load validates: refused, and nothing is installed
        for name in bad:
            r = httpx.put(url + f"/v1/admin/adapters/new_{name}", json={"source": str(store / name)})
            assert r.status_code == 422 and r.json()["error"]["code"] == "adapter_refused", r.text
            assert not (store / f"new_{name}").exists()
        assert not [p for p in store.iterdir() if p.name.startswith(".tmp-")]


def test_an_adapter_with_nan_weights_is_refused_and_no_response_holds_bare_nan(
        store, tiny_distilbert):
    from safetensors.torch import load_file, save_file

    shutil.copytree(store / "tiny_sentiment", store / "bad_nan")
    tensors = load_file(str(store / "bad_nan" / WEIGHTS))
    tensors = {k: v.fill_(float("nan")) for k, v in tensors.items()}
    save_file(tensors, str(store / "bad_nan" / WEIGHTS), metadata={"format": "pt"})
    write_checksums(store / "bad_nan")
    with running(store, tiny_distilbert) as (url, _):
        r = httpx.post(url + "/v1/predict", json={"task": "bad_nan", "inputs": ["great"]})
        assert r.status_code == 503, r.text
        assert "NaN" in r.json()["error"]["message"]
    from adapters_kit.server.responses import json_response

    body = json_response(200, {"outputs": [{"value": float("nan"), "scores": {"a": float("inf")}}]}).body
    assert json.loads(body, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON")) == \
        {"outputs": [{"value": None, "scores": {"a": None}}]}


def _sparse_weights(path: Path, claimed: int) -> None:
    """A safetensors file whose header claims one tensor of `claimed` bytes, sparse on disk."""
    header = json.dumps({"base_model.model.classifier.weight": {
        "dtype": "F32", "shape": [claimed // 4], "data_offsets": [0, claimed]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + claimed)


def test_refused_loads_keep_no_memory_and_no_slot(tmp_path, adapters, tiny_distilbert):
    root = tmp_path / "store"
    sparse = root / "bad_sparse"
    shutil.copytree(adapters["tiny_sentiment"], sparse)
    _sparse_weights(sparse / WEIGHTS, 256 << 20)  # 256 MB claimed; this base allows ~65 MB
    write_checksums(sparse)
    card = root / "bad_card"  # refused after the files are read: the slot must come back
    shutil.copytree(adapters["tiny_sentiment"], card)
    _rewrite_task_json(card, lambda m: m["task"].update(labels=["neg", "pos", "pos"]))
    shape = root / "bad_shape"  # the head does not fit this base
    shutil.copytree(adapters["tiny_topic"], shape)
    _rewrite_task_json(shape, lambda m: m["task"].update(labels=["film", "music"]))
    model = MultiTaskModel(tiny_distilbert)
    cache = AdapterCache(model, LocalStore(root), 64 << 20)
    names = ["bad_sparse", "bad_card", "bad_shape"]

    def refuse(n: int) -> None:
        for i in range(n):
            errors = cache.ensure_available([names[i % 3]])
            assert isinstance(errors[names[i % 3]], AdapterFileError)

    refuse(30)  # warm-up: allocator pools, lazy imports
    gc.collect()
    before_rss, before_slots = psutil.Process().memory_info().rss, model.slot_usage()
    t = time.perf_counter()
    refuse(200)
    seconds = time.perf_counter() - t
    gc.collect()
    grown = psutil.Process().memory_info().rss - before_rss
    assert grown < 16 << 20, f"RSS grew by {grown / 2**20:.1f} MB over 200 refused loads"
    assert model.slot_usage() == before_slots == (0, model.capacity - 1)
    assert seconds < 20, "a refused load must not read what it refuses"
    message = str(cache.ensure_available(["bad_sparse"])["bad_sparse"])
    assert "more than this base allows" in message and WEIGHTS in message


def test_a_request_is_bounded_in_model_rows_and_others_keep_answering(store, tiny_distilbert):
    context = ("the film was great and the music was lovely " * 500)[:19_970]
    with running(store, tiny_distilbert) as (url, _):
        r = httpx.post(url + "/v1/predict", json={"task": "tiny_qa", "inputs": [
            {"question": "which film", "context": context}] * 50}, timeout=60)
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert error["code"] == "too_many_rows"
        assert "256" in error["message"] and "max_request_rows" in error["message"]
        ok = httpx.post(url + "/v1/predict", json={"task": "tiny_qa", "inputs": INPUTS["tiny_qa"]})
        assert ok.status_code == 200


def test_a_started_batch_stops_between_chunks_once_its_requests_are_past_their_deadline(
        store, tiny_distilbert):
    """Each forward is slowed (the real forward, then a pause, as a slow machine would be):
    the request's deadline passes after a few chunks, and the rest are never run."""
    import asyncio

    from adapters_kit.server.errors import ServeError

    calls = []
    batcher, _ = _slow_batcher(store, tiny_distilbert, calls, batch_tokens=64, max_wait_ms=5.0)
    batcher.start()
    texts = [f"the film was great {i}" for i in range(40)]  # 40 rows, 2 per chunk: 20 chunks

    # resident first: its cold load must not use up the deadline before any chunk runs (and
    # no batch has run, so the engine has no rate to refuse the request by at the start)
    batcher.cache.ensure(["tiny_sentiment"])

    async def ask():
        # 0.5 s: 20 chunks take at least 1 s, so the deadline passes part of the way through
        future = batcher.submit("tiny_sentiment", texts, time.monotonic() + 0.5)
        with pytest.raises(ServeError) as e:
            await asyncio.wait_for(future, 10)
        return e.value

    try:
        error = asyncio.run(ask())
    finally:
        batcher.stop(10)
    assert error.status == 504
    assert 1 <= len(calls) < 20, f"{len(calls)} of 20 chunks ran for a request past its deadline"


def _slow_batcher(store, tiny_distilbert, calls: list, batch_tokens: int = 4096,
                  max_wait_ms: float = 50):
    """A real engine whose every forward also pauses 50 ms (a slow machine), 2 rows a chunk;
    `calls` gets each forward's row count."""
    from adapters_kit.server.batcher import Batcher
    from adapters_kit.server.config import ServeConfig
    from adapters_kit.server.metrics import ServerMetrics

    model = MultiTaskModel(tiny_distilbert)
    config = ServeConfig(store=store, backbone=tiny_distilbert, batch_tokens=batch_tokens,
                         max_batch_rows=2, max_wait_ms=max_wait_ms)
    cache = AdapterCache(model, LocalStore(store), 64 << 20)
    batcher = Batcher(cache, config, ServerMetrics(lambda: (cache.stats, 0)))
    real = model.forward

    def slow_forward(ids, tasks):
        calls.append(len(ids))
        out = real(ids, tasks)
        time.sleep(0.05)
        return out

    model.forward = slow_forward
    return batcher, model


def test_a_request_the_engine_has_taken_but_not_yet_run_still_counts_in_the_expected_wait(
        store, tiny_distilbert):
    """The engine takes a request, then waits for a held engine (a cold load or an admin
    swap would hold it): the queue is empty, but the expected wait still counts that request,
    so the door does not judge the engine idle while it has work in hand."""
    import asyncio

    calls: list[int] = []
    batcher, model = _slow_batcher(store, tiny_distilbert, calls)
    long = [f"the film was great {i}" for i in range(40)]
    batcher.start()

    async def scenario():
        await asyncio.wait_for(batcher.submit("tiny_sentiment", long, time.monotonic() + 30), 30)
        with model.paused():
            a = batcher.submit("tiny_sentiment", long, time.monotonic() + 30)
            for _ in range(400):  # until the engine thread has taken it from the queue
                if batcher.admission.pending == 0:
                    break
                await asyncio.sleep(0.01)
            assert batcher.admission.pending == 0, "the engine did not take the request"
            in_hand = batcher.expected_wait(1)
        await asyncio.wait_for(a, 30)
        return in_hand

    try:
        in_hand = asyncio.run(scenario())
    finally:
        batcher.stop(10)
    assert in_hand is not None and in_hand > 0


def test_the_engine_never_spends_a_batch_on_requests_it_cannot_finish_in_time(
        store, tiny_distilbert):
    """A long request (40 rows, at least 1 s of forwards) and a short one are queued (the
    queue's estimate admits both), then the engine is held until the short one has 0.6 s
    left, as a cold load or a busy machine would hold it. Run together, the short one would come back past its
    deadline; it is shed with 429 and Retry-After when it is taken, and the long one is
    answered. Then a short request with a 1.5 s deadline, and a longer one (80 rows) after it: the long one
    would make the batch late for the short one, so it is carried over to the next batch, and
    both are answered, the short one in time."""
    import asyncio

    from adapters_kit.server.errors import ServeError

    calls: list[int] = []
    batcher, model = _slow_batcher(store, tiny_distilbert, calls)
    long = [f"the film was great {i}" for i in range(40)]
    short = ["the film was dull", "the film was fine"]
    batcher.start()

    async def outcome(future, deadline):
        try:
            rows = len((await asyncio.wait_for(future, 30))[1])
            return ("ok", rows, time.monotonic() <= deadline)
        except ServeError as e:
            return (e.status, e.code, e.headers.get("Retry-After"))

    async def scenario():
        now = time.monotonic
        for _ in range(2):  # the engine's rates, measured on real batches
            await outcome(batcher.submit("tiny_sentiment", long, now() + 30), now() + 30)
        with model.paused():
            a_end = now() + 30
            a = batcher.submit("tiny_sentiment", long, a_end)
            # a deadline the queue's estimate admits, whatever this machine's speed; taken with
            # 0.6 s left, less than the long request's 20 chunks of 50 ms pauses alone
            wait = batcher.expected_wait(sum(map(len, short)))
            budget = max(3.0, 2.5 * wait + 0.5)
            b_end = now() + budget
            b = batcher.submit("tiny_sentiment", short, b_end)
            await asyncio.sleep(budget - 0.6)
        first = [await outcome(a, a_end), await outcome(b, b_end)]
        for _ in range(200):  # until the engine has closed its books on that batch
            if batcher.expected_wait(1) is None:
                break
            await asyncio.sleep(0.05)
        with model.paused():
            c_end, d_end = now() + 1.5, now() + 30
            c = batcher.submit("tiny_sentiment", short, c_end)
            d = batcher.submit("tiny_sentiment", long * 2, d_end)  # at least 2 s of forwards
        second = [await outcome(c, c_end), await outcome(d, d_end)]
        return first, second

    try:
        first, second = asyncio.run(scenario())
    finally:
        batcher.stop(10)
    assert first == [("ok", 40, True), (429, "overloaded", "1")], first
    assert second == [("ok", 2, True), ("ok", 80, True)], second


def test_work_that_cannot_finish_before_its_deadline_is_refused_with_429_at_the_door(
        store, tiny_distilbert):
    """With the engine held, the queue grows; once its expected wait passes the deadline, new
    requests get 429 with Retry-After at once instead of a 504 after holding a place."""
    from test_server import engine_held

    body = {"task": "tiny_sentiment", "inputs": ["the film was great and lovely " * 60] * 64}
    settings = {"deadline_s": 2.0, "queue_inputs": 100_000}
    with running(store, tiny_distilbert, **settings) as (url, app):
        for _ in range(3):  # the engine's rate is measured on real batches
            assert httpx.post(url + "/v1/predict", json=body, timeout=30).status_code == 200
        with httpx.Client(base_url=url, timeout=30) as client, engine_held(app):
            refused = None
            for _ in range(200):
                try:
                    r = client.post("/v1/predict", json=body, timeout=0.2)
                except httpx.TimeoutException:
                    continue  # admitted: it waits behind the held engine
                refused = r
                break
        assert refused is not None, "the queue never refused a request it could not serve in time"
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert "deadline" in refused.json()["error"]["message"]
        assert refused.headers["Retry-After"] == "1"


def test_bad_inputs_and_bodies_get_422_with_the_name_the_tenant_asked_for(store, tiny_distilbert):
    shutil.copytree(store / "tiny_sentiment", store / "Customer.Sentiment")
    with running(store, tiny_distilbert) as (url, _):
        post = lambda body, **kw: httpx.post(url + "/v1/predict", content=body, **kw)  # noqa: E731
        json_type = {"content-type": "application/json"}
        r = post(b'{"task": "tiny_sentiment", "inputs": ["\\ud800"]}', headers=json_type)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", r.text
        assert "inputs[0]" in r.json()["error"]["message"]
        r = post(b'{"task": "tiny_sentiment", "inputs": ["\xff\xfe"]}', headers=json_type)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
        deep = b'{"task": "tiny_sentiment", "inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        r = post(deep, headers=json_type)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
        # curl -d sends a form content type; the body is JSON all the same
        body = b'{"task": "tiny_sentiment", "inputs": ["a great film"]}'
        for headers in ({"content-type": "application/x-www-form-urlencoded"}, {}):
            r = post(body, headers=headers)
            assert r.status_code == 200, (headers, r.text)
        r = httpx.post(url + "/v1/predict", json={"task": "Customer.Sentiment",
                                                   "inputs": [{"question": "q", "context": "c"}]})
        assert r.status_code == 422
        message = r.json()["error"]["message"]
        assert "'Customer.Sentiment'" in message and "tiny_sentiment" not in message, message
        assert httpx.get(url + "/healthz").status_code == 200


def test_put_copies_only_listed_files_never_follows_links_out_and_widens_no_mode(
        tmp_path, store, tiny_distilbert, adapters):
    source = tmp_path / "source"
    shutil.copytree(adapters["tiny_sentiment"], source)
    (source / "notes.txt").write_text("not listed in checksums.json")
    os.chmod(source / "curves.png", 0o600)
    with running(store, tiny_distilbert) as (url, _):
        r = httpx.put(url + "/v1/admin/adapters/copied", json={"source": str(source)})
        assert r.status_code == 200, r.text
        copied = store / "copied"
        assert sorted(p.name for p in copied.iterdir()) == sorted(
            [*json.loads((source / "checksums.json").read_text()), "checksums.json"])
        assert (copied / "curves.png").stat().st_mode & 0o777 == 0o600
        assert (copied / WEIGHTS).stat().st_mode & 0o777 == 0o644
        secret = tmp_path / "secret.png"
        secret.write_bytes((source / "curves.png").read_bytes())  # same bytes, same checksum
        (source / "curves.png").unlink()
        (source / "curves.png").symlink_to(secret)
        r = httpx.put(url + "/v1/admin/adapters/linked", json={"source": str(source)})
        assert r.status_code == 422 and "outside" in r.json()["error"]["message"], r.text
        assert not (store / "linked").exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_writers_staging_folder_is_removed_at_the_next_start(store, tiny_distilbert):
    host = socket.gethostname()
    dead = store / f".tmp-tiny_topic~{_dead_pid()}@{host}~x1"
    live = store / f".tmp-tiny_topic~{os.getpid()}@{host}~x2"
    killed_training = store / ".checkpoints" / f".tmp-tiny_topic~{_dead_pid()}@{host}~x3"
    for d in (dead, live, killed_training):
        d.mkdir(parents=True)
        (d / WEIGHTS).write_bytes(b"\0" * 1024)
    with running(store, tiny_distilbert):
        assert not dead.exists() and not killed_training.exists()
        assert live.exists()  # a writer still running: its work is left alone


def test_when_the_engine_thread_dies_anyway_healthz_fails(store, tiny_distilbert, monkeypatch):
    class Fatal(BaseException):
        """What no request can raise: the thread's last line of defence lets it through."""

    with running(store, tiny_distilbert) as (url, app):
        batcher = app.state.server.batcher
        assert httpx.get(url + "/healthz").status_code == 200

        def boom(*_):
            raise Fatal()

        monkeypatch.setattr(batcher.runner, "_run_safely", boom)
        r = httpx.post(url + "/v1/predict", json={"task": "tiny_topic", "inputs": ["music"]},
                       timeout=20)
        assert r.status_code in (503, 504)
        wait_for(lambda: batcher.failed, "the engine thread to end")
        r = httpx.get(url + "/healthz")
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_failed"
        assert httpx.get(url + "/readyz").status_code == 503


SERVE_AND_BREAK = """
import sys
from adapters_kit.server import ServeConfig
from adapters_kit.server import app as server_app
from adapters_kit.server.runner import EngineRunner

class Fatal(BaseException):
    pass

def boom(self, batch):
    raise Fatal()

EngineRunner._run_safely = boom
server_app.serve(ServeConfig(store=sys.argv[1], backbone=sys.argv[2], port=int(sys.argv[3])))
"""


def test_serve_exits_non_zero_when_the_engine_thread_dies(store, tiny_distilbert):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SERVE_AND_BREAK, str(store), tiny_distilbert,
                             str(port)], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url + "/readyz"), "the server to start", tries=6000)
        httpx.post(url + "/v1/predict", json={"task": "tiny_topic", "inputs": ["music"]},
                   timeout=20)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    from adapters_kit.server.app import ENGINE_FAILED_EXIT

    assert code == ENGINE_FAILED_EXIT == 70
    assert "the engine thread died" in proc.stderr.read()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_max_adapter_bytes_bounds_a_full_rank_adapter_of_every_linear(tiny_distilbert):
    model = MultiTaskModel(tiny_distilbert)
    linears = [m for m in model.model.modules() if m.__class__.__name__ == "Linear"]
    full_rank = sum(4 * min(m.in_features, m.out_features) * (m.in_features + m.out_features)
                    for m in linears)
    assert full_rank <= model.max_adapter_bytes() < math.inf
