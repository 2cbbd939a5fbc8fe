#!/usr/bin/env bash
# Starts the whole stack and shows it working: Docker Compose when a Docker engine answers,
# native processes (redis-server, PostgreSQL, nginx, supervisord) otherwise.
#
#   ./demo.sh [--docker|--native] [up]    start, wait until healthy, print the URLs
#   ./demo.sh status | down | logs [service] [-f] | scale N
#   ./demo.sh load | scenario NAME | bench
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/scripts/common.sh"
cd "$ROOT"

mode=auto
args=()
for arg in "$@"; do
  case "$arg" in
    --docker) mode=docker ;;
    --native) mode=native ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"
command="${1:-up}"
[ $# -gt 0 ] && shift

if [ "$mode" = auto ]; then
  if docker_engine; then mode=docker; else mode=native; fi
fi

ensure_env
# Ports set in .env apply to this script's messages too; the shell's environment wins, as in Compose.
while IFS='=' read -r key value; do
  case "$key" in
    LB_PORT|GATEWAY_PORT|WORKER_PORT|MONITOR_PORT) [ -n "${!key:-}" ] || export "$key=$value" ;;
  esac
done < <(grep -E '^[A-Z_]+=' .env || true)
LB_PORT="${LB_PORT:-80}"
GATEWAY_PORT="${GATEWAY_PORT:-8000}"
WORKER_PORT="${WORKER_PORT:-8001}"
MONITOR_PORT="${MONITOR_PORT:-8080}"

lb="http://localhost:$LB_PORT"
[ "$LB_PORT" = 80 ] && lb="http://localhost"

native() { "$PY" -m native "$@"; }

# This checkout's project only: a COMPOSE_FILE or COMPOSE_PROJECT_NAME in the shell must not redirect it.
compose() { env -u COMPOSE_PROJECT_NAME -u COMPOSE_FILE docker compose -f "$ROOT/docker-compose.yml" "$@"; }

print_urls() {
  cat <<URLS

Serverless Scaling is up ($mode mode).
  Load balancer (nginx)   $lb
  API gateway             http://localhost:$GATEWAY_PORT
  Worker status           http://localhost:$WORKER_PORT/worker/status
  Dashboard               http://localhost:$MONITOR_PORT

Try:
  curl $lb/api/status
  curl -X POST $lb/api/task -H 'Content-Type: application/json' -d '{"type": "echo", "data": {"hello": "world"}}'
  curl $lb/api/metrics
  ./demo.sh scenario burst   (the autoscaler at work)      ./demo.sh load      ./demo.sh status
  ./demo.sh logs worker-service      ./demo.sh down      AUTOSCALE=off ./demo.sh, then ./demo.sh scale 4
URLS
}

sample_task() {
  say "submitting a sample task"
  local reply id status=""
  reply=$(curl -fsS -X POST "$lb/api/task" -H 'Content-Type: application/json' \
    -d '{"type": "echo", "data": {"message": "hello from demo.sh"}}') || die "POST /api/task failed"
  echo "    $reply"
  id=$(printf '%s' "$reply" | sed -n 's/.*"task_id":"\([^"]*\)".*/\1/p')
  for _ in $(seq 1 50); do
    reply=$(curl -fsS "$lb/api/task/$id") || true
    status=$(printf '%s' "$reply" | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p')
    case "$status" in completed|failed) break ;; esac
    sleep 0.2
  done
  echo "    task $id: ${status:-unknown}"
  [ "$status" = completed ] || die "the sample task did not complete; see ./demo.sh logs"
}

if [ "$mode" = native ]; then
  # Their optional arguments are extra packages, not this script's arguments.
  # shellcheck disable=SC2119
  ensure_system_packages
  # shellcheck disable=SC2119
  ensure_venv
  case "$command" in
    up) say "starting the native stack"; native up; sample_task; print_urls ;;
    down|status|logs|scale) native "$command" "$@" ;;
    # Headless Locust against the running stack; report in reports/<timestamp>/.
    load) "$PY" -m load_test "$@" ;;
    # One system-design concept, scripted and measured: burst, worker-crash, gateway-failover, rate-limit, cache.
    scenario) "$PY" -m load_test.scenarios "$@" ;;
    # The platform's own figures beside the machine's limits and a peer (arq).
    bench) "$PY" -m benchmarks "$@" ;;
    *) die "unknown command '$command' (up, down, status, logs, scale, load, scenario, bench)" ;;
  esac
else
  docker_engine || die "no Docker engine answers 'docker info'; start one, or run ./demo.sh --native"
  docker compose version >/dev/null 2>&1 || die "the Docker Compose v2 plugin is missing ('docker compose version' failed)"
  case "$command" in
    up)
      say "starting the stack with Docker Compose"
      # The load test writes here through a bind mount as the image's non-root user (uid 10001),
      # which owns nothing on the host; a folder Docker created would be root's.
      mkdir -p reports && chmod 0777 reports
      compose up -d --build --wait
      sample_task
      print_urls ;;
    down) compose down ;;
    status)
      compose ps
      curl -fsS "$lb/api/status" || die "/api/status did not answer 200" ;;
    logs) compose logs --tail 100 "$@" ;;
    scale)
      [ $# -eq 1 ] || die "usage: ./demo.sh scale N"
      # --no-recreate: running replicas keep their in-flight tasks; only the count changes.
      compose up -d --no-recreate --scale "worker-service=$1" --wait
      compose ps worker-service ;;
    load)
      mkdir -p reports && chmod 0777 reports
      compose --profile load-test run --rm load-test ;;
    scenario|bench) die "'$command' runs in native mode only: ./demo.sh --native $command" ;;
    *) die "unknown command '$command' (up, down, status, logs, scale, load, scenario, bench)" ;;
  esac
fi
