"""What the tests' stand-in API servers (Docker Engine, Kubernetes) answer with."""

from __future__ import annotations

import http.server
import json
from collections.abc import Mapping
from typing import Any


def reply(
    handler: http.server.BaseHTTPRequestHandler, status: int, body: Any, headers: Mapping[str, str] | None = None
) -> None:
    """Answer `body` (JSON; a str as it is, text/plain unless `headers` say otherwise) with `status`."""
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    handler.send_response(status)
    content_type = "text/plain" if isinstance(body, str) else "application/json"
    for name, value in {"Content-Type": content_type, **(headers or {})}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)
