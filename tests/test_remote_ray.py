"""Ray Serve with 2 engine replicas serving from one S3 store (moto's server on loopback): a
version published from elsewhere, and an admin replace through the gateway, are served by
both replicas within the poll interval."""

from __future__ import annotations

import json
import os
import time

import pytest

ray = pytest.importorskip("ray", reason='Ray Serve is not installed: pip install "adapters-kit[ray]"')
serve = pytest.importorskip("ray.serve", reason='pip install "adapters-kit[ray]"')
httpx = pytest.importorskip("httpx")

from moto_s3 import ENV, moto_s3, storage_options  # noqa: E402
from test_remote_store import TEXTS, make_adapter  # noqa: E402
from test_server import free_port  # noqa: E402

from adapters_kit import RemoteStore  # noqa: E402
from adapters_kit.adapters.store import read_adapter  # noqa: E402

POLL = 0.5


@pytest.mark.slow
def test_two_replicas_serve_one_s3_store_and_follow_its_pointer(tmp_path, tiny_distilbert):
    from adapters_kit.server import ServeConfig
    from adapters_kit.server.ray_app import APP_NAME, start

    v = {k: make_adapter(tiny_distilbert, tmp_path / "made", "alpha", seed)
         for k, seed in (("v1", 1), ("v2", 2), ("v3", 3))}
    with moto_s3("fleet") as endpoint:
        url = "s3://fleet/adapters"
        publisher = RemoteStore(url, storage_options=storage_options(endpoint),
                                cache_dir=tmp_path / "pub")
        publisher.publish("alpha", v["v1"])
        env = {k: os.environ[k] for k in [*ENV, "FSSPEC_S3"]}
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
                 log_to_driver=False, runtime_env={"env_vars": {
                     **env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                     "ADAPTERS_KIT_CACHE": os.environ["ADAPTERS_KIT_CACHE"]}})
        try:
            port = free_port()
            start(ServeConfig(store=url, backbone=tiny_distilbert, port=port, torch_threads=1,
                              store_poll_s=POLL, store_cache=tmp_path / "replicas"), replicas=2)
            handle = serve.get_deployment_handle("AdapterEngine", app_name=APP_NAME)
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
            assert client.post("/v1/admin/adapters/alpha/load").status_code == 200

            def digests() -> list[str | None]:
                return [s["resident"].get("alpha") for s in
                        handle.broadcast("state").results(timeout_s=30)]

            assert digests() == [read_adapter(v["v1"]).digest] * 2

            def wait_for(digest: str) -> float:
                since = time.monotonic()
                while any(d != digest for d in digests()):
                    assert time.monotonic() - since < 30, digests()
                    time.sleep(0.02)
                return time.monotonic() - since

            d2 = publisher.publish("alpha", v["v2"])  # another machine publishes
            took = wait_for(d2)
            assert took <= POLL + 1.0, took
            r = client.post("/v1/predict", json={"task": "alpha", "inputs": TEXTS})
            assert r.status_code == 200, r.text

            # an admin replace through the gateway: published to S3, every replica swaps
            r = client.put("/v1/admin/adapters/alpha", json={"source": str(v["v3"])})
            assert r.status_code == 200, r.text
            d3 = read_adapter(v["v3"]).digest
            assert wait_for(d3) <= POLL + 1.0
            assert publisher.pointer("alpha", fresh=True).version == d3
            pointer = json.loads(publisher.fs.cat_file(publisher._key("alpha", "CURRENT")))
            assert set(pointer["retired"]) == {read_adapter(v["v1"]).digest, d2}
        finally:
            serve.shutdown()
            ray.shutdown()
