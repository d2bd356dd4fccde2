"""A real S3 API for the tests: moto's server on a loopback port, s3fs pointed at it.

Credentials are dummies in the AWS_* variables; the endpoint goes to s3fs through fsspec's
configuration (in this process) and FSSPEC_S3_* variables (for child processes, Ray workers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator

import pytest

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def storage_options(endpoint: str) -> dict:
    return {"client_kwargs": {"endpoint_url": endpoint}, "anon": False,
            "key": ENV["AWS_ACCESS_KEY_ID"], "secret": ENV["AWS_SECRET_ACCESS_KEY"]}


@contextlib.contextmanager
def moto_s3(bucket: str = "adapters") -> Iterator[str]:
    """Yield the endpoint URL of a moto S3 server holding an empty `bucket`; while it runs,
    s3fs in this process and in child processes talks to it."""
    moto_server = pytest.importorskip("moto.server", reason='moto is not installed: pip install '
                                      '"moto[server]"')
    pytest.importorskip("s3fs", reason="s3fs is not installed: pip install s3fs")
    import fsspec.config

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved_env = {k: os.environ.get(k) for k in [*ENV, "FSSPEC_S3", "AWS_ENDPOINT_URL"]}
    saved_conf = fsspec.config.conf.get("s3")
    os.environ.update(ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    # child processes (and Ray workers) read fsspec's configuration from this at import
    os.environ["FSSPEC_S3"] = json.dumps(storage_options(endpoint))
    fsspec.config.conf["s3"] = storage_options(endpoint)
    try:
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, **storage_options(endpoint))
        fs.mkdir(bucket)
        yield endpoint
    finally:
        server.stop()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if saved_conf is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = saved_conf
