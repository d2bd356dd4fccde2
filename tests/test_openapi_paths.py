"""The HTTP contract's shape: every path and method the server had before its routes were split
into modules (server/routes/) is still in its OpenAPI schema, and nothing else is; the job
routes only with `serve --jobs`."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

ROUTES = {
    "/v1/predict": {"post"},
    "/v1/tasks": {"get"},
    "/v1/admin/adapters": {"get"},
    "/v1/admin/adapters/{name}": {"put", "delete"},
    "/v1/admin/adapters/{name}/load": {"post"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
}
JOB_ROUTES = {
    "/v1/jobs": {"get", "post"},
    "/v1/jobs/{job_id}": {"get", "delete"},
}


def _paths(app) -> dict[str, set[str]]:
    return {path: set(item) for path, item in app.openapi()["paths"].items()}


@pytest.mark.parametrize("jobs", [False, True], ids=["plain", "jobs"])
def test_the_schema_holds_every_route_and_method(tiny_distilbert, tmp_path, jobs):
    from adapters_kit.server import ServeConfig, create_app

    (tmp_path / "store").mkdir()
    app = create_app(ServeConfig(store=tmp_path / "store", backbone=tiny_distilbert, jobs=jobs))
    assert _paths(app) == (ROUTES | JOB_ROUTES if jobs else ROUTES)
    # each operation keeps the schemas its callers were given
    ops = app.openapi()["paths"]
    assert ops["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "$ref"].endswith("/PredictRequest")
    assert {"401", "403", "404", "413", "422", "429", "503", "504"} <= set(
        ops["/v1/admin/adapters"]["get"]["responses"])
    assert ops["/v1/admin/adapters/{name}"]["put"]["tags"] == ["admin"]
    if jobs:
        assert ops["/v1/jobs"]["post"]["tags"] == ["jobs"]
        assert "201" in ops["/v1/jobs"]["post"]["responses"]
