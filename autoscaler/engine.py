"""The Docker Engine API at a version both sides speak, negotiated the way Docker's own clients do.

`GET /_ping` (unversioned) answers with the engine's newest API version in its `API-Version`
header; every request then goes to `/v<version>/...` with the lower of that and MAX_API, the
version the requests are written for. A client that pins a version newer than the engine gets
400 "client version ... is too new" on every call; so does one that keeps a version an upgraded
engine no longer accepts ("too old"). Such a 400 makes the client ask `/_ping` again and retry
the request once at the new version: the engine can be replaced under a running autoscaler.

`/_ping` and the versioned container list, start and stop (and on a swarm, reading and updating
the worker service) are what docker-socket-proxy lets through (docker/socket-proxy/haproxy.cfg).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx

log = logging.getLogger(__name__)

#: The Engine API reference the actuator's requests are written from.
MAX_API = "1.43"
#: When `/_ping` names no version. Docker's CLI assumes 1.24 there, because only engines older than
#: API 1.25 (2017) omit the header and the CLI still serves them. The actuator does not serve them:
#: a missing header means something in between dropped it and the engine behind is a current one;
#: 1.41 (Docker 20.10) is the oldest engine the actuator is tested against, and engines from 20.10
#: to 28.x all accept it. An engine that refuses it answers 400 with its own range, which the
#: health endpoint then shows.
FALLBACK_API = "1.41"

_REFUSED_VERSION = re.compile(r"client version \S+ is too (new|old)", re.IGNORECASE)
_MESSAGE_CHARS = 300


def parse_version(text: str) -> tuple[int, ...]:
    """Versions compare by number ("1.41" -> (1, 41)), so 1.9 < 1.41."""
    return tuple(int(part) for part in text.strip().split("."))


def negotiated(server: str | None) -> str:
    """The version to speak to an engine whose `/_ping` named `server` (None: no header)."""
    if not server:
        return FALLBACK_API
    try:
        return min(server.strip(), MAX_API, key=parse_version)
    except ValueError:  # a header we cannot read is as good as none
        return FALLBACK_API


class EngineError(Exception):
    """The engine answered a request with an error status; `message` is the engine's own words."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"Docker Engine API {method} {path}: {status} {message}")
        self.method = method
        self.path = path
        self.status = status
        self.message = message

    @classmethod
    def from_response(cls, response: httpx.Response) -> EngineError:
        return cls(response.request.method, response.request.url.path, response.status_code, _message(response))


def _message(response: httpx.Response) -> str:
    # The engine's errors are {"message": "..."}; a proxy's may be HTML. Either way: one short line.
    try:
        body = response.json()
        text = str(body.get("message", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        text = response.text
    return " ".join(text.split())[:_MESSAGE_CHARS] or response.reason_phrase


class Engine:
    """One engine behind `client` (its base_url is the engine or the socket proxy)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        #: None until the first request asks `/_ping`
        self.version: str | None = None
        self._negotiating = asyncio.Lock()

    async def negotiate(self, refused: str | None = None) -> str:
        """Ask `/_ping` which version to speak. `refused` is the version a request was just turned
        down at: the engine changed, so ask again even though a version is known."""
        async with self._negotiating:
            # Another request may have asked while this one waited: one ping serves both.
            if self.version is not None and self.version != refused:
                return self.version
            ping = await self.client.get("/_ping")
            # Docker's clients read the header whatever the status: a busy engine still names it.
            server = ping.headers.get("API-Version")
            version = negotiated(server)
            if version != self.version:
                log.info("Docker Engine API v%s (engine up to %s, autoscaler up to %s)", version, server, MAX_API)
            self.version = version
            return version

    async def request(self, method: str, path: str, accept: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """`path` without the version ("/containers/json"). Raises EngineError for a status that
        is neither 2xx nor in `accept`."""
        version = self.version or await self.negotiate()
        response = await self.client.request(method, f"/v{version}{path}", **kwargs)
        if response.status_code == 400 and _REFUSED_VERSION.search(_message(response)):
            # The engine did nothing with a request it refused by version: safe to send again.
            retry = await self.negotiate(refused=version)
            if retry != version:
                response = await self.client.request(method, f"/v{retry}{path}", **kwargs)
        if not (response.is_success or response.status_code in accept):
            raise EngineError.from_response(response)
        return response
