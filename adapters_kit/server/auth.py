"""Who is calling: the API key of a request, its tenant, and whether it holds the admin key.

    Caller, Admin = callers(tenants)   # route parameters: `tenant: Caller`, `_: Admin`
"""

# No `from __future__ import annotations`: FastAPI reads the dependency signatures at run time.

from typing import Annotated

from fastapi import Depends, Request

from .errors import ServeError
from .tenants import Tenant, Tenants


def callers(tenants: Tenants) -> tuple[object, object]:
    """The dependencies (Caller, Admin) that give a route its caller's tenant: 401 without a
    known key, and for Admin 403 without the admin key."""

    def caller(request: Request) -> Tenant:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        tenant = tenants.identify(key)
        if tenant is None:
            raise ServeError(401, "unauthorized", "missing or unknown API key; send "
                             "'Authorization: Bearer KEY' with a key from the keys file",
                             headers={"WWW-Authenticate": "Bearer"})
        return tenant

    Caller = Annotated[Tenant, Depends(caller)]

    def admin_caller(tenant: Caller) -> Tenant:
        if not tenant.admin:
            raise ServeError(403, "forbidden", "admin routes need the admin key")
        return tenant

    return Caller, Annotated[Tenant, Depends(admin_caller)]
