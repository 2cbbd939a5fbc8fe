"""HTTP plumbing every FastAPI service shares: JSON errors, the body limit, replica header, serving."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from http import HTTPStatus
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import heap
from core.hosts import HostCheck
from core.prom import install_metrics
from core.settings import Settings, get_settings

M = TypeVar("M", bound=BaseModel)
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2


class DependencyUnavailable(Exception):
    """Raised (from the driver's error) when a backing service does not answer."""

    def __init__(self, dependency: str) -> None:
        super().__init__(dependency)
        self.dependency = dependency


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str
    detail: Any


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses, so clients (and schemathesis) know their shape."""
    return {code: {"model": ErrorBody, "description": HTTPStatus(code).phrase} for code in codes}


def error_body(status: int, detail: Any, error: str | None = None) -> dict[str, Any]:
    code = error or HTTPStatus(status).phrase.lower().replace(" ", "_")
    return {"error": code, "detail": detail}


def json_error(
    status: int, detail: Any, error: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, detail, error), status_code=status, headers=headers)


def unavailable(dependency: str) -> JSONResponse:
    return json_error(
        503,
        f"{dependency} is unavailable; retry shortly",
        error=f"{dependency}_unavailable",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def parse_body(model: type[M], raw: bytes) -> M:
    """Validate a JSON body straight from its bytes (one pass in pydantic-core, no dict in between),
    with FastAPI's 422 shape on failure. For hot routes; declare the body with json_body_schema()."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `openapi_extra` that documents a body the route reads itself (parse_body).

    Nested models are written out in place: their `$defs` would not resolve from the document."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as JSON; a client's mistake is a 4xx, a missing dependency a 503."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not even text (bad UTF-8): malformed JSON, so 422.
            return json_error(422, "request body is not valid JSON", error="validation_error")
        return json_error(exc.status_code, exc.detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and why, never the input itself: it may not even be encodable (lone surrogates,
        # integers over 64 bits), and echoing it back would turn a 422 into a 500.
        errors = [{"loc": e.get("loc"), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return json_error(422, jsonable_encoder(errors), error="validation_error")

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        return unavailable("redis")

    @app.exception_handler(RedisOutOfMemoryError)
    async def _redis_full(_: Request, exc: Exception) -> JSONResponse:
        # Redis at its maxmemory (noeviction) refuses writes: a full store, not a server fault.
        log.warning("redis refused a write for memory: %s", exc)
        return json_error(
            503,
            "the task store is full; retry shortly",
            error="redis_full",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(DependencyUnavailable)
    async def _dependency_down(_: Request, exc: DependencyUnavailable) -> JSONResponse:
        log.warning("%s unavailable: %s", exc.dependency, exc.__cause__)
        return unavailable(exc.dependency)


class _BodyTooLarge(Exception):
    pass


#: Methods whose body a route reads; a body of theirs must say it is JSON.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_json(content_type: bytes) -> bool:
    return content_type.partition(b";")[0].strip().lower() == b"application/json"


class EdgeMiddleware:
    """Pure ASGI (no per-request task hop): caps request bodies, takes only JSON ones, answers HEAD
    as GET, and names the replica that answered."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, replica_id: str) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.replica_header = (b"x-served-by", replica_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            await self._head(scope, receive, send)
            return
        started = False
        exceeded = False

        async def send_with_header(message: Message) -> None:
            nonlocal started
            if exceeded:
                # The app saw its body reader fail (FastAPI answers 400); the truth is 413.
                if not started:
                    started = True
                    await self._too_large(send)
                return
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), self.replica_header]
            await send(message)

        length: int | None = None
        chunked = False
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True  # a chunked body: count what arrives
            elif name == b"content-type":
                content_type = value
        if (chunked or length) and scope["method"] in _BODY_METHODS and not _is_json(content_type):
            # A browser sends text/plain or a form from any page without a preflight; taking such a
            # body as JSON would let every web page submit tasks through a visitor's browser.
            await self._refuse(
                send, 415, "request body must be JSON (Content-Type: application/json)", "unsupported_media_type"
            )
            return
        if length is not None and not chunked:
            if length > self.max_body_bytes:
                await self._too_large(send)
                return
            # The server reads exactly that many bytes: nothing to count (the hot path).
            await self.app(scope, receive, send_with_header)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send_with_header)
        except _BodyTooLarge:
            if not started:
                started = True
                await self._too_large(send)

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        """HEAD is GET without the body (RFC 9110 9.3.2); FastAPI routes declare GET only (405).

        The app answers a GET (in a copy of the scope: the server reads the method from its own to
        leave the body out) and the response ends with its headers, which ends a stream (SSE) too."""
        as_get = {**scope, "method": "GET"}
        done = False

        async def headers_only(message: Message) -> None:
            nonlocal done
            if done or message["type"] != "http.response.start":
                return
            await send(message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            done = True

        async def receive_until_done() -> Message:
            return {"type": "http.disconnect"} if done else await receive()

        try:
            await self(as_get, receive_until_done, headers_only)
        finally:
            if "route" in as_get:  # the latency metric's label: the route the GET matched
                scope["route"] = as_get["route"]

    async def _too_large(self, send: Send) -> None:
        await self._refuse(send, 413, f"request body over {self.max_body_bytes} bytes", "payload_too_large")

    async def _refuse(self, send: Send, status: int, detail: str, error: str) -> None:
        response = json_error(status, detail, error=error, headers={"x-served-by": self.replica_header[1].decode()})
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def build_app(title: str, service: str, lifespan: Lifespan) -> FastAPI:
    """Every service's app: JSON errors, the body limit, JSON-only bodies, HEAD, the replica header,
    Prometheus `/metrics`; the schema is at /openapi.json.

    Routes declare their return type and FastAPI serializes it with pydantic, straight to JSON
    bytes; there is no default response class, as one would turn that path off. FastAPI's docs
    pages are off (their assets come from a CDN, their init script is inline): the gateway serves
    its own, from vendored assets (api_gateway/routes/docs.py)."""
    settings = get_settings()

    @asynccontextmanager
    async def started(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app):
            heap.settle()  # what start-up built lives as long as the process
            yield

    app = FastAPI(
        title=title,
        version="1.0.0",
        lifespan=started,
        docs_url=None,
        redoc_url=None,
        # Metrics go out through prometheus_client (/metrics); FastAPI's OpenTelemetry hooks would
        # only ask the global providers, on every request, whether anyone listens.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_edge(app, settings)
    install_metrics(app, settings, service)
    app.add_middleware(HostCheck, allowed=settings.allowed_hosts)  # outermost: refused before any work
    return app


def install_edge(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.max_body_bytes, replica_id=settings.replica_id)
    install_error_handlers(app)


def serve(factory: str, settings: Settings) -> None:
    """Run an app factory under uvicorn, on a unix socket (native) or host:port (Compose)."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn re-raises the SIGTERM it handled once it has shut down; with the default handler that
    # kills the process (exit -15). A drained, clean stop should say so: exit 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    options: dict[str, Any] = {"uds": settings.uds} if settings.uds else {"host": settings.host, "port": settings.port}
    uvicorn.run(
        factory,
        factory=True,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        # The worker drains in-flight tasks in its lifespan; give that room before uvicorn gives up.
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
        **options,
    )
