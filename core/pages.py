"""The security headers of the HTML pages the services serve (the dashboard, the API docs)."""

from __future__ import annotations

#: No inline script or style: everything a page runs is a file its app serves.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

#: What every page carries: that policy, no MIME sniffing, no framing, no referrer.
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
