"""The admin routes (the admin key only): list the store's adapters with their state; load,
install or replace, and unload one. The store and engine work is `server/admin.py`'s and the
Server's (`install`, `load`, `unload`); one admin change at a time (`srv.admin_lock`)."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from ...tasks import SERVED_NAME_RULE, is_served_name
from ..auth import callers
from ..errors import ServeError
from ..models import AdapterList, AdapterState, ReplaceRequest
from ..responses import ERRORS


def router(srv) -> APIRouter:
    """The routes over `srv` (the app's Server)."""
    routes = APIRouter(tags=["admin"])
    _, Admin = callers(srv.tenants)

    def adapter_state(name: str, residents: dict[str, str]) -> AdapterState:
        info = srv.task_info(name)
        return AdapterState(name=name, kind=info.kind if info else None,
                            enabled=name not in srv.disabled, resident=name in residents,
                            digest=residents.get(name))

    def in_store(name: str) -> None:
        if not (is_served_name(name) and srv.store.has(name)):
            raise ServeError(404, "unknown_adapter", f"no adapter {name!r} in the store; "
                             "GET /v1/admin/adapters lists them")

    @routes.get("/v1/admin/adapters", response_model=AdapterList, responses=ERRORS,
                summary="Every adapter in the store, with its state")
    async def adapters(_: Admin):
        names = await run_in_threadpool(srv.store.names)
        residents = await srv.residents()
        return AdapterList(adapters=[adapter_state(n, residents) for n in names])

    @routes.post("/v1/admin/adapters/{name}/load", response_model=AdapterState, responses=ERRORS,
                 summary="Load (and enable) a store adapter now")
    async def load(name: str, _: Admin):
        in_store(name)
        async with srv.admin_lock:
            error = await srv.load(name)
            if error is not None:
                raise ServeError(422, "adapter_refused", error)
            srv.disabled.discard(name)
        return adapter_state(name, await srv.residents())

    @routes.put("/v1/admin/adapters/{name}", response_model=AdapterState, responses=ERRORS,
                summary="Install or replace an adapter from a directory on the server")
    async def replace(name: str, body: ReplaceRequest, _: Admin):
        if not is_served_name(name):
            raise ServeError(422, "invalid_name", f"{name!r} is not an adapter name: use "
                             f"{SERVED_NAME_RULE} characters")
        async with srv.admin_lock:
            try:
                await srv.install(name, body.source)
            except (ValueError, OSError) as e:  # AdapterFileError is a ValueError
                # the store and the resident version are as they were
                raise ServeError(422, "adapter_refused", str(e)) from None
            srv.disabled.discard(name)
        return adapter_state(name, await srv.residents())

    @routes.delete("/v1/admin/adapters/{name}", response_model=AdapterState, responses=ERRORS,
                   summary="Unload an adapter and stop serving it (it stays in the store)")
    async def unload(name: str, _: Admin):
        in_store(name)
        async with srv.admin_lock:
            srv.disabled.add(name)
            await srv.unload(name)
        return adapter_state(name, await srv.residents())

    return routes
