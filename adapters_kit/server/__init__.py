"""The HTTP server: one base model, many tenants' task adapters, batched across tasks.

    adapters-kit serve --store DIR --backbone NAME [--keys keys.toml]

Modules: `config` (ServeConfig), `app` (`Server`, `create_app`, `serve`), `routes/` (one
module per group of routes), `responses` (NaN-safe JSON, error bodies), `auth` (API keys to
tenants), `batcher` (`admission`: the tenants' lines and refusals, in front of `runner`: the
engine thread), `tenants` (keys file), `limits` (sizes), `fairness` (tenant rates), `admin`
(install, replace), `jobs` (the trainer worker), `metrics` (Prometheus), `models` (request and
response schemas), `errors`; `ray_app` (the same server on Ray Serve: `adapters-kit serve
--ray --replicas N`, needs the `ray` extra).
Needs the `serve` extra: pip install "adapters-kit[serve]".
"""

from .config import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name: str):
    if name in ("create_app", "serve"):
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
