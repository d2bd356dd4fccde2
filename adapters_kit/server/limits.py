"""Request size limits, checked before any work: body bytes, inputs per request, characters."""

from __future__ import annotations

import json

from .config import ServeConfig
from .errors import ServeError


def _too_large(limit: int) -> bytes:
    return json.dumps(ServeError(413, "body_too_large", f"the request body is larger than "
                                 f"{limit} bytes; send fewer or shorter inputs per request")
                      .body()).encode()


def _upload_too_large(limit: int) -> bytes:
    return json.dumps(ServeError(413, "upload_too_large", f"the upload is larger than {limit} "
                                 "bytes (job_max_bytes); send a smaller file, e.g. a sample of "
                                 "its rows").body()).encode()


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413 without being read whole.

    A declared Content-Length over the limit is refused at once; a chunked body is read up
    to the limit and refused as soon as it passes it. A body within the limit is handed on.
    `uploads`: path -> the limit of the file uploads POSTed there (a job's labelled file).
    """

    def __init__(self, app, limit: int, uploads: dict[str, int] | None = None) -> None:
        self.app = app
        self.default = limit
        self.uploads = uploads or {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        upload = scope.get("path") in self.uploads
        limit = self.uploads[scope["path"]] if upload else self.default
        refusal = (_upload_too_large if upload else _too_large)(limit)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    await self._refuse(send, refusal)
                    return
            except ValueError:
                pass  # the server's HTTP parser rejects a malformed length itself
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, refusal)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as servers do

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send, body: bytes) -> None:
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class JsonBodies:
    """ASGI middleware: a POST or PUT body sent without a JSON content type is read as JSON.

    `curl -d '{...}'` sends `application/x-www-form-urlencoded`, and a bare client may send no
    content type at all; every body this API takes is JSON, so both are taken as JSON rather
    than refused with a confusing schema error. Other content types are left as they are.
    """

    _AS_JSON = (b"", b"application/x-www-form-urlencoded")

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            given = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
            if given.split(b";")[0].strip().lower() in self._AS_JSON:
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


def _texts(item):
    if isinstance(item, str):
        yield item
    elif isinstance(item, dict):
        yield from (v for v in item.values() if isinstance(v, str))
    else:
        yield from (x for x in item if isinstance(x, str))


def bad_unicode(text: str) -> int | None:
    """The position of the first character that is not encodable text (a lone surrogate such
    as "\\ud800", which JSON can carry and no tokenizer reads), or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        return e.start


def input_chars(item) -> int:
    return sum(len(text) for text in _texts(item))


def check_inputs(inputs: list, config: ServeConfig) -> None:
    """413 for too many inputs, 422 for an empty list or an input with too many characters."""
    if not inputs:
        raise ServeError(422, "invalid_request", "inputs is empty; send at least one input")
    if len(inputs) > config.max_inputs:
        raise ServeError(413, "too_many_inputs", f"{len(inputs)} inputs in one request; at most "
                         f"{config.max_inputs} are accepted: split them over several requests")
    for i, item in enumerate(inputs):
        for text in _texts(item):
            at = bad_unicode(text)
            if at is not None:
                raise ServeError(422, "invalid_input", f"inputs[{i}] is not valid Unicode text: "
                                 f"character {at} is a lone surrogate ({text[at]!r}); send "
                                 "UTF-8 text")
        n = input_chars(item)
        if n > config.max_chars:
            raise ServeError(422, "input_too_long", f"inputs[{i}] has {n} characters; at most "
                             f"{config.max_chars} are accepted per input: shorten or split it")
