"""The Docker Swarm stack file, derived from docker-compose.yml: `python -m native.swarm [STACK]`.

`docker stack deploy` reads the Compose format but refuses `profiles` and `depends_on` conditions
and ignores `build`, `pull_policy`, `restart`, `container_name` and `security_opt`; it places
replicas, restarts and endpoints from `deploy:`. Rather than a second hand-kept copy, this renders
docker-compose.yml (plus docker-compose.offline.yml under OFFLINE_IMAGES=1) into var/swarm/<stack>.yml,
interpolated as Compose does (native/compose.py), with those fields dropped or moved into `deploy:`.
tests/test_swarm.py checks that the rendered file keeps every service, variable, port and volume.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from load_test.stack import compose_files
from native import compose
from native.plan import ROOT

#: Where the stack files go, one per stack name: <stack>.yml.
OUTPUT_DIR = ROOT / "var" / "swarm"

#: Fields a swarm service does not take: dropped (`restart` becomes deploy.restart_policy).
#: security_opt is ignored by `docker stack deploy` (swarm services have no such option).
DROPPED = ("build", "pull_policy", "container_name", "depends_on", "profiles", "restart", "security_opt")

#: Compose's restart policy as swarm's restart_policy condition. The one-shot (migrate, "no")
#: runs again after a failure until it succeeds: nothing starts Postgres before it.
RESTART_CONDITIONS = {"no": "on-failure", "on-failure": "on-failure", "always": "any", "unless-stopped": "any"}

#: The image every Python service runs (docker-compose.yml's x-app).
APP_IMAGE = "serverless-scaling-app:"

#: How long each service waits at start for Redis, Postgres and the schema (core/connections.py
#: wait_for_dependencies): in a swarm nothing orders the services' start.
STARTUP_WAIT_SECONDS = "120"

HEADER = """\
# Rendered by `python -m native.swarm` from docker-compose.yml: do not edit; edit that file
# and render again (./demo.sh --swarm does). Deployed with `docker stack deploy`.
#
# Every service uses `endpoint_mode: dnsrr` and host-mode published ports: swarm's virtual IPs and
# its ingress routing mesh need IPVS in the kernel, which this sandbox (and many containers and
# VMs) lacks. With dnsrr a service name resolves to its tasks' addresses, which nginx already
# re-resolves every 5 s (nginx/compose.conf), and a host-mode port is bound by the one task on
# this node. Swarm cannot bind a published port to one address: BIND_ADDRESS does not apply, and
# the ports below listen on every interface of the node. Redis and Postgres, published on
# loopback only by Compose, are not published at all (`docker exec` reaches them).
#
# Start-up order: swarm has no depends_on; each app service waits up to STARTUP_WAIT_SECONDS for
# Redis, Postgres and the schema, and logs what it waits for; migrate retries until it succeeds.
"""


def variables(stack: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Compose's interpolation inputs: the shell over .env, the stack named as Compose would be."""
    found = {**compose.read_dotenv(ROOT / ".env"), **(os.environ if environ is None else environ)}
    return found | {"COMPOSE_PROJECT_NAME": stack}


def merge(base: Any, overlay: Any) -> Any:
    """Compose's merge of a later file: mappings merged key by key, anything else replaced."""
    if not (isinstance(base, dict) and isinstance(overlay, dict)):
        return overlay
    merged = dict(base)
    for key, value in overlay.items():
        merged[key] = merge(base[key], value) if key in base else value
    return merged


def _ports(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Host-mode ports (no routing mesh; see HEADER). Those Compose lets Docker pick on loopback
    (Redis, Postgres) are left out: swarm would publish them on every interface."""
    return [
        {"target": target, "published": int(host), "protocol": "tcp", "mode": "host"}
        for host, target in compose.container_ports(service)
        if host
    ]


def _volumes(service: dict[str, Any]) -> list[str]:
    """Bind mounts made absolute: `docker stack deploy` resolves relative ones against the stack
    file's folder (var/swarm/), not the checkout's."""
    out = []
    for spec in service.get("volumes") or []:
        source, _, rest = str(spec).partition(":")
        out.append(f"{(ROOT / source).resolve()}:{rest}" if source.startswith(".") else str(spec))
    return out


def autoscaler_env(stack: str) -> dict[str, str]:
    """What the autoscaler's Compose environment becomes in a swarm: the swarm actuator
    (autoscaler/swarm.py) scales the service <stack>_worker-service."""
    return {"AUTOSCALE_ENGINE": "swarm", "SWARM_STACK": stack}


def service_spec(name: str, service: dict[str, Any], stack: str) -> dict[str, Any]:
    spec = {k: v for k, v in service.items() if k not in DROPPED and k not in ("ports", "volumes")}
    deploy = dict(spec.get("deploy") or {})
    deploy["replicas"] = compose.replicas(service)
    deploy["endpoint_mode"] = "dnsrr"
    deploy["restart_policy"] = {"condition": RESTART_CONDITIONS[str(service.get("restart", "always"))], "delay": "2s"}
    spec["deploy"] = deploy
    if ports := _ports(service):
        spec["ports"] = ports
    if "volumes" in service:
        spec["volumes"] = _volumes(service)
    if str(service.get("image", "")).startswith(APP_IMAGE):
        env = compose.environment(service)
        env["STARTUP_WAIT_SECONDS"] = STARTUP_WAIT_SECONDS
        if name == "autoscaler":
            env |= autoscaler_env(stack)
        spec["environment"] = env
    return spec


def render(stack: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    values = variables(stack, environ)
    document: dict[str, Any] = {}
    for path in compose_files(values):
        document = merge(document, compose.load(path))
    document = compose.interpolate(document, values)
    services = {
        name: service_spec(name, service, stack)
        for name, service in document["services"].items()
        if not service.get("profiles")
    }
    # `version` picks the stack loader's newest schema (3.9: init, sysctls, cap_drop in swarm).
    return {
        "version": "3.9",
        "services": services,
        "networks": document.get("networks") or {},
        "volumes": document.get("volumes") or {},
    }


def write(stack: str, output: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    output = output or OUTPUT_DIR / f"{stack}.yml"
    output.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(render(stack, environ), sort_keys=False, default_flow_style=False, width=120)
    # The secrets are in it (interpolated): readable by its owner only, as .env is.
    output.touch(mode=0o600)
    output.chmod(0o600)
    output.write_text(HEADER + body)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m native.swarm", description=__doc__.splitlines()[0])
    parser.add_argument("stack", nargs="?", default="serverless-scaling", help="the stack's name")
    parser.add_argument("--output", type=Path, help="default: var/swarm/<stack>.yml")
    args = parser.parse_args(argv)
    try:
        print(write(args.stack, args.output))
    except compose.InterpolationError as exc:
        raise SystemExit(f"cannot render the stack file: {exc}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
