// ReDoc over the gateway's own schema. A file, not an inline script: the page's CSP allows
// scripts from this origin only.
"use strict";
Redoc.init("/openapi.json", { hideDownloadButton: false }, document.getElementById("redoc"));
