#!/usr/bin/env bash
# Starts the whole stack and shows it working: Docker Compose when a Docker engine answers,
# native processes (redis-server, PostgreSQL, nginx, supervisord) otherwise.
#
#   ./demo.sh [--docker|--native] [up]    start, wait until healthy, print the URLs
#   ./demo.sh status | down | logs [service] [-f] | scale N
#   ./demo.sh load | scenario NAME | bench [--growth | --capacity]
#   ./demo.sh k8s-render DIR              the Helm chart's manifests, with KEDA and without (no cluster)
#   ./demo.sh --swarm [up|down|status]    the stack on this engine's Docker Swarm (SWARM_STACK names it)
#   OFFLINE_IMAGES=1 ./demo.sh --docker   where no container registry answers: builds every image here
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/scripts/common.sh"
# shellcheck source=scripts/engine.sh
source "$ROOT/scripts/engine.sh"
# shellcheck source=scripts/images.sh
source "$ROOT/scripts/images.sh"
# shellcheck source=scripts/swarm.sh
source "$ROOT/scripts/swarm.sh"
cd "$ROOT"

mode=auto
args=()
for arg in "$@"; do
  case "$arg" in
    --docker) mode=docker ;;
    --native) mode=native ;;
    --swarm) mode=swarm ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"
command="${1:-up}"
[ $# -gt 0 ] && shift

# The Helm chart rendered to files: needs no stack, no .env and no cluster.
if [ "$command" = k8s-render ]; then
  # shellcheck source=scripts/helm.sh
  source "$ROOT/scripts/helm.sh"
  # shellcheck disable=SC2119
  ensure_venv  # pip fetches the pinned helm
  k8s_render "$@"
  exit 0
fi

ensure_env
# Both modes: Compose would pass a placeholder straight into the containers.
if [ "$command" = up ]; then check_secrets; fi
if [ "$mode" = auto ]; then
  # A running Compose project keeps its mode for every command; `up` prefers Docker when an engine answers.
  if docker_engine && { [ "$command" = up ] || [ -n "$(compose ps -aq 2>/dev/null)" ]; }; then
    mode=docker
  else
    mode=native
  fi
fi
native() { "$PY" -m native "$@"; }

# A variable as Compose resolves it for the stack (the shell over .env over the compose file's
# default): the value its containers get.
compose_value() { compose config 2>/dev/null | awk -v name="$1:" '$1 == name && !seen { seen = 1; gsub(/"/, "", $2); print $2 }'; }

# The published ports, for this script's messages and requests, and the load balancer's URL. No
# defaults here: native mode asks its launcher (.env and the shell over core.settings), Compose
# says what it published.
stack_ports() {
  local key value
  # Swarm publishes the ports its stack file names: the same variables over the same defaults.
  if [ "$mode" = native ] || [ "$mode" = swarm ]; then
    while IFS='=' read -r key value; do
      case "$key" in LB_PORT|GATEWAY_PORT|WORKER_PORT|MONITOR_PORT) printf -v "$key" '%s' "$value" ;; esac
    done < <(native ports)
  else
    LB_PORT="$(compose port nginx 80 2>/dev/null | sed 's/.*://')"
    GATEWAY_PORT="$(compose port nginx 8000 2>/dev/null | sed 's/.*://')"
    WORKER_PORT="$(compose port nginx 8001 2>/dev/null | sed 's/.*://')"
    MONITOR_PORT="$(compose port monitoring 8080 2>/dev/null | sed 's/.*://')"
    { [ -n "$LB_PORT" ] && [ -n "$MONITOR_PORT" ]; } || die "the Compose stack is not running; ./demo.sh --docker first"
  fi
  lb="http://localhost:$LB_PORT"
  [ "$LB_PORT" = 80 ] && lb="http://localhost"
  return 0
}

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

# Where the scenarios and the bench find a Compose stack: the published ports, and Redis and
# Postgres on the loopback ports Docker picked for them.
compose_targets() {
  local redis_port pg_port redis_pw pg_pw project
  redis_port="$(compose port redis 6379 | sed 's/.*://')"
  pg_port="$(compose port postgres 5432 | sed 's/.*://')"
  { [ -n "$redis_port" ] && [ -n "$pg_port" ]; } || die "the Compose stack is not running; ./demo.sh --docker first"
  stack_ports
  redis_pw="${REDIS_PASSWORD:-$(dotenv REDIS_PASSWORD)}"
  pg_pw="${POSTGRES_PASSWORD:-$(dotenv POSTGRES_PASSWORD)}"
  # The project Compose runs here: .env may name it (the shell's value is ignored, as compose() does).
  project="$(dotenv COMPOSE_PROJECT_NAME)"
  export STACK_ENGINE=compose COMPOSE_PROJECT_NAME="${project:-serverless-scaling}"
  export TARGET_URL="$lb" MONITOR_URL="http://localhost:$MONITOR_PORT"
  export REDIS_URL="redis://:$redis_pw@127.0.0.1:$redis_port/0"
  export DATABASE_URL="postgresql://serverless:$pg_pw@127.0.0.1:$pg_port/serverless"
}

# After a failed `up`: the last log lines of each service that exited with an error, restarts
# or is unhealthy (those still only created were waiting on one of them).
explain_unhealthy() {
  local service state code
  while read -r service state code; do
    case "$state" in exited:*) [ "$code" = 0 ] && continue ;; running:healthy|running:|created:*) continue ;; esac
    say "$service ($state, exit code $code); its last log lines:"
    compose logs --no-log-prefix --tail 15 "$service" 2>&1 | sed 's/^/    /'
    if compose logs "$service" 2>&1 | grep -q "password authentication failed"; then
      say "its data volume was made with other secrets than .env holds now; ./setup.sh removes this project's data"
    fi
  done < <(compose ps -a --format '{{.Service}} {{.State}}:{{.Health}} {{.ExitCode}}' 2>/dev/null | sort -u)
}

# The autoscaler scales within a pool of worker-service containers and cannot create one (see
# docker-socket-proxy in docker-compose.yml). With AUTOSCALE=on this makes MAX_WORKERS of them,
# those beyond the running ones created and not started. Every `up --scale N` (this script's
# too) removes the stopped ones beyond N, so this follows each of them.
worker_pool() {
  local max running
  [ "$(compose_value AUTOSCALE)" = on ] || return 0
  max="$(compose_value MAX_WORKERS)"
  running="$(compose ps -q --status running worker-service 2>/dev/null | wc -l)"
  [ "$running" -lt "$max" ] || return 0
  compose --progress quiet create --no-recreate --scale "worker-service=$max" worker-service
}

# Where no one chose OFFLINE_IMAGES, the official images are pulled; when they are missing and no
# registry answers, every image is built here instead, and .env remembers it.
registry_or_offline() {
  [ "$OFFLINE_IMAGES" = 0 ] && [ "$OFFLINE_IMAGES_CHOSEN" = 0 ] || return 0
  local image absent=0
  for image in $(compose config --images); do
    case "$image" in serverless-scaling-app:*) continue ;; esac
    docker image inspect "$image" >/dev/null 2>&1 || absent=1
  done
  [ "$absent" -eq 0 ] && return 0
  compose pull --quiet --ignore-buildable >/dev/null 2>&1 && return 0
  say "no container registry answered: building every image on this machine (OFFLINE_IMAGES=1, kept in .env)"
  OFFLINE_IMAGES=1
  offline_setting
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

if [ "$mode" = swarm ]; then
  docker_engine || { engine_hint >&2; die "no Docker engine answers 'docker info' (steps above)"; }
  compose_v2 || { engine_hint >&2; die "the Docker Compose v2 plugin is missing (it builds the app image; steps above)"; }
  # shellcheck disable=SC2119
  ensure_venv  # renders the stack file
  offline_setting
  case "$command" in
    up)
      registry_or_offline
      if [ "$OFFLINE_IMAGES" = 1 ]; then offline_images; fi
      swarm_up
      stack_ports
      sample_task
      print_urls ;;
    down) swarm_remove "$(swarm_stack)" ;;
    status) swarm_status; stack_ports; curl -fsS "$lb/api/status" || die "/api/status did not answer 200" ;;
    *) die "unknown command '$command' with --swarm (up, down, status)" ;;
  esac
elif [ "$mode" = native ]; then
  # Their optional arguments are extra packages, not this script's arguments.
  # shellcheck disable=SC2119
  ensure_system_packages
  # shellcheck disable=SC2119
  ensure_venv
  case "$command" in
    up) say "starting the native stack"; native up; stack_ports; sample_task; print_urls ;;
    down|status|logs|scale) native "$command" "$@" ;;
    # Headless Locust against the running stack; report in reports/<timestamp>/.
    load) "$PY" -m load_test "$@" ;;
    # One system-design concept, scripted and measured: burst, worker-crash, gateway-failover, rate-limit, cache.
    scenario) "$PY" -m load_test.scenarios "$@" ;;
    # The platform's own figures beside the machine's limits and a peer (arq).
    bench) ensure_system_packages wrk:wrk; "$PY" -m benchmarks "$@" ;;
    *) die "unknown command '$command' (up, down, status, logs, scale, load, scenario, bench, k8s-render)" ;;
  esac
else
  docker_engine || { engine_hint >&2; die "no Docker engine answers 'docker info' (steps above), or run ./demo.sh --native"; }
  compose_v2 || { engine_hint >&2; die "the Docker Compose v2 plugin is missing ('docker compose version' failed; steps above)"; }
  offline_setting
  case "$command" in
    up)
      registry_or_offline
      if [ "$OFFLINE_IMAGES" = 1 ]; then offline_images; fi
      say "starting the stack with Docker Compose"
      # Replica counts that a user or the autoscaler set survive a restart: `up` is given the
      # current counts, not the file's defaults.
      scale=()
      for service in worker-service api-gateway; do
        count="$(compose ps -q --status running "$service" 2>/dev/null | wc -l)"
        [ "$count" -gt 0 ] && scale+=(--scale "$service=$count")
      done
      # The autoscaler starts last: it may scale in a worker that `--wait` is still waiting for.
      { compose up -d --build --wait --scale autoscaler=0 "${scale[@]+"${scale[@]}"}" \
          && worker_pool \
          && compose up -d --wait autoscaler; } \
        || { explain_unhealthy; die "the stack did not become healthy; see ./demo.sh logs"; }
      stack_ports
      sample_task
      print_urls ;;
    down) compose down ;;
    status)
      compose ps
      stack_ports
      curl -fsS "$lb/api/status" || die "/api/status did not answer 200" ;;
    logs) compose logs --tail 100 "$@" ;;
    scale)
      [ $# -eq 1 ] || die "usage: ./demo.sh scale N"
      # --no-recreate: running replicas keep their in-flight tasks; only the count changes.
      compose up -d --no-recreate --scale "worker-service=$1" --wait
      worker_pool
      compose ps worker-service ;;
    # The load test runs in its own container (reports land in ./reports, owned by you).
    load) compose --profile load-test run --rm load-test ;;
    # From this machine against the published ports; Redis and Postgres through their loopback ports.
    scenario|bench)
      # shellcheck disable=SC2119
      ensure_venv
      [ "$command" = bench ] && ensure_system_packages wrk:wrk
      compose_targets
      if [ "$command" = scenario ]; then "$PY" -m load_test.scenarios "$@"; else "$PY" -m benchmarks --compose "$@"; fi ;;
    *) die "unknown command '$command' (up, down, status, logs, scale, load, scenario, bench, k8s-render)" ;;
  esac
fi
