"""Errors the server answers with: each carries its HTTP status, a stable code and a message."""

from __future__ import annotations


class ServeError(Exception):
    """Answered as `{"error": {"code": code, "message": message}}` with `status`."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def unknown_task() -> ServeError:
    # One body for "no such task" and "another tenant's task", byte for byte, whatever the
    # name asked for: nothing about other tenants' tasks leaks.
    return ServeError(404, "unknown_task", "this task does not exist or this API key may not "
                      "use it; GET /v1/tasks lists the tasks this key may use")


def deadline_exceeded(deadline_s: float) -> ServeError:
    return ServeError(504, "deadline_exceeded", f"the request was not answered within its "
                      f"deadline of {deadline_s:g} s (the server is busy); retry later or send "
                      "fewer inputs per request")
