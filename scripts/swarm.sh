# ./demo.sh --swarm: the stack on this engine's Docker Swarm. The stack file is rendered from
# docker-compose.yml (native/swarm.py) into var/swarm/<stack>.yml and deployed with
# `docker stack deploy`. The stack's name is SWARM_STACK (the shell, else .env), by default
# serverless-scaling; every service, network and volume of it is named <stack>_<name> and carries
# the label com.docker.stack.namespace=<stack>.
# shellcheck shell=bash

SWARM_DEADLINE="${SWARM_DEADLINE:-300}"

swarm_stack() {
  local stack="${SWARM_STACK:-$(dotenv SWARM_STACK)}"
  echo "${stack:-serverless-scaling}"
}

swarm_active() { [ "$(docker info -f '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ]; }

# Every service of the stack converged: each long-running one has all its replicas running (a task
# with a healthcheck counts as running only once healthy), and the one-shot migrate has completed.
swarm_converged() {
  local stack="$1" name replicas
  while read -r name replicas; do
    case "$name" in
      "${stack}_migrate") docker service ps --filter desired-state=shutdown --format '{{.CurrentState}}' "$name" \
                            | grep -q '^Complete' || return 1 ;;
      *) [ "${replicas%%/*}" = "${replicas#*/}" ] || return 1 ;;
    esac
  done < <(docker service ls --filter "label=com.docker.stack.namespace=$stack" --format '{{.Name}} {{.Replicas}}')
  [ -n "$(docker service ls -q --filter "label=com.docker.stack.namespace=$stack")" ]
}

# After a failed deploy: the tasks that did not run, with swarm's reason, and their last log lines.
swarm_explain() {
  local stack="$1" service
  for service in $(docker service ls --filter "label=com.docker.stack.namespace=$stack" --format '{{.Name}}'); do
    docker service ps --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' "$service" | grep -v ' Running ' | head -3
    docker service logs --raw --tail 10 "$service" 2>&1 | sed 's/^/    /'
  done >&2
}

swarm_up() {
  local stack file deadline out
  stack="$(swarm_stack)"
  if ! swarm_active; then
    say "initialising a single-node swarm on this engine (advertising 127.0.0.1)"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null || die "docker swarm init failed"
  fi
  # The app image, built as Compose builds it; one node uses local images by name, no registry.
  say "building the app image"
  compose build --quiet migrate || die "building the app image failed"
  file="$("$PY" -m native.swarm "$stack")" || die "rendering the stack file failed"
  say "deploying the stack $stack ($file)"
  out="$(docker stack deploy --resolve-image never --prune -c "$file" "$stack" 2>&1)" || { echo "$out" >&2; die "docker stack deploy failed"; }
  deadline=$((SECONDS + SWARM_DEADLINE))
  until swarm_converged "$stack"; do
    [ $SECONDS -lt $deadline ] || { swarm_explain "$stack"; die "the stack $stack did not converge within $SWARM_DEADLINE s"; }
    sleep 1
  done
  say "every service of $stack is running and healthy"
}

# Removes the stack and waits until its containers and networks are gone; with --volumes, its
# volumes too (only those labelled with this stack's name).
swarm_remove() {
  local stack="$1" volumes="${2:-}" deadline=$((SECONDS + 120)) label="label=com.docker.stack.namespace=$1"
  swarm_active || return 0
  if [ -n "$(docker service ls -q --filter "$label")" ]; then
    say "removing the swarm stack $stack"
    # `docker stack rm` removes the services, then the networks, and fails on a network that a
    # task still stopping (a worker draining, up to its stop_grace_period) is attached to: such a
    # network is removed below, once the stack's containers are gone.
    docker stack rm "$stack" >/dev/null 2>&1 || true
  fi
  while [ -n "$(docker ps -aq --filter "$label")$(docker network ls -q --filter "$label")" ]; do
    [ $SECONDS -lt $deadline ] || die "the stack $stack's containers or networks are still there after 120 s"
    if [ -z "$(docker ps -aq --filter "$label")" ]; then
      docker network ls -q --filter "$label" | xargs -r docker network rm >/dev/null 2>&1 || true
    fi
    sleep 0.5
  done
  if [ "$volumes" = --volumes ]; then
    docker volume ls -q --filter "label=com.docker.stack.namespace=$stack" | xargs -r docker volume rm >/dev/null
  fi
}

swarm_status() {
  local stack
  stack="$(swarm_stack)"
  docker stack services "$stack"
}
