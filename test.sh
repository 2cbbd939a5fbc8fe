#!/usr/bin/env bash
# The one test command: installs what the tests need, then lints, type-checks and runs pytest.
# The native tests start their own real redis-server, PostgreSQL and nginx on free ports; the
# Compose tests run their own Compose projects on a Docker engine. Where none answers (and this
# runs as root on Debian/Ubuntu) it installs docker.io and the checksum-verified Compose v2 and
# starts dockerd for the run, stopping it afterwards. OFFLINE_IMAGES (default 1: no registry is
# assumed) builds every image here; OFFLINE_IMAGES=0 pulls the official ones.
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/scripts/common.sh"
# shellcheck source=scripts/engine.sh
source "$ROOT/scripts/engine.sh"
# shellcheck source=scripts/images.sh
source "$ROOT/scripts/images.sh"
cd "$ROOT"

# Lint the scripts with shellcheck; Debian's chromium drives the dashboard's browser tests (never `playwright install`).
ensure_system_packages shellcheck:shellcheck chromium:chromium promtool:prometheus
ensure_venv dev

say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
say "mypy"
"$VENV/bin/mypy" .

ensure_engine
trap stop_engine EXIT
export OFFLINE_IMAGES="${OFFLINE_IMAGES:-1}"
case "$OFFLINE_IMAGES" in
  1) offline_images ;;
  0) ;;
  *) die "OFFLINE_IMAGES must be 0 or 1, got '$OFFLINE_IMAGES'" ;;
esac

# tests/test_helm.py renders the chart with the pinned helm (scripts/helm.sh).
# shellcheck source=scripts/helm.sh
source "$ROOT/scripts/helm.sh" && ensure_helm
say "pytest"
"$PY" -m pytest "$@"
