"""Training jobs over HTTP: a real server on loopback, a real trainer worker process, real files.

upload -> job -> adapter served (the answer equals the CLI-trained adapter's for the same seed);
the tenant rules on jobs; cancel; bad uploads refused with the CLI's message; SIGKILL of the
worker and of the server mid-job, restart, completion. The job table's own rules (limits,
claims, recovery) are checked on the table directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from helpers import ROOT, sentiment_rows  # noqa: E402
from test_server import assert_same_outputs, free_port, running  # noqa: E402

from adapters_kit import MultiTaskModel, read_adapter  # noqa: E402
from adapters_kit.jobs.table import JobTable  # noqa: E402

ACME = "acme-key-0123456789abcdef"
GLOBEX = "globex-key-0123456789abcdef"
KEYS = (f'[tenants.acme]\nkeys = ["{ACME}"]\ntasks = ["acme_*"]\n\n'
        f'[tenants.globex]\nkeys = ["{GLOBEX}"]\ntasks = ["globex_*"]\n')
TEXTS = ["the film was great lovely", "a plot was dull boring", "very superb", "tedious bland"]
# small, quick and deterministic: what the CLI run below is given too
SETTINGS = {"epochs": 2, "learning_rate": 0.01, "batch_size": 16, "rank": 4, "max_length": 32}


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def csv_text(rows) -> str:
    return "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows)


def submit(url: str, key: str, name: str, data: str, filename: str = "reviews.csv",
           overrides: dict | None = None, **fields) -> httpx.Response:
    form = {"name": name, "labels": "neg,pos", **fields}
    form["overrides"] = json.dumps(SETTINGS if overrides is None else overrides)
    return httpx.post(url + "/v1/jobs", headers=auth(key), data=form,
                      files={"file": (filename, data.encode(), "text/csv")}, timeout=60)


def wait_job(url: str, key: str, job_id: str, states=("succeeded", "failed", "cancelled"),
             timeout: float = 180, until=None) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth(key), timeout=10)
            job = r.json()
            if job["state"] in states and (until is None or until(job)):
                return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach {states}: {job}")


def write_keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys.toml"
    keys.write_text(KEYS)
    return keys


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory, tiny_distilbert):
    root = tmp_path_factory.mktemp("jobs")
    (root / "store").mkdir()
    with running(root / "store", tiny_distilbert, keys=write_keys(root), jobs=True,
                 job_max_bytes=64 << 10, job_max_rows=500) as (url, app):
        yield url, app, root / "store"


def cli_train(tmp_path: Path, backbone: str, data: Path, name: str, seed: int = 0) -> Path:
    """The same task trained by `adapters-kit train` in its own process."""
    card = tmp_path / f"{name}.toml"
    card.write_text(f'name = "{name}"\nlabels = ["neg", "pos"]\nmax_length = 32\n'
                    f'[data]\ntrain = "{data}"\n')
    out = tmp_path / "cli" / name
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "adapters_kit.cli", "train", str(card), "--out",
                           str(out), "--backbone", backbone, "--epochs", "2", "--lr", "0.01",
                           "--batch-size", "16", "--rank", "4", "--threads", "1",
                           "--seed", str(seed), "--json"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


# -- upload -> job -> served ------------------------------------------------------------------

@pytest.mark.slow  # a trainer process and a CLI training process
def test_an_uploaded_file_is_trained_published_and_served_like_the_cli_adapter(
        jobs_server, tiny_distilbert, tmp_path):
    url, app, store = jobs_server
    rows = sentiment_rows(96, seed=3)
    data = tmp_path / "reviews.csv"
    data.write_text(csv_text(rows))
    # the card's max_length is 128; the job and the CLI both take 32 from here
    r = submit(url, ACME, "acme_reviews", data.read_text(), overrides={**SETTINGS})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and r.headers["location"] == f"/v1/jobs/{job['id']}"
    seen = wait_job(url, ACME, job["id"], states=("running", "succeeded"),
                    until=lambda j: j["state"] == "succeeded" or (j["progress"] or {}).get("step"))
    if seen["state"] == "running":
        p = seen["progress"]
        assert p["total_steps"] and p["step"] >= 1 and "epoch" in p
    done = wait_job(url, ACME, job["id"])
    assert done["state"] == "succeeded", done
    assert done["metrics"]["accuracy"] >= 0 and "accuracy" in done["tfidf_baseline"]
    assert done["adapter_bytes"] > 0
    # the adapter is in the store, complete, and the next prediction uses it
    assert read_adapter(store / "acme_reviews").spec.name == "acme_reviews"
    answer = httpx.post(url + "/v1/predict", headers=auth(ACME),
                        json={"task": "acme_reviews", "inputs": TEXTS})
    assert answer.status_code == 200, answer.text

    cli = MultiTaskModel(tiny_distilbert)
    cli.load(cli_train(tmp_path, tiny_distilbert, data, "acme_reviews_cli"), name="cli")
    assert_same_outputs(answer.json()["outputs"], cli.predict("cli", TEXTS))
    # the job's work files are gone; the store lists the task, not the job's folders
    assert not any((store / ".jobs" / "work").iterdir())
    assert httpx.get(url + "/v1/tasks", headers=auth(ACME)).json()["tasks"][0]["name"] == \
        "acme_reviews"

    # a second job for the same name replaces the adapter, resident or not: hot-loaded
    r = submit(url, ACME, "acme_reviews", data.read_text(), overrides={**SETTINGS, "seed": 5})
    assert wait_job(url, ACME, r.json()["id"])["state"] == "succeeded"
    replaced = MultiTaskModel(tiny_distilbert)
    replaced.load(store / "acme_reviews", name="new")
    after = httpx.post(url + "/v1/predict", headers=auth(ACME),
                       json={"task": "acme_reviews", "inputs": TEXTS}).json()["outputs"]
    assert_same_outputs(after, replaced.predict("new", TEXTS))
    assert after != answer.json()["outputs"]


# -- tenant rules -----------------------------------------------------------------------------

def test_a_tenant_sees_only_its_own_jobs_and_another_tenants_id_is_a_plain_404(jobs_server):
    url, _, _ = jobs_server
    r = submit(url, ACME, "acme_private", csv_text(sentiment_rows(40)))
    assert r.status_code == 201, r.text
    theirs = r.json()["id"]
    missing = "job_0123456789abcdef"
    for method in ("GET", "DELETE"):
        other = httpx.request(method, f"{url}/v1/jobs/{theirs}", headers=auth(GLOBEX))
        none = httpx.request(method, f"{url}/v1/jobs/{missing}", headers=auth(GLOBEX))
        assert other.status_code == none.status_code == 404
        assert other.content == none.content  # byte for byte: nothing tells the two apart
    assert theirs not in {j["id"] for j in httpx.get(url + "/v1/jobs", headers=auth(GLOBEX))
                          .json()["jobs"]}
    assert theirs in {j["id"] for j in httpx.get(url + "/v1/jobs", headers=auth(ACME)).json()["jobs"]}
    # the name must match the tenant's globs, as for predictions
    r = submit(url, GLOBEX, "acme_private", csv_text(sentiment_rows(40)))
    assert r.status_code == 403 and "globex_*" in r.json()["error"]["message"]
    assert httpx.get(url + "/v1/jobs").status_code == 401


def test_per_tenant_limits_on_queued_and_running_jobs(tmp_path):
    table = JobTable(tmp_path / "jobs.sqlite3")
    for i in range(3):
        assert table.add(f"job_a{i}", tenant="acme", name=f"acme_{i}", backbone="b", spec={},
                         config={}, rows=10, max_queued=3) is not None
    assert table.add("job_a3", tenant="acme", name="acme_3", backbone="b", spec={}, config={},
                     rows=10, max_queued=3) is None  # a fourth queued job is refused
    assert table.add("job_g0", tenant="globex", name="globex_0", backbone="b", spec={},
                     config={}, rows=10, max_queued=3) is not None  # another tenant's is not
    claimed = table.claim(pid=1, max_rows=10_000, max_tasks=8, running_per_tenant=2)
    assert sorted(j["id"] for j in claimed) == ["job_a0", "job_a1", "job_g0"]
    assert table.claim(pid=1, max_rows=10_000, max_tasks=8, running_per_tenant=2) == []
    # a worker that died leaves them running: the next one (holding the lock) queues them again
    assert sorted(table.recover(pid=2)) == ["job_a0", "job_a1", "job_g0"]
    assert table.get("job_a0")["state"] == "queued"
    # a group shares a backbone, keeps to the row budget, and never holds one name twice
    table.add("job_x", tenant="x", name="acme_0", backbone="b", spec={}, config={}, rows=10)
    table.add("job_y", tenant="y", name="y", backbone="other", spec={}, config={}, rows=10)
    group = table.claim(pid=2, max_rows=25, max_tasks=8, running_per_tenant=5)
    assert [j["id"] for j in group] == ["job_a0", "job_a1"]


def test_the_workers_runner_trains_a_group_in_lanes_as_in_one(tiny_distilbert, sentiment_task,
                                                              topic_task, tmp_path, monkeypatch):
    """`job_lanes`: the worker's group run split between lanes gives each job the adapter one
    lane gives (no dropout, fp32), and every job's progress reaches the worker's thread."""
    import threading

    from helpers import quick
    from test_train_many import _same, lane_threads

    from adapters_kit.jobs.runner import GroupJob, run_group
    from adapters_kit.server.config import ServeConfig, ServeConfigError

    with pytest.raises(ServeConfigError, match="job_lanes 2 exceeds job_threads 1"):
        ServeConfig(store=tmp_path, job_lanes=2)
    cfg = quick(tiny_distilbert, dropout=0.0, precision="fp32", epochs=1, threads=2)
    outs, seen = {}, []
    for lanes in (1, 2):
        stepping = lane_threads(monkeypatch)
        jobs = [GroupJob(f"job_{s.name}", s, tmp_path / str(lanes) / s.name, cfg)
                for s in (sentiment_task, topic_task)]
        outs[lanes] = run_group(jobs, lambda job, e: seen.append((threading.get_ident(), job)),
                                lanes=lanes)
        assert outs[lanes] == {j.id: j.out_dir for j in jobs}
        assert len(stepping) == lanes  # the lanes asked for took the steps
    assert {who for who, _ in seen} == {threading.get_ident()}
    assert {job for _, job in seen} == {"job_tiny_sentiment", "job_tiny_topic"}
    for job, path in outs[2].items():
        _same(outs[1][job], path, atol=2e-5)


# -- cancel ------------------------------------------------------------------------------------

def test_cancel_stops_a_queued_or_running_job_and_nothing_is_published(jobs_server, tmp_path):
    url, _, store = jobs_server
    long = {**SETTINGS, "epochs": 5000}
    r = submit(url, ACME, "acme_long", csv_text(sentiment_rows(96)), overrides=long)
    job = r.json()["id"]
    wait_job(url, ACME, job, states=("running",), until=lambda j: (j["progress"] or {}).get("step"))
    r = httpx.delete(f"{url}/v1/jobs/{job}", headers=auth(ACME))
    assert r.status_code == 200 and r.json()["cancel_requested"]
    done = wait_job(url, ACME, job, timeout=60)
    assert done["state"] == "cancelled"
    assert not (store / "acme_long").exists()
    assert not (store / ".jobs" / "work" / job).exists()
    assert not (store / ".jobs" / "uploads" / job).exists()


def test_the_cli_lists_shows_and_cancels_jobs_in_the_same_table(tmp_path, capsys):
    from adapters_kit.cli import main

    store = tmp_path / "store"  # no worker here: the job stays queued until cancelled
    table = JobTable.for_store(store)
    table.add("job_queued_only", tenant="acme", name="acme_later", backbone="b", spec={},
              config={}, rows=1)
    assert main(["jobs", "list", "--store", str(store), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["jobs"]
    assert [(j["id"], j["tenant"], j["state"]) for j in listed] == [("job_queued_only", "acme",
                                                                     "queued")]
    assert main(["jobs", "cancel", "job_queued_only", "--store", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "cancelled"
    assert table.get("job_queued_only")["state"] == "cancelled"
    assert main(["jobs", "show", "nope", "--store", str(store)]) == 2
    assert "no job 'nope'" in capsys.readouterr().err


# -- bad uploads -------------------------------------------------------------------------------

def _cli_error(tmp_path: Path, backbone: str, data: Path) -> str:
    card = tmp_path / "acme_bad.toml"
    card.write_text(f'name = "acme_bad"\nlabels = ["neg", "pos"]\n[data]\ntrain = "{data}"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "adapters_kit.cli", "train", str(card), "--out",
                           str(tmp_path / "never"), "--backbone", backbone, "--json"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    return json.loads(done.stdout)["error"]["message"]


def test_a_bad_upload_is_refused_at_the_door_with_the_clis_message(jobs_server, tiny_distilbert,
                                                                   tmp_path):
    url, _, store = jobs_server
    rows = sentiment_rows(30)
    bad_label = csv_text(rows[:5] + [("the film was fine", "meh")] + rows[5:])
    path = tmp_path / "bad.csv"
    path.write_text(bad_label)
    r = submit(url, ACME, "acme_bad", bad_label, filename="bad.csv")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_data"
    message = r.json()["error"]["message"]
    assert "'meh' (row 6)" in message
    assert message == _cli_error(tmp_path, tiny_distilbert, path).replace(str(path), "bad.csv")
    assert str(store) not in message

    no_column = "review,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows)
    r = submit(url, ACME, "acme_bad", no_column)
    assert r.status_code == 422 and "no column 'text'" in r.json()["error"]["message"]
    r = submit(url, ACME, "acme_bad", csv_text(rows), overrides={"epochs": -1})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_config"
    assert "epochs must be a positive number" in r.json()["error"]["message"]
    r = submit(url, ACME, "acme_bad", csv_text(rows), overrides={"backbone": "x"})
    assert r.status_code == 422 and "backbone" in r.json()["error"]["message"]
    r = submit(url, ACME, "acme_bad", csv_text(rows), filename="rows.xlsx")
    assert r.status_code == 422 and ".csv, .tsv or .jsonl" in r.json()["error"]["message"]
    r = submit(url, ACME, "Acme Bad", csv_text(rows))
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_name"
    r = submit(url, ACME, "acme_bad", csv_text(sentiment_rows(600)))
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_rows"
    assert "500" in r.json()["error"]["message"]
    r = submit(url, ACME, "acme_bad", csv_text(sentiment_rows(3000)))
    assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"
    # nothing was queued and no upload was kept
    assert not [j for j in httpx.get(url + "/v1/jobs", headers=auth(ACME)).json()["jobs"]
                if j["name"] == "acme_bad"]
    uploads = store / ".jobs" / "uploads"
    assert not [p for p in uploads.iterdir() if not JobTable.for_store(store).get(p.name)]


# -- crash safety ------------------------------------------------------------------------------

def _serve(store: Path, keys: Path, backbone: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "adapters_kit.cli", "serve", "--jobs",
                                 "--store", str(store), "--keys", str(keys), "--backbone", backbone,
                                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)


def _ready(proc: subprocess.Popen, url: str) -> None:
    for _ in range(1200):
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


def _partial_adapters(store: Path) -> list[str]:
    """Store entries under a task's name that are not a complete, verified adapter."""
    bad = []
    for p in store.iterdir():
        if p.name.startswith("."):
            continue
        try:
            read_adapter(p)
        except Exception:
            bad.append(p.name)
    return bad


@pytest.mark.slow  # two server processes and three trainer processes
def test_sigkill_of_the_worker_then_of_the_server_mid_job_resumes_and_completes(
        tiny_distilbert, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    keys = write_keys(tmp_path)
    port = free_port()
    url, log = f"http://127.0.0.1:{port}", tmp_path / "server.log"
    table = JobTable.for_store(store)
    settings = {**SETTINGS, "epochs": 60, "evals_per_epoch": 4}
    proc = _serve(store, keys, tiny_distilbert, port, log)
    try:
        _ready(proc, url)
        job = submit(url, ACME, "acme_durable", csv_text(sentiment_rows(96)),
                     overrides=settings).json()["id"]
        checkpoint = store / ".jobs" / "work" / job / ".checkpoints" / "acme_durable"

        def killed_mid_job() -> int:
            wait_job(url, ACME, job, states=("running",), timeout=120,
                     until=lambda j: (checkpoint / "progress.json").exists())
            return table.get(job)["worker_pid"]

        worker = killed_mid_job()
        os.kill(worker, signal.SIGKILL)  # the worker alone: the server starts another
        wait_job(url, ACME, job, states=("running",), timeout=120,
                 until=lambda j: table.get(job)["worker_pid"] not in (None, worker)
                 and (j["progress"] or {}).get("resumed_from_step"))
        worker = killed_mid_job()
        proc.send_signal(signal.SIGKILL)  # the server: its worker dies with it
        proc.wait(30)
        for _ in range(100):
            if not _alive(worker):
                break
            time.sleep(0.1)
        assert not _alive(worker)
        assert _partial_adapters(store) == [] and not (store / "acme_durable").exists()
        assert table.get(job)["state"] == "running"  # as the killed worker left it

        proc = _serve(store, keys, tiny_distilbert, port, log)
        _ready(proc, url)
        done = wait_job(url, ACME, job, timeout=300)
        assert done["state"] == "succeeded", (done, log.read_text()[-3000:])
        assert table.get(job)["attempts"] == 3
        assert _partial_adapters(store) == []
        r = httpx.post(url + "/v1/predict", headers=auth(ACME),
                       json={"task": "acme_durable", "inputs": TEXTS})
        assert r.status_code == 200, r.text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()
