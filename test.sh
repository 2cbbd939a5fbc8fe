#!/usr/bin/env bash
# The one test command: installs what the tests need, then lints, type-checks and runs pytest.
# The integration tests start their own real redis-server, PostgreSQL and nginx on free ports.
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/scripts/common.sh"
cd "$ROOT"

# Lint the scripts with shellcheck; Debian's chromium drives the dashboard's browser tests (never `playwright install`).
ensure_system_packages shellcheck:shellcheck chromium:chromium
ensure_venv dev

say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
say "mypy"
"$VENV/bin/mypy" .
say "pytest"
"$PY" -m pytest "$@"
