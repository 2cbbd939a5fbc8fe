"""The Swarm actuator: the replica count of the stack's worker service, through the socket proxy.

`docker stack deploy` names the worker service `<stack>_worker-service` (SWARM_STACK names the
stack). `current()` reads `Spec.Mode.Replicated.Replicas` from `GET /services/{name}`: the tasks
asked for, running or starting; tasks that are shutting down no longer count. `scale_to` sends
`POST /services/{name}/update?version={Version.Index}` with the whole `Spec` as it was read and
only the replica count changed, as `docker service scale` does: the Engine API replaces the
service's spec with the body (a field left out is reset), and the version makes the write
conditional. `TaskTemplate.ForceUpdate` goes back unchanged, so a scale never restarts a task.

A write at a version that has moved on (the orchestrator bumps it while a rolling update
progresses, an operator ran `docker service update`) is refused with "update out of sequence":
the actuator reads the service again and retries once; a second refusal fails the tick, and the
next tick starts afresh. Engines answer it with 500 (swarmkit's error passes through as
"rpc error: code = Unknown"); a 409 means the same.

Scale-in drains: the swarm orchestrator picks the surplus tasks (not the least busy: `busy` goes
unused), sends each its stop signal (SIGTERM) and waits the service's `stop_grace_period` (from
docker-compose.yml, above SHUTDOWN_GRACE_SECONDS) before SIGKILL, in which the worker stops
claiming and finishes what it holds. Nothing else may set the same service's replicas: each
would undo the other's count.

docker/socket-proxy/haproxy.cfg lets through exactly these two requests for
`<stack>_worker-service` (and `/_ping` for the version): no other service, task, node or secret.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypedDict

import httpx

from autoscaler.actuators import WORKER_SERVICE
from autoscaler.engine import Engine, EngineError
from core.settings import Settings

log = logging.getLogger(__name__)

#: swarmkit's words when the `version` of an update is not the service's current one.
OUT_OF_SEQUENCE = "update out of sequence"


class ObjectVersion(TypedDict):
    Index: int


class Service(TypedDict):
    """A swarm service as `GET /services/{id}` shows it, as far as the actuator reads it. `Spec`
    stays a plain mapping: it goes back to the engine whole, fields this code never names included."""

    ID: str
    Version: ObjectVersion
    Spec: dict[str, Any]


class NotReplicated(RuntimeError):
    """The worker service runs in another mode (global, a job): it has no replica count to set."""


def service_name(stack: str) -> str:
    return f"{stack}_{WORKER_SERVICE}"


def replicas(service: Service) -> int:
    mode = service["Spec"].get("Mode") or {}
    if "Replicated" not in mode:
        raise NotReplicated(f"service {service['Spec'].get('Name')} is not replicated (mode {sorted(mode)})")
    return int(mode["Replicated"].get("Replicas") or 0)


def out_of_sequence(exc: EngineError) -> bool:
    return exc.status == 409 or OUT_OF_SEQUENCE in exc.message


class SwarmActuator:
    name = "swarm"

    def __init__(self, client: httpx.AsyncClient, stack: str) -> None:
        self.engine = Engine(client)
        self.service = service_name(stack)
        self.path = f"/services/{self.service}"

    @classmethod
    def from_settings(cls, client: httpx.AsyncClient, settings: Settings) -> SwarmActuator:
        return cls(client, settings.swarm_stack)

    async def _inspect(self) -> Service:
        response = await self.engine.request("GET", self.path)
        service: Service = response.json()
        return service

    async def current(self) -> int:
        return replicas(await self._inspect())

    async def scale_to(self, count: int, busy: Mapping[str, int]) -> list[str]:
        try:
            return await self._update(count)
        except EngineError as exc:
            if not out_of_sequence(exc):
                raise
            log.info("service %s changed while scaling it (%s): reading it again", self.service, exc.message)
            return await self._update(count)

    async def _update(self, count: int) -> list[str]:
        service = await self._inspect()
        before = replicas(service)
        spec = service["Spec"]
        spec["Mode"]["Replicated"]["Replicas"] = count
        params = {"version": service["Version"]["Index"]}
        response = await self.engine.request("POST", f"{self.path}/update", params=params, json=spec)
        # {"Warnings": [...]} when the engine has something to say (an image it could not pin), else {}.
        warnings = [str(w) for w in response.json().get("Warnings") or []]
        for warning in warnings:
            log.warning("service %s update: %s", self.service, warning)
        return [f"set service {self.service} from {before} to {count} replicas", *warnings]
