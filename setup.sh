#!/usr/bin/env bash
# Cleans everything this project created: stops the stack and deletes its data (volumes).
# Nothing outside this project is touched; no system-wide prune.
#
#   ./setup.sh          stop, delete data and logs (keeps .env, .venv)
#   ./setup.sh --all    also delete .env (secrets) and .venv
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/scripts/common.sh"
cd "$ROOT"

all=0
[ "${1:-}" = --all ] && all=1

if docker_engine; then
  # This project only (its compose file names it): never a system-wide prune, and a
  # COMPOSE_PROJECT_NAME or COMPOSE_FILE in the shell must not point it at another project.
  say "removing the Compose project (containers, network, volumes)"
  env -u COMPOSE_PROJECT_NAME -u COMPOSE_FILE docker compose -f "$ROOT/docker-compose.yml" down -v --remove-orphans || true
  # The swarm stack of ./demo.sh --swarm (SWARM_STACK), its volumes by their stack label only.
  # shellcheck source=scripts/swarm.sh
  source "$ROOT/scripts/swarm.sh"
  swarm_remove "$(swarm_stack)" --volumes
fi

# Where native mode keeps its data: the shell's STATE_DIR, else .env's (as native mode reads it).
state="${STATE_DIR:-$(dotenv STATE_DIR)}"
state="${state%[\"\']}"; state="${state#[\"\']}"
state="$(realpath -m -- "${state:-$ROOT/var}")"
case "$ROOT/" in "$state"/*) die "STATE_DIR $state holds this checkout; refusing to delete it" ;; esac
[ "$state" != / ] || die "STATE_DIR is /; refusing to delete it"
if [ -x "$PY" ] && [ -d "$state" ]; then
  say "stopping the native stack"
  "$PY" -m native down || true
fi
# Anything left from a supervisord that was killed: our processes name our state folder or venv.
pkill -f -- "$state/" 2>/dev/null || true
pkill -f -- "$VENV/bin/python -m (api_gateway|worker_service|monitoring|native)" 2>/dev/null || true

# PostgreSQL's data outside the state folder (native/postgres.py outside_dir: named by a hash of
# the state folder's path), where the postgres account could not enter the state folder. Only
# that folder: never where a pgdata link happens to point.
outside="/var/lib/serverless-scaling/$(printf '%s' "$state" | sha256sum | cut -c1-12)"
if [ -d "$outside" ]; then
  say "deleting $outside"
  rm -rf -- "$outside"
fi
say "deleting $state"
# var/swarm holds the rendered stack files (with the secrets), wherever STATE_DIR points.
rm -rf -- "$state" "$ROOT/reports" "$ROOT/var/swarm"

if [ "$all" -eq 1 ]; then
  say "deleting .env and .venv"
  rm -rf "$ROOT/.env" "$VENV"
fi
say "clean"
