# Images for machines where no container registry answers (OFFLINE_IMAGES=1): a Debian base made
# with debootstrap, stand-ins for the official redis, postgres, nginx and socket-proxy images built
# from Debian's packages (docker/offline/), and the wheels the app image installs (docker/wheels/).
# Each is rebuilt only when its inputs change: images carry a label with the hash of their folder
# and base, the wheels a stamp with the hash of pyproject.toml.
# shellcheck shell=bash

OFFLINE_PREFIX=serverless-scaling-offline
OFFLINE_BASE="$OFFLINE_PREFIX/debian:bookworm"
OFFLINE_LABEL=org.serverless-scaling.inputs
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# name:tag of each stand-in; docker-compose.offline.yml names the same tags.
OFFLINE_STANDINS=(python:3.11 redis:7 postgres:15 nginx:1 socket-proxy:1)

offline_base() {
  docker image inspect "$OFFLINE_BASE" >/dev/null 2>&1 && return 0
  [ "$(id -u)" -eq 0 ] || die "building the Debian base image needs root (debootstrap); run: sudo OFFLINE_IMAGES=1 ./demo.sh --docker"
  command -v debootstrap >/dev/null || apt_install debootstrap
  local dir
  dir="$(mktemp -d)"
  say "making the Debian base image with debootstrap (about 30 s, once)"
  debootstrap --variant=minbase bookworm "$dir" "$DEBIAN_MIRROR" >"$dir.log" 2>&1 \
    || { tail -20 "$dir.log" >&2; rm -rf "$dir" "$dir.log"; die "debootstrap failed (log above)"; }
  tar -C "$dir" -c . | docker import - "$OFFLINE_BASE" >/dev/null || die "docker import of the Debian base failed"
  rm -rf "$dir" "$dir.log"
}

# The hash of a folder's files (names and contents) and of the base image it builds on.
inputs_hash() {
  local folder="$1" base_id
  base_id="$(docker image inspect -f '{{.Id}}' "$OFFLINE_BASE")"
  { (cd "$folder" && find . -type f -print0 | sort -z | xargs -0 sha256sum); echo "$base_id"; } | sha256sum | cut -c1-16
}

offline_standin() {
  local name="${1%%:*}" tag="$1" folder="$ROOT/docker/offline/${1%%:*}" want have
  want="$(inputs_hash "$folder")"
  have="$(docker image inspect -f "{{index .Config.Labels \"$OFFLINE_LABEL\"}}" "$OFFLINE_PREFIX/$tag" 2>/dev/null || true)"
  [ "$want" = "$have" ] && return 0
  say "building the $name stand-in image ($OFFLINE_PREFIX/$tag)"
  local log
  log="$(mktemp)"
  docker build --build-arg "BASE_IMAGE=$OFFLINE_BASE" --label "$OFFLINE_LABEL=$want" \
    -t "$OFFLINE_PREFIX/$tag" "$folder" >"$log" 2>&1 || { tail -30 "$log" >&2; rm -f "$log"; die "building the $name stand-in failed (log above)"; }
  rm -f "$log"
}

# The project's pinned dependencies as wheels for the image's Python, markers dropped: the host's
# Python is not the image's (Debian's 3.11.2 needs async-timeout, a newer one does not).
offline_wheels() {
  local dir="$ROOT/docker/wheels" stamp want
  stamp="$dir/.stamp"
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  say "downloading the app image's wheels into docker/wheels"
  rm -f "$dir"/*.whl
  python3 - "$ROOT/pyproject.toml" >"$dir/.requirements" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(r.split(";")[0] for r in project["project"]["dependencies"] + project["build-system"]["requires"]))
PY
  python3 -m pip download -q --disable-pip-version-check --only-binary=:all: \
    -d "$dir" -r "$dir/.requirements" >"$dir/.log" 2>&1 || { cat "$dir/.log" >&2; die "pip download of the app image's wheels failed (log above)"; }
  rm -f "$dir/.requirements" "$dir/.log"
  echo "$want" >"$stamp"
}

offline_images() {
  docker_engine || die "no Docker engine answers 'docker info'"
  offline_base
  local standin
  for standin in "${OFFLINE_STANDINS[@]}"; do
    offline_standin "$standin"
  done
  offline_wheels
}
