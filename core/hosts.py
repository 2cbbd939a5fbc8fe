"""The Host names a service answers to: a web page that rebinds its own DNS name to 127.0.0.1 reaches
our ports with its own name in `Host`, and is refused here before any route reads a byte of data."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: Matches any Host (for a deployment behind a proxy of its own that checks names itself).
ANY = "*"


def host_name(header: str) -> str | None:
    """The name in a Host header, lowercased, without its port; None when it is not one.

    "[::1]:8080" -> "[::1]", "LOCALHOST.:80" -> "localhost", "::1" (unbracketed) -> "::1".
    """
    value = header.strip().lower()
    if value.startswith("["):
        name, bracket, port = value.partition("]")
        name += bracket
        port = port.removeprefix(":") if port.startswith(":") else port
    elif value.count(":") > 1:
        name, port = value, ""  # a bare IPv6 address: no port can be told apart
    else:
        name, _, port = value.partition(":")
    name = name.removesuffix(".")
    if not name or (port and not port.isdigit()):
        return None
    return name


def parse_allowed(setting: str) -> frozenset[str]:
    """ALLOWED_HOSTS ("localhost,127.0.0.1,[::1]") as the set of names it allows."""
    names = {item.strip().lower().removesuffix(".") for item in setting.split(",")}
    return frozenset(name for name in names if name)


class HostCheck:
    """Pure ASGI: 421 JSON for a Host this service does not serve, 400 for a request with none.

    421 Misdirected Request says what happened (this server does not answer for that name) and
    tells it apart from a malformed request; HTTP/1.1 requires a Host, so its absence is a 400.
    Any port is accepted: ports differ between modes and are published as the operator likes.
    """

    def __init__(self, app: ASGIApp, *, allowed: str) -> None:
        self.app = app
        self.allowed = parse_allowed(allowed)
        self.any = ANY in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any:
            await self.app(scope, receive, send)
            return
        raw = next((value for name, value in scope["headers"] if name == b"host"), None)
        if raw is None:
            status, error, detail = 400, "host_required", "a Host header is required"
        elif host_name(raw.decode("latin-1")) in self.allowed:
            await self.app(scope, receive, send)
            return
        else:
            status, error, detail = 421, "unknown_host", "this server does not answer for that Host; see ALLOWED_HOSTS"
        # core.http's error shape, built here: core.http installs this middleware and imports this module.
        await JSONResponse({"error": error, "detail": detail}, status_code=status)(scope, receive, send)
