"""The HTTP routes, one module per group; each `router(srv)` gives an APIRouter over the app's
`Server` (`app.Server`, or `ray_app.RayServer` on Ray), which `app.create_app` includes.

`predict` (POST /v1/predict, GET /v1/tasks), `admin` (/v1/admin/adapters...), `jobs`
(/v1/jobs..., with `serve --jobs`), `health` (/healthz, /readyz, /metrics).
"""
