"""How the autoscaler changes the number of workers: one small interface, one implementation
per engine. `current()` counts the workers it has asked for (running or starting, not
draining); `scale_to(n, busy)` gets there, removing the least busy workers first.

Scale-in is always drain-aware: a removed worker gets SIGTERM, stops claiming, finishes its
in-flight tasks within its grace period and exits; nothing it holds is retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx

from autoscaler.engine import Engine, EngineError
from native.supervisor import Supervisor, running, stopped

log = logging.getLogger(__name__)

WORKER_SERVICE = "worker-service"


class Actuator(Protocol):
    name: str

    async def current(self) -> int: ...

    async def scale_to(self, count: int, busy: Mapping[str, int]) -> list[str]:
        """Reach `count` workers; `busy` maps a worker's replica id to its in-flight tasks.
        Returns what it changed, in words."""
        ...


def _least_busy_first(names: list[str], busy: Mapping[str, int]) -> list[str]:
    # Idle first; among equals the newest (highest slot / last created) goes first.
    return sorted(names, key=lambda n: (busy.get(n, 0), -names.index(n)))


class NativeActuator:
    """supervisord's XML-RPC API: MAX_WORKERS slots (worker-service-1..N), some started."""

    name = "native"

    def __init__(self, socket_path: str) -> None:
        self.supervisor = Supervisor(Path(socket_path))
        self.prefix = f"{WORKER_SERVICE}-"

    async def _states(self) -> dict[str, str]:
        # The XML-RPC client blocks: keep it off the event loop.
        return await asyncio.to_thread(self.supervisor.states)

    async def current(self) -> int:
        return len(running(await self._states(), self.prefix))

    async def scale_to(self, count: int, busy: Mapping[str, int]) -> list[str]:
        states = await self._states()
        live = running(states, self.prefix)
        done: list[str] = []
        if count > len(live):
            for name in stopped(states, self.prefix)[: count - len(live)]:
                await asyncio.to_thread(self.supervisor.start, name, False)
                done.append(f"started {name}")
        elif count < len(live):
            for name in _least_busy_first(live, busy)[: len(live) - count]:
                # wait=False: SIGTERM now, the worker drains on its own; supervisord keeps a
                # SIGKILL only for a worker still there after stopwaitsecs (past its grace).
                await asyncio.to_thread(self.supervisor.stop, name, False)
                done.append(f"draining {name} ({busy.get(name, 0)} in flight)")
        return done


class RecommendActuator:
    """AUTOSCALE=recommend: counts live workers, changes nothing."""

    name = "recommend"

    def __init__(self, live_workers: int = 0) -> None:
        self.live_workers = live_workers

    async def current(self) -> int:
        return self.live_workers

    async def scale_to(self, count: int, busy: Mapping[str, int]) -> list[str]:
        return [f"would scale to {count} (recommend mode: nothing changed)"]


class ComposeActuator:
    """The Docker Engine API, reached through a socket proxy that allows only `/_ping` and the
    container endpoints (list, inspect, create, start, stop, delete), at the API version the
    engine negotiates. Scales `worker-service` the way `docker compose up --scale` does: new
    replicas are copies of a running one, with the Compose labels and the service's network
    alias, numbered after the highest."""

    name = "compose"

    def __init__(self, client: httpx.AsyncClient, project: str, stop_timeout: int = 35) -> None:
        self.engine = Engine(client)
        self.project = project
        self.stop_timeout = stop_timeout
        self._draining: set[str] = set()

    def _filters(self) -> str:
        labels = [f"com.docker.compose.project={self.project}", f"com.docker.compose.service={WORKER_SERVICE}"]
        return json.dumps({"label": labels})

    async def _replicas(self) -> list[dict[str, Any]]:
        response = await self.engine.request("GET", "/containers/json", params={"filters": self._filters()})
        replicas: list[dict[str, Any]] = response.json()
        return [c for c in replicas if c["Id"] not in self._draining]

    async def current(self) -> int:
        return len(await self._replicas())

    async def scale_to(self, count: int, busy: Mapping[str, int]) -> list[str]:
        replicas = await self._replicas()
        done: list[str] = []
        if count > len(replicas):
            if not replicas:
                raise RuntimeError("no running worker-service replica to copy; run `docker compose up` first")
            template = await self._inspect(replicas[0]["Id"])
            numbers = [int(c["Labels"].get("com.docker.compose.container-number", "0")) for c in replicas]
            for number in range(max(numbers) + 1, max(numbers) + 1 + count - len(replicas)):
                done.append(await self._create_and_start(template, number))
        elif count < len(replicas):
            # The container's hostname is its short id: that is what its heartbeat's replica id holds.
            names = [c["Id"][:12] for c in replicas]
            for short in _least_busy_first(names, busy)[: len(replicas) - count]:
                container = next(c for c in replicas if c["Id"].startswith(short))
                self._draining.add(container["Id"])
                asyncio.get_running_loop().create_task(self._drain_and_remove(container["Id"]))
                done.append(f"draining {container['Names'][0].lstrip('/')} ({busy.get(short, 0)} in flight)")
        return done

    async def _inspect(self, container_id: str) -> dict[str, Any]:
        response = await self.engine.request("GET", f"/containers/{container_id}/json")
        inspected: dict[str, Any] = response.json()
        return inspected

    async def _create_and_start(self, template: dict[str, Any], number: int) -> str:
        config = template["Config"]
        name = f"{self.project}-{WORKER_SERVICE}-{number}"
        networks = {net: {"Aliases": [WORKER_SERVICE]} for net in template["NetworkSettings"]["Networks"]}
        body = {
            "Image": config["Image"],
            "Cmd": config["Cmd"],
            "Env": config["Env"],
            "Labels": {**config["Labels"], "com.docker.compose.container-number": str(number)},
            "Healthcheck": config.get("Healthcheck"),
            "StopSignal": config.get("StopSignal") or "SIGTERM",
            "HostConfig": template["HostConfig"],
            "NetworkingConfig": {"EndpointsConfig": networks},
        }
        created = await self.engine.request("POST", "/containers/create", params={"name": name}, json=body)
        container_id = created.json()["Id"]
        await self.engine.request("POST", f"/containers/{container_id}/start")
        return f"started {name}"

    async def _drain_and_remove(self, container_id: str) -> None:
        try:
            # SIGTERM, then SIGKILL only after stop_timeout (past the worker's drain grace).
            # 304: it had stopped already.
            await self.engine.request(
                "POST",
                f"/containers/{container_id}/stop",
                accept=(304,),
                params={"t": self.stop_timeout},
                timeout=self.stop_timeout + 10,
            )
            await self.engine.request("DELETE", f"/containers/{container_id}")
        except (httpx.HTTPError, EngineError) as exc:
            log.warning("could not remove worker container %s: %s", container_id[:12], exc)
        finally:
            self._draining.discard(container_id)
